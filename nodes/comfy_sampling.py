"""ComfyUI's own samplers and schedulers on EmoCAST.

EmoCAST predicts v on a zero-terminal-SNR schedule. ComfyUI's samplers (k-diffusion: `KSamplerSelect`,
`SamplerDPMPP_2M_SDE`, ...) work on sigma-scaled latents and want a model that returns the clean latents
(x0). `EmoCASTModelSampling` is ComfyUI's discrete v-prediction model sampling on EmoCAST's noise levels,
and `ComfyClipSampler` runs each clip's sampling loop (the pipeline's `ClipSampler` hook) with a SAMPLER
over SIGMAS, wrapping the guided v-prediction into the x0-denoiser those samplers call. `EmoCAST Sigmas`
makes SIGMAS with any of ComfyUI's schedulers without needing a MODEL.
"""
from __future__ import annotations

import comfy.latent_formats
import comfy.model_management as mm
import comfy.samplers
import latent_preview
import torch
from comfy.model_sampling import V_PREDICTION, ModelSamplingDiscrete
from comfy_api.latest import io

from ..emocast_core.generate import for_silent_speech
from ..emocast_core.guidance import GuidanceConfig
from ..emocast_core.pipeline import ClipDenoising, GenerationConfig
from ..emocast_core.scheduling import noise_levels
from ..emocast_core.validation import NODE_OPTIONS, SamplingSettings, check_sampling, worded_for
from .sampler import (
    cfg_input,
    audio_off_in_silence_input,
    colour_anchor_input,
    compile_input,
    latent_samples,
    motion_reference_mix_input,
    overlap_input,
    region_and_motion_inputs,
    run_sampler,
    seed_input,
    separate_guidance_inputs,
    video_inputs,
    video_outputs,
)


class EmoCASTModelSampling(ModelSamplingDiscrete, V_PREDICTION):
    """ComfyUI's discrete v-prediction model sampling on EmoCAST's 1000 noise levels (`noise_levels`:
    linear betas 0.00085..0.012 rescaled to zero terminal SNR, the last sigma capped at ~4096)."""

    def __init__(self):
        # The base class builds ComfyUI's own SD schedule ("linear" there is diffusers' scaled_linear);
        # EmoCAST's levels replace it.
        super().__init__(model_config=None, zsnr=False)
        self.set_sigmas(noise_levels())


class _GuidedDenoiser:
    """One clip as ComfyUI's samplers see a model: `(x, sigma) -> x0`. It also answers the two ways
    those samplers look up the model sampling (`model.inner_model.model_sampling` and
    `model.model_patcher.get_model_object("model_sampling")`)."""

    def __init__(self, clip: ClipDenoising, model_sampling: EmoCASTModelSampling):
        self.clip = clip
        self.model_sampling = model_sampling
        self.inner_model = self
        self.model_patcher = self

    def get_model_object(self, name: str):
        if name != "model_sampling":
            raise AttributeError(f"the EmoCAST denoiser has no {name!r} for a sampler to use")
        return self.model_sampling

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, model_options=None, seed=None) -> torch.Tensor:
        self.clip.check_cancel()
        sampling = self.model_sampling
        model_input = sampling.calculate_input(sigma, x).to(self.clip.noise.dtype)
        prediction, raw = self.clip.predict(model_input, sampling.timestep(sigma))
        denoised = sampling.calculate_denoised(sigma, prediction.float(), x)
        # Samplers such as the *_cfg_pp ones read the unguided estimates through these hooks.
        for function in (model_options or {}).get("sampler_post_cfg_function", []):
            denoised = function({
                "denoised": denoised, "cond": None, "uncond": None, "cond_scale": self.clip.guidance_scale,
                "model": self, "uncond_denoised": sampling.calculate_denoised(sigma, raw[:1].float(), x),
                "cond_denoised": sampling.calculate_denoised(sigma, raw[1:2].float(), x), "sigma": sigma,
                "model_options": model_options, "input": x,
            })
        return denoised


class ComfyClipSampler:
    """A `ClipSampler` that samples each clip with a ComfyUI SAMPLER (e.g. from KSamplerSelect) over
    SIGMAS. The sampler runs in float32; the denoiser in the model's dtype."""

    def __init__(self, sampler, sigmas: torch.Tensor, seed: int):
        self.sampler = sampler
        self.sigmas = sigmas.float().cpu()
        self.seed = seed
        self.model_sampling = EmoCASTModelSampling()
        # Host-side timesteps of the steps, for progress reports that never wait on the device.
        self.step_timesteps = self.model_sampling.timestep(self.sigmas[:-1]).tolist()

    def sample_clip(self, clip: ClipDenoising) -> torch.Tensor:
        device = clip.noise.device
        model_sampling = self.model_sampling.to(device)
        noise = clip.noise.float()
        start = clip.start_latents.float() if clip.start_latents is not None else torch.zeros_like(noise)

        def on_step(step, denoised, x, total_steps):
            clip.report_step(step, total_steps, x, int(self.step_timesteps[step]), denoised)

        # Ancestral and SDE samplers draw their own noise from this seed: another one per clip.
        extra_args = {"model_options": {}, "seed": self.seed + clip.clip_index}
        samples = self.sampler.sample(_GuidedDenoiser(clip, model_sampling), self.sigmas.to(device), extra_args, on_step,
                                      noise, start, None, True)
        return samples.to(clip.noise.dtype)


class EmoCASTSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTSigmas",
            display_name="EmoCAST Sigmas",
            category="EmoCAST/sampling",
            description="The noise levels of a ComfyUI scheduler on EmoCAST's zero-SNR v-prediction schedule, for "
                        "EmoCAST Sampler (ComfyUI solvers); like BasicScheduler, without a MODEL.",
            inputs=[
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="How the steps are spread over the noise levels. 'normal' and 'simple' start "
                                       "at the zero-SNR level the model was trained to start from."),
                io.Int.Input("steps", default=20, min=1, max=200, tooltip="Sampling steps per clip."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="Below 1 (with a latent on the sampler): only the last, least noisy steps of "
                                       "a longer schedule, as BasicScheduler's denoise."),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="steps + 1 noise levels, from high to 0.")],
        )

    @classmethod
    def execute(cls, scheduler, steps, denoise) -> io.NodeOutput:
        total_steps = int(steps / denoise)
        sigmas = comfy.samplers.calculate_sigmas(EmoCASTModelSampling(), scheduler, total_steps).cpu()
        return io.NodeOutput(sigmas[-(steps + 1):])


class EmoCASTSamplerCustom(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EmoCASTSamplerCustom",
            display_name="EmoCAST Sampler (ComfyUI solvers)",
            category="EmoCAST/sampling",
            description="The EmoCAST sampler with any ComfyUI SAMPLER (KSamplerSelect and friends) over SIGMAS "
                        "(EmoCAST Sigmas), clip by clip, each continuing the last frames of the previous one.",
            inputs=[
                *video_inputs(),
                io.Sampler.Input("sampler", tooltip="A ComfyUI sampler, e.g. from KSamplerSelect (euler, dpmpp_2m, ...)."),
                io.Sigmas.Input("sigmas", tooltip="Noise levels per clip, from EmoCAST Sigmas (other scheduler nodes "
                                                  "need EmoCAST's range: sigma 0.0292 to 4096)."),
                seed_input(),
                cfg_input(),
                overlap_input(),
                *separate_guidance_inputs(),
                *region_and_motion_inputs(),
                io.Latent.Input("latent", optional=True,
                                tooltip="Optional video latent to start from, for sigmas made with denoise below 1 "
                                        "(a second pass). Frame i starts from latent frame i."),
                compile_input(),
                colour_anchor_input(),
                audio_off_in_silence_input(),
                motion_reference_mix_input(),
            ],
            outputs=video_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, reference, emotion, audio_features, sampler, sigmas, seed, cfg, overlap, audio_cfg,
                emotion_cfg, pose_weight, face_weight, lip_weight, motion_frames, latent=None,
                compile=False, colour_anchor=False, audio_off_in_silence=False, motion_reference_mix=0.0) -> io.NodeOutput:
        clip_length = audio_features.clip_length
        with worded_for(NODE_OPTIONS):
            check_sampling(SamplingSettings(
                cfg=cfg, audio_cfg=audio_cfg or None, emotion_cfg=emotion_cfg or None, seed=seed, overlap=overlap,
                clip_length=clip_length, region_weights=(pose_weight, face_weight, lip_weight),
                motion_reference_mix=motion_reference_mix,
            ))
        if sigmas.ndim != 1 or len(sigmas) < 2:
            raise ValueError(f"sigmas must hold at least 2 noise levels, got shape {tuple(sigmas.shape)}; "
                             "use EmoCAST Sigmas with 1 step or more")
        partial = float(sigmas[0]) < 0.999 * float(EmoCASTModelSampling().sigma_max)
        if partial and latent is None:
            raise ValueError(f"the sigmas start at {float(sigmas[0]):.4g}, below the model's pure-noise level "
                             "(denoise < 1): connect a latent to start from, or make the sigmas with denoise 1")
        start_latents = latent_samples(model, reference, audio_features, latent) if latent is not None else None
        config = GenerationConfig(
            num_inference_steps=len(sigmas) - 1,
            guidance=GuidanceConfig(scale=cfg, audio_scale=audio_cfg or None, emotion_scale=emotion_cfg or None),
            clip_length=clip_length,
            num_motion_frames=motion_frames,
            overlap=overlap,
            region_scales=(pose_weight, face_weight, lip_weight),
            seed=seed,
            compile=compile,
            colour_anchor=colour_anchor,
            audio_off_in_silence=audio_off_in_silence,
            motion_reference_mix=motion_reference_mix,
        )
        if audio_features.silent:
            config = for_silent_speech(config)
        previewer = latent_preview.get_previewer(mm.get_torch_device(), comfy.latent_formats.SD15())
        images, latents = run_sampler(
            cls.hidden.unique_id, model, reference, emotion, audio_features, config, start_latents,
            num_steps_per_clip=len(sigmas) - 1, clip_sampler=ComfyClipSampler(sampler, sigmas, seed),
            latent_previewer=previewer,
        )
        return io.NodeOutput(images, float(audio_features.fps), {"samples": latents})


COMFY_SAMPLING_NODES = [EmoCASTSamplerCustom, EmoCASTSigmas]
