"""The EmoCAST sampler node: prepared conditions -> video frames (IMAGE [T, H, W, 3], 0..1) and their
latents (LATENT, frames as a batch, see `emocast_core.video_latents`); `run_sampler` is the part that the
ComfyUI-solver sampler (`comfy_sampling.py`) shares."""
from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy.cli_args import LatentPreviewMethod, args
from comfy_api.latest import io
from PIL import Image

from ..emocast_core.generate import for_silent_speech
from ..emocast_core.guidance import GuidanceConfig
from ..emocast_core.pipeline import (
    ClipSampler,
    EmoCASTPipeline,
    GenerationCancelled,
    GenerationConfig,
    ProgressEvent,
    ReferenceConditions,
    clip_starts,
)
from ..emocast_core.scheduling import SCHEDULER_NAMES, make_scheduler
from ..emocast_core.validation import NODE_OPTIONS, SamplingSettings, check_sampling, worded_for
from ..emocast_core.video_latents import check_video_latents
from .loaders import load_to_device
from .types import AudioFeaturesType, EmoCASTModel, Emotion, Reference

PREVIEW_EVERY_STEPS = 5  # decoded step previews, only when ComfyUI runs with a --preview-method


# Inputs both sampler nodes take (this one and the ComfyUI-solver one in comfy_sampling.py). Each node
# lists them in its own order: saved workflows store widget values by position.

def video_inputs() -> list:
    return [
        EmoCASTModel.Input("model", tooltip="From EmoCAST Model Loader."),
        Reference.Input("reference", tooltip="From EmoCAST Reference Encoder."),
        Emotion.Input("emotion", tooltip="From EmoCAST Emotion Encode."),
        AudioFeaturesType.Input("audio_features", tooltip="From EmoCAST Audio Features."),
    ]


def seed_input():
    return io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                        tooltip="Noise seed; the same seed gives the same video on every device.")


def cfg_input():
    return io.Float.Input("cfg", default=3.5, min=0.0, max=20.0, step=0.1, round=0.01,
                          tooltip="Joint classifier-free guidance scale (upstream 3.5).")


def overlap_input():
    return io.Int.Input("overlap", default=0, min=0, max=15,
                        tooltip="Frames shared and cross-faded by consecutive clips (0 = upstream). Smooths "
                                "clip borders at the cost of more clips.")


def separate_guidance_inputs() -> list:
    return [
        io.Float.Input("audio_cfg", default=0.0, min=0.0, max=20.0, step=0.1, round=0.01,
                       tooltip="Separate guidance towards the audio (lip sync). 0 = off (joint cfg only)."),
        io.Float.Input("emotion_cfg", default=0.0, min=0.0, max=20.0, step=0.1, round=0.01,
                       tooltip="Separate guidance towards the emotion text. 0 = off (joint cfg only)."),
    ]


def region_and_motion_inputs() -> list:
    return [
        io.Float.Input("pose_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                       tooltip="Strength of the audio's effect on head and body motion."),
        io.Float.Input("face_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                       tooltip="Strength of the audio's effect on the face (expression)."),
        io.Float.Input("lip_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                       tooltip="Strength of the audio's effect on the lips (lip sync)."),
        io.Int.Input("motion_frames", default=2, min=1, max=8,
                     tooltip="Previous frames each clip continues from (upstream 2)."),
    ]


def compile_input():
    return io.Boolean.Input("compile", default=False, optional=True,
                            tooltip="Compile the denoising step with torch.compile: the first clip is slower, "
                                    "later ones faster. Needs a working torch.compile toolchain (a C++ "
                                    "compiler, and Triton on NVIDIA GPUs).")


def colour_anchor_input():
    return io.Boolean.Input("colour_anchor", default=False, optional=True,
                            tooltip="Hold every frame to the reference portrait's colours, so that a colour error "
                                    "is not carried from clip to clip (off = upstream; the demo workflows turn it "
                                    "on). Acts on the images; the latent output stays the network's own.")


def audio_off_in_silence_input():
    return io.Boolean.Input("audio_off_in_silence", default=False, optional=True,
                            tooltip="Frames whose audio is silent run without the audio's influence, as a silent "
                                    "file does (off = upstream; the demo workflows turn it on: the demo model "
                                    "dissolves the face during pauses).")


def motion_reference_mix_input():
    return io.Float.Input("motion_reference_mix", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                          tooltip="Share of the reference portrait mixed into the frames each clip continues from, "
                                  "so a shape gone wrong (brows drifting, hair lost) is not carried from clip to "
                                  "clip (0 = upstream; the demo workflows use 0.25; 1 starts every clip from the "
                                  "portrait).")


def video_outputs() -> list:
    return [
        io.Image.Output(display_name="images",
                        tooltip="The video frames [T, H, W, 3]: to EmoCAST Video Combine, Create Video, an "
                                "upscaler or EmoCAST Paste Back."),
        io.Float.Output(display_name="fps", tooltip="The frame rate of the video, for the video node."),
        io.Latent.Output(display_name="latent",
                         tooltip="The video's latents, frames as a batch (unscaled SD1.5 VAE latents): to "
                                 "EmoCAST Decode (or VAE Decode with the same VAE), or back into a sampler."),
    ]


class EmoCASTSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTSampler",
            display_name="EmoCAST Sampler",
            category="EmoCAST/sampling",
            description="Generates the talking-portrait video clip by clip (16 frames continuing the last 2 of the "
                        "previous clip), as long as the audio features.",
            inputs=[
                *video_inputs(),
                seed_input(),
                io.Int.Input("steps", default=40, min=1, max=200, tooltip="Denoising steps per clip (upstream 40)."),
                cfg_input(),
                io.Combo.Input("solver", options=list(SCHEDULER_NAMES), default="ddim",
                               tooltip="Sampler; all share the model's v-prediction zero-SNR schedule. Upstream: ddim "
                                       "at 40 steps; ddim_matched at 13 steps gives the same picture at a third of the work."),
                overlap_input(),
                *separate_guidance_inputs(),
                io.Float.Input("guidance_fraction", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Guidance is applied in this first fraction of the steps only (1 = all)."),
                *region_and_motion_inputs(),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional video latent to start from (e.g. the LATENT of an earlier EmoCAST "
                                        "run on the same audio), for a second pass with denoise below 1. Frame i "
                                        "starts from latent frame i."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01, optional=True,
                               tooltip="How much of the schedule re-runs from the latent, as KSampler's denoise: 1 "
                                       "ignores the latent; lower keeps more of it. Below 1 needs a latent."),
                compile_input(),
                colour_anchor_input(),
                audio_off_in_silence_input(),
                motion_reference_mix_input(),
            ],
            outputs=video_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, reference, emotion, audio_features, seed, steps, cfg, solver, overlap, audio_cfg,
                emotion_cfg, guidance_fraction, pose_weight, face_weight, lip_weight, motion_frames, latent=None,
                denoise=1.0, compile=False, colour_anchor=False, audio_off_in_silence=False,
                motion_reference_mix=0.0) -> io.NodeOutput:
        clip_length = audio_features.clip_length
        with worded_for(NODE_OPTIONS):
            check_sampling(SamplingSettings(
                steps=steps, cfg=cfg, audio_cfg=audio_cfg or None, emotion_cfg=emotion_cfg or None,
                cfg_fraction=guidance_fraction, sampler=solver, seed=seed, overlap=overlap, clip_length=clip_length,
                region_weights=(pose_weight, face_weight, lip_weight), motion_reference_mix=motion_reference_mix,
            ))
        config = GenerationConfig(
            num_inference_steps=steps,
            guidance=GuidanceConfig(scale=cfg, audio_scale=audio_cfg or None, emotion_scale=emotion_cfg or None,
                                    active_fraction=guidance_fraction),
            clip_length=clip_length,
            num_motion_frames=motion_frames,
            overlap=overlap,
            region_scales=(pose_weight, face_weight, lip_weight),
            sampler=solver,
            seed=seed,
            compile=compile,
            denoise=denoise,
            colour_anchor=colour_anchor,
            audio_off_in_silence=audio_off_in_silence,
            motion_reference_mix=motion_reference_mix,
        )
        if denoise < 1.0 and latent is None:
            raise ValueError(f"denoise {denoise} needs a latent to start from: connect one to 'latent' or set denoise to 1")
        # At denoise 1 a latent is ignored (the first step is pure noise at zero SNR), as in KSampler.
        start_latents = latent_samples(model, reference, audio_features, latent) if denoise < 1.0 else None
        if audio_features.silent:
            config = for_silent_speech(config)
        images, latents = run_sampler(cls.hidden.unique_id, model, reference, emotion, audio_features, config,
                                      start_latents, num_steps_per_clip=steps)
        return io.NodeOutput(images, float(audio_features.fps), {"samples": latents})


def latent_samples(model, reference, audio_features, latent) -> torch.Tensor:
    """The frames of a LATENT input, refused in one line when they cannot start this video."""
    samples = latent["samples"] if isinstance(latent, dict) and "samples" in latent else latent
    factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    check_video_latents(samples, audio_features.num_frames, model.net.config.unet.in_channels,
                        [size // factor for size in reference.pixel_values.shape[-2:]], factor)
    return samples


def run_sampler(node_id, model, reference, emotion, audio_features, config: GenerationConfig, start_latents,
                num_steps_per_clip: int, clip_sampler: ClipSampler | None = None, latent_previewer=None):
    """Generate the video on ComfyUI's devices with its progress bar, previews and interrupt.

    Returns (IMAGE frames [T, H, W, 3], latents [T, 4, h, w]). With a `latent_previewer` (ComfyUI's,
    for samplers that report their clean estimate) every step shows it; otherwise, with previews on,
    every PREVIEW_EVERY_STEPS-th step is decoded by the VAE. The last frame of each clip is always shown.
    """
    num_frames = audio_features.num_frames
    load_to_device(model.net_patcher, model.vae_patcher)
    device, dtype = model.net_patcher.load_device, model.dtype
    emotion_conditions = emotion.conditions(num_frames, audio_features.fps)
    emotion_conditions.tokens = emotion_conditions.tokens.to(device, dtype)
    emotion_conditions.uncond_tokens = emotion_conditions.uncond_tokens.to(device, dtype)
    pipeline = EmoCASTPipeline(model.net, model.vae, make_scheduler(config.sampler))

    num_clips = len(clip_starts(num_frames, config.clip_length, config.overlap))
    progress_bar = comfy.utils.ProgressBar(num_clips * num_steps_per_clip, node_id=node_id)
    step_previews = args.preview_method != LatentPreviewMethod.NoPreviews

    def on_step(event: ProgressEvent):
        preview = None
        if event.preview is not None:
            preview = _preview(event.preview)
        elif step_previews and latent_previewer is not None and event.denoised is not None:
            preview = latent_previewer.decode_latent_to_preview_image("JPEG", event.denoised[:, :, 0])
        progress_bar.update_absolute(event.clip_index * event.num_steps + event.step + 1, preview=preview)

    frames, latents = [], []
    try:
        for clip in pipeline.generate_clips(
            ReferenceConditions.from_prepared(reference), emotion_conditions,
            audio_features.features, num_frames, config,
            progress=on_step, should_cancel=mm.processing_interrupted,
            preview_every=PREVIEW_EVERY_STEPS if step_previews and latent_previewer is None else 0,
            start_latents=start_latents, clip_sampler=clip_sampler, silent_frames=audio_features.silent_frames,
        ):
            frames.append(clip.frames.to(mm.intermediate_device()))
            latents.append(clip.latents.to(mm.intermediate_device()))
            # The last frame of every finished clip is a free preview.
            progress_bar.update_absolute(progress_bar.current, preview=_preview(clip.frames[-1]))
    except GenerationCancelled:
        mm.throw_exception_if_processing_interrupted()
        raise mm.InterruptProcessingException()
    return torch.cat(frames), torch.cat(latents)


def _preview(frame: torch.Tensor):
    array = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    image = Image.fromarray(array)
    # ComfyUI fits a preview into max_size x max_size, enlarging small ones: a 64 px video would show as
    # 512 x 512. A limit no larger than the frame keeps the preview (and the size the editor shows) true.
    return ("JPEG", image, min(args.preview_size, max(image.size)))


SAMPLER_NODES = [EmoCASTSampler]
