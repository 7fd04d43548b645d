"""The EmoCAST sampler node: prepared conditions -> video frames (IMAGE [T, H, W, 3], 0..1)."""
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
    EmoCASTPipeline,
    GenerationCancelled,
    GenerationConfig,
    ReferenceConditions,
    clip_starts,
)
from ..emocast_core.scheduling import SCHEDULER_NAMES, make_scheduler
from ..emocast_core.validation import NODE_OPTIONS, SamplingSettings, check_sampling, worded_for
from .loaders import load_to_device
from .types import AudioFeaturesType, EmoCASTModel, Emotion, Reference

PREVIEW_EVERY_STEPS = 5  # decoded step previews, only when ComfyUI runs with a --preview-method


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
                EmoCASTModel.Input("model", tooltip="From EmoCAST Model Loader."),
                Reference.Input("reference", tooltip="From EmoCAST Reference Encoder."),
                Emotion.Input("emotion", tooltip="From EmoCAST Emotion Encode."),
                AudioFeaturesType.Input("audio_features", tooltip="From EmoCAST Audio Features."),
                io.Int.Input("seed", default=42, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video on every device."),
                io.Int.Input("steps", default=40, min=1, max=200, tooltip="Denoising steps per clip (upstream 40)."),
                io.Float.Input("cfg", default=3.5, min=0.0, max=20.0, step=0.1, round=0.01,
                               tooltip="Joint classifier-free guidance scale (upstream 3.5)."),
                io.Combo.Input("solver", options=list(SCHEDULER_NAMES), default="ddim",
                               tooltip="Sampler; all share the model's v-prediction zero-SNR schedule. Upstream: ddim."),
                io.Int.Input("overlap", default=0, min=0, max=15,
                             tooltip="Frames shared and cross-faded by consecutive clips (0 = upstream). Smooths "
                                     "clip borders at the cost of more clips."),
                io.Float.Input("audio_cfg", default=0.0, min=0.0, max=20.0, step=0.1, round=0.01,
                               tooltip="Separate guidance towards the audio (lip sync). 0 = off (joint cfg only)."),
                io.Float.Input("emotion_cfg", default=0.0, min=0.0, max=20.0, step=0.1, round=0.01,
                               tooltip="Separate guidance towards the emotion text. 0 = off (joint cfg only)."),
                io.Float.Input("guidance_fraction", default=1.0, min=0.0, max=1.0, step=0.05,
                               tooltip="Guidance is applied in this first fraction of the steps only (1 = all)."),
                io.Float.Input("pose_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Strength of the audio's effect on head and body motion."),
                io.Float.Input("face_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Strength of the audio's effect on the face (expression)."),
                io.Float.Input("lip_weight", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="Strength of the audio's effect on the lips (lip sync)."),
                io.Int.Input("motion_frames", default=2, min=1, max=8,
                             tooltip="Previous frames each clip continues from (upstream 2)."),
            ],
            outputs=[
                io.Image.Output(display_name="images",
                                tooltip="The video frames [T, H, W, 3]: to EmoCAST Video Combine, Create Video, an "
                                        "upscaler or EmoCAST Paste Back."),
                io.Float.Output(display_name="fps", tooltip="The frame rate of the video, for the video node."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, reference, emotion, audio_features, seed, steps, cfg, solver, overlap, audio_cfg,
                emotion_cfg, guidance_fraction, pose_weight, face_weight, lip_weight, motion_frames) -> io.NodeOutput:
        clip_length = audio_features.clip_length
        with worded_for(NODE_OPTIONS):
            check_sampling(SamplingSettings(
                steps=steps, cfg=cfg, audio_cfg=audio_cfg or None, emotion_cfg=emotion_cfg or None,
                cfg_fraction=guidance_fraction, sampler=solver, seed=seed, overlap=overlap, clip_length=clip_length,
                region_weights=(pose_weight, face_weight, lip_weight),
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
        )
        if audio_features.silent:
            config = for_silent_speech(config)
        num_frames = audio_features.num_frames
        load_to_device(model.net_patcher, model.vae_patcher)
        device, dtype = model.net_patcher.load_device, model.dtype
        emotion_conditions = emotion.conditions(num_frames, audio_features.fps)
        emotion_conditions.tokens = emotion_conditions.tokens.to(device, dtype)
        emotion_conditions.uncond_tokens = emotion_conditions.uncond_tokens.to(device, dtype)
        pipeline = EmoCASTPipeline(model.net, model.vae, make_scheduler(solver))

        num_clips = len(clip_starts(num_frames, clip_length, overlap))
        progress_bar = comfy.utils.ProgressBar(num_clips * steps, node_id=cls.hidden.unique_id)
        step_previews = args.preview_method != LatentPreviewMethod.NoPreviews

        def on_step(event):
            preview = _preview(event.preview) if event.preview is not None else None
            progress_bar.update_absolute(event.clip_index * event.num_steps + event.step + 1, preview=preview)

        frames = []
        try:
            for clip in pipeline.generate(
                ReferenceConditions.from_prepared(reference), emotion_conditions,
                audio_features.features, num_frames, config,
                progress=on_step, should_cancel=mm.processing_interrupted,
                preview_every=PREVIEW_EVERY_STEPS if step_previews else 0,
            ):
                frames.append(clip.to(mm.intermediate_device()))
                # The last frame of every finished clip is a free preview.
                progress_bar.update_absolute(progress_bar.current, preview=_preview(clip[-1]))
        except GenerationCancelled:
            mm.throw_exception_if_processing_interrupted()
            raise mm.InterruptProcessingException()
        return io.NodeOutput(torch.cat(frames), float(audio_features.fps))


def _preview(frame: torch.Tensor):
    array = (frame.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    image = Image.fromarray(array)
    # ComfyUI fits a preview into max_size x max_size, enlarging small ones: a 64 px video would show as
    # 512 x 512. A limit no larger than the frame keeps the preview (and the size the editor shows) true.
    return ("JPEG", image, min(args.preview_size, max(image.size)))


SAMPLER_NODES = [EmoCASTSampler]
