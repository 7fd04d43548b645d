"""FLOPs of the EmoCAST pipeline, counted with `torch.utils.flop_counter.FlopCounterMode`.

Every model component is run once on the *meta* device (shapes only: no weights, no memory, no
compute), and the per-video / per-clip / per-step counts are combined into FLOPs per generated
frame for each sampler setting. FlopCounterMode counts matmuls, convolutions and attention; on
meta tensors `scaled_dot_product_attention` takes its math decomposition (two `bmm`), which is
counted. (On CPU tensors it dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which
torch's counter has no formula for and would count as 0; `register_cpu_sdpa_formula` adds one for
the CPU cross-check.) Element-wise ops, norms and softmax are not counted (conventional; they are a
small share of the work).

Counts are multiply-add = 2 FLOPs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from workload import Workload, make_inputs

from emocast_core.guidance import (
    GuidanceConfig,
    assemble_reference,
    encode_motion_frames,
    encode_reference_image,
    guided_prediction,
    prepare_clip,
    prepare_video_conditions,
)
from emocast_core.models.net import EmoCASTNet


def count(fn, *args, **kwargs):
    """(result, total FLOPs) of one call."""
    with torch.no_grad(), FlopCounterMode(display=False) as mode:
        result = fn(*args, **kwargs)
    return result, int(mode.get_total_flops())


_CPU_SDPA_REGISTERED = False


def register_cpu_sdpa_formula() -> None:
    """Teach FlopCounterMode the CPU flash-attention kernel (same FLOPs as the other SDPA kernels)."""
    global _CPU_SDPA_REGISTERED
    if _CPU_SDPA_REGISTERED:
        return
    from torch.utils.flop_counter import register_flop_formula, sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return

    @register_flop_formula(op)
    def _cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    _CPU_SDPA_REGISTERED = True


@dataclass
class ComponentFlops:
    """FLOPs of each piece of work the pipeline does (clip of `frames` frames, `motion` motion frames)."""

    frames: int
    motion: int
    video_conditions: int  # imageproj x2 + face locator on one frame: once per video
    face_locator_per_frame: int  # what upstream pays per frame (it runs the locator on every frame)
    vae_encode_image: int  # one image
    vae_decode_frame: int  # one frame
    reference_image: int  # ReferenceNet on the reference image, both guidance rows
    reference_motion: int  # ReferenceNet on the M motion frames, both guidance rows
    audio_projection: int  # per clip
    denoise_cfg: int  # one guided step: the [uncond; cond] pass (batch 2)
    denoise_cond: int  # one unguided step: the conditional pass alone (batch 1)
    denoise_separate: int  # one step with separate audio + emotion guidance (one batch of 4 rows)
    # `DenoisingUNet.prepare` of each batch layout, once per clip: text/face and reference keys and
    # values, the emotive audio attention and its keys/values (the previous structure paid it every step).
    prepare_cfg: int = 0
    prepare_cond: int = 0
    prepare_separate: int = 0


def count_components(load: Workload, frames: int = 16, motion: int = 2, device: str = "meta", net=None, vae=None) -> ComponentFlops:
    """Run each component once on `device` ("meta": no weights needed) under FlopCounterMode."""
    from diffusers import AutoencoderKL

    if net is None:
        net = EmoCASTNet.build(load.config, device=device)
    if vae is None:
        with torch.device(device):
            vae = AutoencoderKL(**load.vae_config)
    net.eval()
    vae.eval()
    reference, emotion, windows = make_inputs(load, frames)
    dtype = net.denoising_unet.dtype

    def to(x):
        return x.to(device, dtype)

    conditions, video_conditions = count(
        prepare_video_conditions, net, to(reference.face_embedding), to(emotion.tokens[:1]), to(emotion.uncond_tokens),
        to(reference.face_region), [[to(m) for m in region] for region in (reference.full_mask, reference.face_mask, reference.lip_mask)],
    )
    region = to(reference.face_region)[:, :, None]
    _, locator_one = count(net.face_locator, region)

    def encode(pixels):
        return vae.encode(pixels).latent_dist.mean

    ref_latent, vae_encode_image = count(encode, to(reference.pixel_values))
    motion_latents, vae_encode_motion = count(encode, to(reference.pixel_values).expand(motion, -1, -1, -1))
    assert vae_encode_motion == motion * vae_encode_image
    image_features, reference_image = count(encode_reference_image, net, ref_latent, conditions, motion)
    motion_features, reference_motion = count(encode_motion_frames, net, motion_latents, conditions)
    denoiser_reference = assemble_reference(net, image_features, motion_features)
    audio_tokens, audio_projection = count(net.audioproj, to(windows[:frames])[None])

    side = load.latent_size
    latents = torch.zeros(1, load.config.unet.in_channels, frames, side, side, device=device, dtype=dtype)
    clip_text = to(emotion.tokens[:1])

    def prepared_and_step(guidance: GuidanceConfig, guided: bool) -> tuple[int, int]:
        prepared, prepare_flops = count(prepare_clip, net, conditions, clip_text, audio_tokens, denoiser_reference, guidance)
        _, step_flops = count(guided_prediction, net.denoising_unet, latents, 999, prepared, guided)
        return prepare_flops, step_flops

    prepare_cfg, denoise_cfg = prepared_and_step(GuidanceConfig(), True)
    prepare_cond, denoise_cond = prepared_and_step(GuidanceConfig(active_fraction=0.0), False)
    prepare_separate, denoise_separate = prepared_and_step(GuidanceConfig(scale=3.5, audio_scale=2.0, emotion_scale=1.5), True)
    _, vae_decode_frame = count(lambda z: vae.decode(z).sample, torch.zeros(1, 4, side, side, device=device, dtype=dtype))
    return ComponentFlops(
        frames, motion, video_conditions, locator_one, vae_encode_image, vae_decode_frame, reference_image,
        reference_motion, audio_projection, denoise_cfg, denoise_cond, denoise_separate,
        prepare_cfg, prepare_cond, prepare_separate,
    )


@dataclass
class Setting:
    label: str
    sampler: str
    steps: int
    guidance: GuidanceConfig

    @property
    def guided_steps(self) -> int:
        return sum(self.guidance.is_active(i, self.steps) for i in range(self.steps))

    @property
    def separate(self) -> bool:
        return self.guidance.audio_scale is not None or self.guidance.emotion_scale is not None


def per_clip_split(c: ComponentFlops, setting: Setting, upstream: bool = False) -> dict[str, int]:
    """FLOPs of one clip by module. Ours: the reference image's ReferenceNet features and the face
    locator are per video (not included here), the denoiser's preparation per clip. Upstream: the
    first two are recomputed every clip and the preparation's work is done inside every step."""
    guided_pass = c.denoise_separate if setting.separate else c.denoise_cfg
    guided_prepare = c.prepare_separate if setting.separate else c.prepare_cfg
    unguided_steps = setting.steps - setting.guided_steps
    denoiser = setting.guided_steps * guided_pass + unguided_steps * c.denoise_cond
    prepare = (guided_prepare if setting.guided_steps else 0) + (c.prepare_cond if unguided_steps else 0)
    if upstream:
        denoiser += setting.guided_steps * guided_prepare + unguided_steps * c.prepare_cond
        prepare = 0
    reference = c.reference_motion + (c.reference_image if upstream else 0)
    vae_encode = (c.motion + (1 if upstream else 0)) * c.vae_encode_image
    other = c.audio_projection + (c.frames * c.face_locator_per_frame if upstream else 0)
    return {
        "denoiser": denoiser,
        "denoiser_prepare": prepare,
        "reference_net": reference,
        "vae_encode": vae_encode,
        "vae_decode": c.frames * c.vae_decode_frame,
        "other": other,
    }


def per_video_split(c: ComponentFlops, upstream: bool = False) -> dict[str, int]:
    """FLOPs paid once per video."""
    if upstream:
        return {"denoiser": 0, "denoiser_prepare": 0, "reference_net": 0, "vae_encode": 0, "vae_decode": 0, "other": c.video_conditions - c.face_locator_per_frame}
    return {"denoiser": 0, "denoiser_prepare": 0, "reference_net": c.reference_image, "vae_encode": c.vae_encode_image, "vae_decode": 0, "other": c.video_conditions}


def video_split(c: ComponentFlops, setting: Setting, num_frames: int, upstream: bool = False) -> dict[str, int]:
    """FLOPs of a whole `num_frames` video (no overlap), by module."""
    clips = math.ceil(num_frames / c.frames)
    clip = per_clip_split(c, setting, upstream)
    once = per_video_split(c, upstream)
    return {key: clips * clip[key] + once[key] for key in clip}
