"""`EmoCASTPipeline`: prepared reference + emotion + audio features -> video frames.

The pipeline takes conditions that the front-ends prepared (tensors, no files), generates the video
clip by clip and *yields* each clip's frames as soon as they are decoded, so memory does not grow
with the length of the audio. With the defaults it computes what the official code computes:
DDIM 40 steps (v-prediction, zero-terminal SNR, trailing), one joint guidance scale 3.5, 16-frame
clips continuing the previous clip's last 2 frames, output trimmed to the audio's frame count.

Beyond upstream (all opt-in): overlapping clips cross-faded at their borders, colours held to the
reference portrait's (`colour_anchor`), motion frames pulled toward the portrait
(`motion_reference_mix`), silent frames made without the audio (`audio_off_in_silence`), separate
audio and emotion guidance, guidance on a fraction of the steps, per-frame emotion (keyframes),
other solvers, progress/preview and cancellation hooks, the video's latents out and in (a second
pass from given latents at `denoise` < 1), and any per-clip sampling loop (`ClipSampler`), e.g.
ComfyUI's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol, Sequence

import torch

from .colour_anchor import anchor_colours
from .guidance import (
    GuidanceConfig,
    PreparedGuidance,
    assemble_reference,
    encode_motion_frames,
    encode_reference_image,
    guided_prediction,
    prepare_clip,
    prepare_video_conditions,
)
from .conditioning.masks import masks_for_latent_grid
from .models.net import EmoCASTNet
from .video_latents import check_video_latents, decode_video_latents, from_video_latents, to_video_latents


class GenerationCancelled(RuntimeError):
    """Raised between denoising steps when the host asked to stop."""


@dataclass
class ReferenceConditions:
    """What the pipeline needs from the reference portrait (see `conditioning.face`).

    pixel_values (1, 3, S, S) in [-1, 1]; face_embedding (1, 512); face_region (1, 3, S, S) in
    {0, 1}; full_mask / face_mask / lip_mask: lists over UNet levels of (1, h_l * w_l).
    """

    pixel_values: torch.Tensor
    face_embedding: torch.Tensor
    face_region: torch.Tensor
    full_mask: Sequence[torch.Tensor]
    face_mask: Sequence[torch.Tensor]
    lip_mask: Sequence[torch.Tensor]

    @classmethod
    def from_prepared(cls, prepared) -> "ReferenceConditions":
        """From any object with the same field names (e.g. `PreparedReference`)."""
        return cls(
            prepared.pixel_values, prepared.face_embedding, prepared.face_region,
            list(prepared.full_mask), list(prepared.face_mask), list(prepared.lip_mask),
        )


@dataclass
class EmotionConditions:
    """Emotion text embeddings: `tokens` (1, 77, D) for the whole video or (T, 77, D) per frame;
    `uncond_tokens` (1, 77, D) = the encoder's embedding of ""."""

    tokens: torch.Tensor
    uncond_tokens: torch.Tensor

    def for_frames(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, 77, D); per-frame tokens past the end repeat the last frame's."""
        if self.tokens.shape[0] == 1:
            return self.tokens.expand(stop - start, -1, -1)
        index = torch.arange(start, stop).clamp(max=self.tokens.shape[0] - 1)
        return self.tokens[index]


def frame_audio_weights(silence: Optional[Sequence[bool]], start: int, stop: int) -> Optional[torch.Tensor]:
    """(stop - start,) weights of the audio for frames [start, stop): 0 for a silent frame, 1 otherwise;
    None when no frame there is silent (or `silence` is None), so a clip with sound runs as upstream.
    Frames past the end of `silence` are the audio's padding: silent too."""
    if silence is None:
        return None
    silent = [silence[index] if index < len(silence) else True for index in range(start, stop)]
    if not any(silent):
        return None
    return torch.tensor([0.0 if frame_is_silent else 1.0 for frame_is_silent in silent])


@dataclass
class GenerationConfig:
    num_inference_steps: int = 40
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    clip_length: int = 16
    num_motion_frames: int = 2
    overlap: int = 0  # frames shared by consecutive clips, cross-faded; 0 = upstream
    region_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)  # pose, face, lip
    sampler: str = "ddim"
    seed: int = 42
    decode_batch_size: int = 4
    # Compile the denoising step with torch.compile (one graph; the first clip pays the compile time).
    compile: bool = False
    # With start latents: how much of the schedule is re-run, as ComfyUI's KSampler denoise (the
    # `num_inference_steps` steps are the last ones of a schedule of num_inference_steps / denoise steps).
    denoise: float = 1.0
    # Map each frame's colours toward the reference portrait's before it is shown and before it becomes
    # a motion frame, so that a colour error is not copied clip after clip (colour_anchor.py). Off =
    # upstream. The latents a clip yields stay the network's own (decoded, they show its colours).
    colour_anchor: bool = False
    # Frames whose audio is silent (the `silent_frames` the caller gives) run without the audio's
    # influence, as a silent file does for all of its frames (region scales 0): on the demo model the
    # wav2vec2 features of a pause dissolve the face into a featureless oval. Per frame, so that a
    # pause shorter than a clip counts too. Off = upstream, which reads every frame's audio.
    audio_off_in_silence: bool = False
    # How far each motion-frame latent is moved toward the reference portrait's latent (0 to 1) before the
    # next clip continues from it. Every clip after the first continues from frames the network made, so
    # a shape it got wrong (brows settling into another expression, hair lost) is copied and grows clip
    # after clip; a share of the reference in the motion frames pulls each clip back toward the portrait
    # while the text and audio still shape it. 0 = upstream (the previous clip's frames as they are);
    # 1 = every clip starts from the portrait, as the first one does.
    motion_reference_mix: float = 0.0

    def __post_init__(self):
        if not 0.0 < self.denoise <= 1.0:
            raise ValueError(f"denoise must be in (0, 1], got {self.denoise}")
        if self.clip_length < 1:
            raise ValueError("clip_length must be at least 1")
        if not 0 <= self.overlap < self.clip_length:
            raise ValueError(f"overlap must be in [0, clip_length), got {self.overlap}")
        if self.num_inference_steps < 1:
            raise ValueError("num_inference_steps must be at least 1")
        if not 0.0 <= self.motion_reference_mix <= 1.0:
            raise ValueError(f"motion_reference_mix must be in [0, 1], got {self.motion_reference_mix}")


@dataclass(frozen=True)
class SamplingPreset:
    """A named solver / step count / guidance combination (see docs/benchmarks.md for how the
    faster ones compare with upstream's DDIM 40)."""

    sampler: str
    num_inference_steps: int
    guidance: GuidanceConfig
    description: str


SAMPLING_PRESETS: dict[str, SamplingPreset] = {
    "upstream": SamplingPreset("ddim", 40, GuidanceConfig(), "DDIM 40 steps, joint guidance 3.5 on every step (80 denoiser rows)"),
    # DDIM 40's picture at a third of its denoiser rows: 40.3-41.8 dB PSNR against it on the first clip
    # of the official tiny model over four seeds (docs/benchmarks.md, `benchmarks/run.py solvers`). An
    # accurate solver cannot do this (DDIM 40 is itself ~40.5 dB from the exact solution); one steered
    # to DDIM 40's trajectory can (matched_solver.py). Guiding only part of the steps costs far more.
    "fast": SamplingPreset("ddim_matched", 13, GuidanceConfig(),
                           "DDIM-40-matched 2nd-order solver, 13 steps, joint guidance 3.5 (26 denoiser rows)"),
}


def generation_config_from_preset(name: str, **changes) -> GenerationConfig:
    """A `GenerationConfig` with a preset's solver, steps and guidance; `changes` set other fields."""
    if name not in SAMPLING_PRESETS:
        raise ValueError(f"unknown sampling preset {name!r}; choose one of {', '.join(SAMPLING_PRESETS)}")
    preset = SAMPLING_PRESETS[name]
    return GenerationConfig(
        num_inference_steps=preset.num_inference_steps, guidance=preset.guidance, sampler=preset.sampler, **changes
    )


@dataclass
class ProgressEvent:
    """Reported after every denoising step. `latents` is the clip's current latents (no copy);
    `preview` (H, W, 3) in [0, 1] is set when the host asked for previews."""

    clip_index: int
    num_clips: int
    step: int
    num_steps: int
    latents: torch.Tensor
    timestep: int
    preview: Optional[torch.Tensor] = None

    # The sampler's current estimate of the clean latents, when it has one (ComfyUI's samplers do).
    denoised: Optional[torch.Tensor] = None

    @property
    def fraction(self) -> float:
        return (self.clip_index * self.num_steps + self.step + 1) / (self.num_clips * self.num_steps)


@dataclass
class GeneratedClip:
    """Finished frames of the video, in order: `frames` CPU float32 (n, H, W, 3) in [0, 1] and the
    latents they were decoded from, `latents` CPU float32 (n, 4, h, w) in the VAE's own latent space
    (see `video_latents`). Where overlapping clips are cross-faded, frames and latents are each blended."""

    frames: torch.Tensor
    latents: torch.Tensor


@dataclass
class ClipDenoising:
    """One clip's denoising as a `ClipSampler` sees it.

    noise: (1, 4, F, h, w) standard normal noise on the model's device and dtype, drawn from the
    video's seed. start_latents: scaled latents (1, 4, F, h, w) to noise and denoise again, or None
    to start from pure noise; denoise: `GenerationConfig.denoise`, for a loop that builds its own
    schedule (one given a noise schedule, e.g. ComfyUI's SIGMAS, carries it there instead).
    guidance_scale: the joint guidance scale already applied by `predict`, for hooks that recombine
    the rows. predict(model_input, timestep) returns the
    guided v-prediction (1, 4, F, h, w) and the raw per-branch rows (R, 4, F, h, w), rows `[uncond,
    cond, ...]` (see `guidance.guided_prediction`). check_cancel() raises `GenerationCancelled` when
    the host asked to stop; report_step(...) reports a finished step to the host.
    """

    clip_index: int
    num_clips: int
    noise: torch.Tensor
    start_latents: Optional[torch.Tensor]
    denoise: float
    guidance_scale: float
    predict: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    check_cancel: Callable[[], None]
    report_step: Callable[..., None]


class ClipSampler(Protocol):
    """A replaceable per-clip sampling loop: returns the clip's final scaled latents (1, 4, F, h, w).

    The pipeline's own loop runs a diffusers scheduler (`GenerationConfig.sampler`); a host brings
    its own (e.g. ComfyUI's k-diffusion samplers) by passing one to `EmoCASTPipeline.generate_clips`. Its
    `report_step(step, num_steps, latents, timestep, denoised=None)` calls take a host-side int
    timestep, so that reporting never waits on the device.
    """

    def sample_clip(self, clip: ClipDenoising) -> torch.Tensor: ...


def clip_starts(num_frames: int, clip_length: int, overlap: int) -> list[int]:
    """First frame of each clip so that the clips cover `num_frames` frames."""
    stride = clip_length - overlap
    count = max(1, math.ceil(max(num_frames - overlap, 1) / stride))
    return [i * stride for i in range(count)]


class EmoCASTPipeline:
    """net: EmoCASTNet; vae: diffusers AutoencoderKL; scheduler: a diffusers scheduler (default the
    upstream DDIM set-up from `scheduling.make_scheduler`)."""

    def __init__(self, net: EmoCASTNet, vae, scheduler=None):
        self.net = net
        self.vae = vae
        if scheduler is None:
            from .scheduling import make_scheduler

            scheduler = make_scheduler("ddim")
        self.scheduler = scheduler
        self.latent_scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)

    @property
    def device(self) -> torch.device:
        return self.net.denoising_unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.denoising_unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for SD's VAE)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- the video -------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        reference: ReferenceConditions,
        emotion: EmotionConditions,
        audio_windows: torch.Tensor,
        num_frames: int,
        config: Optional[GenerationConfig] = None,
        progress: Optional[Callable[[ProgressEvent], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        preview_every: int = 0,
        silent_frames: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The whole video as one tensor (num_frames, H, W, 3) in [0, 1]. For long audio prefer
        `generate`, which yields frames clip by clip."""
        clips = list(self.generate(reference, emotion, audio_windows, num_frames, config, progress, should_cancel, preview_every,
                                   silent_frames))
        return torch.cat(clips) if clips else torch.zeros(0)

    @torch.no_grad()
    def generate(
        self,
        reference: ReferenceConditions,
        emotion: EmotionConditions,
        audio_windows: torch.Tensor,
        num_frames: int,
        config: Optional[GenerationConfig] = None,
        progress: Optional[Callable[[ProgressEvent], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        preview_every: int = 0,
        silent_frames: Optional[torch.Tensor] = None,
    ) -> Iterator[torch.Tensor]:
        """Yield the video's frames in order, a clip's worth at a time, as CPU float32
        (n, H, W, 3) in [0, 1]; exactly `num_frames` frames in total (see `generate_clips`)."""
        for clip in self.generate_clips(reference, emotion, audio_windows, num_frames, config, progress, should_cancel, preview_every,
                                        silent_frames=silent_frames):
            yield clip.frames

    @torch.no_grad()
    def generate_clips(
        self,
        reference: ReferenceConditions,
        emotion: EmotionConditions,
        audio_windows: torch.Tensor,
        num_frames: int,
        config: Optional[GenerationConfig] = None,
        progress: Optional[Callable[[ProgressEvent], None]] = None,
        should_cancel: Optional[Callable[[], bool]] = None,
        preview_every: int = 0,
        start_latents: Optional[torch.Tensor] = None,
        clip_sampler: Optional[ClipSampler] = None,
        silent_frames: Optional[torch.Tensor] = None,
    ) -> Iterator[GeneratedClip]:
        """Yield the video's frames and their latents in order, a clip's worth at a time; exactly
        `num_frames` frames in total.

        audio_windows: (T, window, layers, channels) wav2vec windows, T >= num_frames (frames past
        the end of the audio reuse the last window), or a per-clip source with `windows(start, stop)`
        and `len()` (e.g. `AudioEncoder.stream`'s, which never builds the whole video's windows).
        num_frames: the audio's video-frame count.
        start_latents: (F >= num_frames, 4, h, w) VAE-space latents (`video_latents`) that frame i
        starts from, noised to `config.denoise` of the schedule (a second pass); None = pure noise.
        clip_sampler: the per-clip sampling loop; None = the diffusers scheduler `config.sampler`.
        silent_frames: (>= num_frames,) bool, the frames whose audio is silent
        (`conditioning.audio_decode.silent_frames`); read with `config.audio_off_in_silence`.
        """
        net = self.net
        config = config or GenerationConfig()
        if num_frames < 1:
            raise ValueError("num_frames must be at least 1")
        if len(audio_windows) < 1:
            raise ValueError("audio_windows is empty")
        if start_latents is not None:
            latent_size = [size // self.vae_scale_factor for size in reference.pixel_values.shape[-2:]]
            check_video_latents(start_latents, num_frames, net.config.unet.in_channels, latent_size, self.vae_scale_factor)
        if clip_sampler is not None and config.guidance.active_fraction < 1.0:
            # Another loop's steps are not known here ahead of time (a solver may call the model
            # several times per step), so "guidance on the first steps only" has no meaning for it.
            raise ValueError("guidance on part of the steps works with the built-in solvers only; set the guidance fraction to 1")

        # 1. Conditions fixed for the whole video.
        # The face front-end makes masks for SD's four UNet levels (8 pixels per latent cell); they are
        # fitted to this VAE's latent grid, and a smaller network reads the first ones.
        num_levels = len(net.config.unet.block_out_channels)
        latent_side = reference.pixel_values.shape[-1] // self.vae_scale_factor
        region_masks = [
            masks_for_latent_grid(masks, latent_side)[:num_levels]
            for masks in (reference.full_mask, reference.face_mask, reference.lip_mask)
        ]
        conditions = prepare_video_conditions(
            net, reference.face_embedding, emotion.for_frames(0, 1), emotion.uncond_tokens, reference.face_region, region_masks
        )
        reference_latent = self._encode_images(reference.pixel_values)
        cached_image_features, cached_for_text = None, None
        denoiser = self._denoiser(config.compile)
        # Which frames are silent, as plain booleans read once (CPU data, no device synchronisation).
        silence = silent_frames.tolist() if config.audio_off_in_silence and silent_frames is not None else None

        # 2. Clips.
        starts = clip_starts(num_frames, config.clip_length, config.overlap)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        # The first clip continues from the reference image itself (upstream), whose latent we have.
        motion_latents = reference_latent.expand(config.num_motion_frames, -1, -1, -1)
        # The frames just before the next clip, (M, H, W, 3) in [0, 1]; with a large overlap they reach
        # back past the current clip's start, so they are carried from clip to clip.
        reference_frame = ((reference.pixel_values[0].float().cpu() + 1) / 2).permute(1, 2, 0)
        motion_frames = reference_frame.expand(config.num_motion_frames, -1, -1, -1)
        pending_tail: Optional[tuple[torch.Tensor, torch.Tensor]] = None  # last `overlap` frames and latents, to blend
        emitted = 0
        for clip_index, start in enumerate(starts):
            stop = start + config.clip_length
            clip_text = emotion.for_frames(start, stop).to(self.device, self.dtype)
            if bool((clip_text == clip_text[:1]).all()):
                clip_text = clip_text[:1]  # one emotion for the whole clip
            clip_conditions = conditions.with_text(clip_text[:1])
            # Reference-image features depend only on the text: computed once unless it changes.
            if cached_for_text is None or not torch.equal(cached_for_text, clip_text[:1]):
                cached_image_features = encode_reference_image(net, reference_latent, clip_conditions, config.num_motion_frames)
                cached_for_text = clip_text[:1]
            motion_features = encode_motion_frames(net, motion_latents, clip_conditions)
            denoiser_reference = assemble_reference(net, cached_image_features, motion_features)
            audio_tokens = net.audioproj(self._windows(audio_windows, start, stop)[None].to(self.device, self.dtype))
            prepared = prepare_clip(
                net, clip_conditions, clip_text, audio_tokens, denoiser_reference, config.guidance,
                config.region_scales, config.num_inference_steps, frame_audio_weights(silence, start, stop),
            )

            clip_start_latents = None
            if start_latents is not None:
                index = torch.arange(start, stop).clamp(max=start_latents.shape[0] - 1)
                clip_start_latents = from_video_latents(start_latents[index].float(), self.latent_scale).to(self.device, self.dtype)
            latents = self._denoise(
                denoiser, clip_index, len(starts), prepared, conditions.face_locator_features.shape[-2:], config, generator,
                progress, should_cancel, preview_every, clip_start_latents, clip_sampler,
            )
            video_latents = to_video_latents(latents, self.latent_scale).float().cpu()  # (F, 4, h, w)
            frames = self._decode(latents, config.decode_batch_size)  # (F, H, W, 3) on CPU
            if config.colour_anchor:
                frames = anchor_colours(frames, reference_frame)

            # 3. Motion frames for the next clip: the frames just before its first frame.
            if clip_index + 1 < len(starts):
                next_start = starts[clip_index + 1] - start
                motion_frames = torch.cat([motion_frames, frames[:next_start]])[-config.num_motion_frames:]
                motion_latents = self._encode_images(motion_frames.permute(0, 3, 1, 2) * 2 - 1)
                if config.motion_reference_mix > 0:
                    motion_latents = torch.lerp(motion_latents, reference_latent.expand_as(motion_latents),
                                                config.motion_reference_mix)

            # 4. Emit finished frames; overlapping frames are cross-faded with the previous clip (and
            # their latents likewise, so that the latent output follows the frames).
            if pending_tail is not None:
                weights = torch.linspace(0, 1, config.overlap + 2)[1:-1].view(-1, 1, 1, 1)
                frames, video_latents = frames.clone(), video_latents.clone()
                frames[: config.overlap] = (1 - weights) * pending_tail[0] + weights * frames[: config.overlap]
                video_latents[: config.overlap] = (1 - weights) * pending_tail[1] + weights * video_latents[: config.overlap]
            is_last = clip_index == len(starts) - 1
            keep = len(frames) if is_last or config.overlap == 0 else len(frames) - config.overlap
            pending_tail = None if is_last or config.overlap == 0 else (frames[keep:], video_latents[keep:])
            count = min(keep, num_frames - emitted)
            emitted += count
            if count:
                yield GeneratedClip(frames[:count], video_latents[:count])
            if emitted >= num_frames:
                return

    # --- pieces -----------------------------------------------------------------------------------

    def _denoiser(self, compile: bool):
        """The per-step call `denoiser(latents, t, prepared)`; compiled into one graph on request."""
        unet = self.net.denoising_unet
        if compile:
            # Shapes are fixed within a video; `dynamic=False` keeps one specialised graph per layout
            # (the guided batch and, with partial guidance, the conditional row).
            return torch.compile(unet, fullgraph=True, dynamic=False)
        return unet

    def _denoise(self, denoiser, clip_index, num_clips, prepared: PreparedGuidance, latent_size, config: GenerationConfig,
                 generator, progress, should_cancel, preview_every, start_latents=None, clip_sampler=None) -> torch.Tensor:
        shape = (1, self.net.config.unet.in_channels, config.clip_length, *latent_size)
        # Noise is drawn on the CPU so that a seed gives the same video on every device.
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)

        def check_cancel(step: Optional[int] = None) -> None:
            if should_cancel is not None and should_cancel():
                when = f"before step {step + 1}" if step is not None else "during"
                raise GenerationCancelled(f"cancelled {when} of clip {clip_index + 1}")

        def report_step(step: int, num_steps: int, latents: torch.Tensor, timestep: int, denoised=None) -> None:
            if progress is None:
                return
            preview = None
            if preview_every and (step + 1) % preview_every == 0:
                # The clean estimate when the sampler has one: noisy latents decode to noise.
                shown = denoised if denoised is not None else latents
                preview = self._decode(shown[:, :, :1], 1)[0]
            progress(ProgressEvent(clip_index, num_clips, step, num_steps, latents, timestep, preview, denoised))

        if clip_sampler is not None:
            return clip_sampler.sample_clip(ClipDenoising(
                clip_index, num_clips, noise, start_latents, config.denoise, prepared.scale,
                predict=lambda model_input, timestep: guided_prediction(denoiser, model_input, timestep, prepared, True),
                check_cancel=check_cancel, report_step=report_step,
            ))

        scheduler = self.scheduler
        if start_latents is None:
            scheduler.set_timesteps(config.num_inference_steps, device=self.device)
            timesteps = scheduler.timesteps
            latents = noise * scheduler.init_noise_sigma
        else:
            # As ComfyUI's KSampler denoise: the last steps of a schedule 1 / denoise times as long,
            # starting from the given latents noised to the first of them.
            scheduler.set_timesteps(int(config.num_inference_steps / config.denoise), device=self.device)
            timesteps = scheduler.timesteps[-config.num_inference_steps:]
            latents = scheduler.add_noise(start_latents, noise, timesteps[:1])
        # Host-side values decided once per clip, so the steps never wait on the device for them.
        timestep_values = timesteps.tolist()
        guided_steps = [config.guidance.is_active(step, len(timesteps)) for step in range(len(timesteps))]
        for step, timestep in enumerate(timesteps):
            check_cancel(step)
            model_input = scheduler.scale_model_input(latents, timestep)
            prediction, _ = guided_prediction(denoiser, model_input, timestep, prepared, guided_steps[step])
            latents = scheduler.step(prediction, timestep, latents, return_dict=False)[0]
            report_step(step, len(timesteps), latents, int(timestep_values[step]))
        return latents

    @staticmethod
    def _windows(audio_windows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if not isinstance(audio_windows, torch.Tensor):  # a per-clip source makes only this clip's windows
            return audio_windows.windows(start, stop)
        index = torch.arange(start, stop).clamp(max=audio_windows.shape[0] - 1)
        return audio_windows[index]

    def _encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, 4, h, w) scaled latents (the distribution mean, as upstream)."""
        pixels = pixels.to(self.vae.device, self.vae.dtype)
        return self.vae.encode(pixels).latent_dist.mean * self.latent_scale

    def _decode(self, latents: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(1, 4, F, h, w) scaled latents -> CPU float32 (F, H, W, 3) in [0, 1]."""
        return decode_video_latents(self.vae, to_video_latents(latents, self.latent_scale), max(1, batch_size))
