"""ComfyUI's own `VAE` (from Load VAE, or a checkpoint loader) behind the interface the EmoCAST pipeline
uses for its VAE, which is diffusers' `AutoencoderKL`'s:

    vae.encode(pixels).latent_dist.mean   pixels (N, 3, H, W) in [-1, 1] -> unscaled latents (N, 4, h, w)
    vae.decode(latents).sample            unscaled latents -> images (N, 3, H, W) in [-1, 1]
    vae.tiled_decode(latents).sample      the same, in spatial tiles
    vae.config.scaling_factor / latent_channels / block_out_channels, vae.device, vae.dtype

ComfyUI's VAE takes and returns images as (N, H, W, 3) in [0, 1], keeps its latents unscaled (the
model's latent format scales them) and loads itself through ComfyUI's memory manager on every call
(partially under low VRAM, in tiles when a whole frame does not fit), so the adapter only converts
layouts and ranges. It encodes to the distribution's mean, as upstream does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import comfy.latent_formats
import comfy.model_management as mm
import torch

# The latent space the EmoCAST UNets were trained in: SD1.5's VAE latents times SD1.5's scale factor.
EMOCAST_LATENT_SCALE = comfy.latent_formats.SD15().scale_factor
LATENT_CHANNELS = 4
DOWNSCALE = 8


@dataclass
class LatentMean:
    mean: torch.Tensor


@dataclass
class EncoderOutput:
    latent_dist: LatentMean


@dataclass
class DecoderOutput:
    sample: torch.Tensor


class ComfyVAEAdapter:
    """Wraps a `comfy.sd.VAE`; see the module docstring. `patcher` is the VAE's `ModelPatcher`."""

    def __init__(self, vae):
        shape = (getattr(vae, "latent_channels", None), getattr(vae, "downscale_ratio", None), getattr(vae, "latent_dim", None))
        if shape != (LATENT_CHANNELS, DOWNSCALE, 2):
            raise ValueError(
                f"this VAE has {shape[0]} latent channels and a {shape[1]}x downscale; EmoCAST needs an SD1.5 image VAE "
                f"({LATENT_CHANNELS} channels, {DOWNSCALE}x): load vae-ft-mse-840000-ema-pruned.safetensors"
            )
        self.comfy_vae = vae
        self.patcher = vae.patcher
        # block_out_channels: one entry per encoder level; code that needs the downscale reads their count.
        levels = int(math.log2(DOWNSCALE)) + 1
        self.config = SimpleNamespace(
            scaling_factor=EMOCAST_LATENT_SCALE, latent_channels=LATENT_CHANNELS, block_out_channels=(0,) * levels,
        )
        # What the pipeline hands in: ComfyUI's VAE moves and casts its inputs itself.
        self.device = mm.intermediate_device()
        self.dtype = torch.float32

    def encode(self, pixels: torch.Tensor) -> EncoderOutput:
        images = ((pixels.float() + 1) / 2).movedim(1, -1)
        return EncoderOutput(LatentMean(self.comfy_vae.encode(images).to(self.device)))

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(self._to_signed_channels_first(self.comfy_vae.decode(latents)))

    def tiled_decode(self, latents: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(self._to_signed_channels_first(self.comfy_vae.decode_tiled(latents)))

    def _to_signed_channels_first(self, images: torch.Tensor) -> torch.Tensor:
        return (images.to(self.device).movedim(-1, 1) * 2 - 1)
