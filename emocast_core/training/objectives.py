"""The training objective: noising on a zero-terminal-SNR schedule, the v-target, min-SNR weights and
the region-weighted MSE.

The schedule matches the sampler's (DDPM betas 0.00085 -> 0.012, linear, rescaled to zero terminal
SNR, v-prediction, trailing spacing) so that the network is trained on exactly the noise levels it
is sampled on, including pure noise at t = 999.
"""
from __future__ import annotations

from typing import Optional

import torch
from diffusers import DDPMScheduler

from ..scheduling import UPSTREAM_NOISE_SCHEDULE
from .config import NoiseSection


def noise_schedule(noise: NoiseSection) -> dict:
    """The sampler's noise schedule (`scheduling.UPSTREAM_NOISE_SCHEDULE`) with the configured betas."""
    return {
        **UPSTREAM_NOISE_SCHEDULE,
        "num_train_timesteps": noise.num_train_timesteps,
        "beta_start": noise.beta_start,
        "beta_end": noise.beta_end,
        "beta_schedule": noise.beta_schedule,
    }


def make_training_scheduler(noise: NoiseSection) -> DDPMScheduler:
    return DDPMScheduler(**noise_schedule(noise), clip_sample=False)


def sample_noise(latents: torch.Tensor, offset: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise plus `offset` x per-sample, per-channel constant noise (the "noise offset",
    which lets the model change a frame's overall brightness). latents (B, C, F, h, w).

    Drawn on the generator's device (the CPU) and moved, so a seed means the same noise anywhere.
    """
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    if offset > 0:
        shape = (latents.shape[0], latents.shape[1]) + (1,) * (latents.ndim - 2)
        noise = noise + offset * torch.randn(shape, generator=generator, dtype=torch.float32)
    return noise.to(latents.device, latents.dtype)


def noise_motion_frames(reference_latents: torch.Tensor, num_motion_frames: int, max_std: float,
                        noisy: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise on the motion frames of the samples where `noisy` (B,) is True, with a standard
    deviation drawn per sample uniformly from [0, max_std]; the reference images are left as they are.

    reference_latents (B * (1 + M), C, h, w): per sample [reference, motion_1..M] (group-major), as
    the ReferenceNet receives them. Drawn on the generator's device (the CPU) like `sample_noise`.
    """
    if max_std <= 0 or num_motion_frames < 1:
        return reference_latents
    batch = reference_latents.shape[0] // (1 + num_motion_frames)
    grouped = reference_latents.reshape(batch, 1 + num_motion_frames, *reference_latents.shape[1:])
    std = max_std * torch.rand(batch, generator=generator, dtype=torch.float32) * noisy.cpu().float()
    noise = torch.randn(grouped[:, 1:].shape, generator=generator, dtype=torch.float32)
    noise = (noise * std.view(batch, 1, 1, 1, 1)).to(grouped.device, grouped.dtype)
    return torch.cat([grouped[:, :1], grouped[:, 1:] + noise], dim=1).flatten(0, 1)


def sample_timesteps(batch: int, num_train_timesteps: int, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randint(0, num_train_timesteps, (batch,), generator=generator).to(device)


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """alpha_t^2 / sigma_t^2 per timestep (0 at the zero-SNR terminal step)."""
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod).clamp_min(1e-20)


def min_snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: Optional[float]) -> torch.Tensor:
    """Per-sample loss weights of min-SNR-gamma for the v-target: min(SNR + 1, gamma) / (SNR + 1).

    (For v-prediction the MSE on v equals (SNR + 1) x the MSE on x0 up to a factor, hence SNR + 1;
    as in Hallo's training scripts.) gamma None gives weight 1.
    """
    if gamma is None:
        return torch.ones(timesteps.shape, device=timesteps.device)
    value = snr(scheduler, timesteps) + 1.0
    return torch.minimum(value, torch.full_like(value, gamma)) / value


def region_weight_map(
    lip_mask: Optional[torch.Tensor], face_mask: Optional[torch.Tensor], lip_weight: float, face_weight: float,
    num_frames: int, height: int, width: int,
) -> Optional[torch.Tensor]:
    """(B, 1, F, h, w) per-pixel loss weights 1 + lip_weight * lip + face_weight * face, from the
    level-0 masks (B, h * w); None when both weights are 0."""
    if not lip_weight and not face_weight:
        return None
    reference = lip_mask if lip_mask is not None else face_mask
    weights = torch.ones(reference.shape[0], height * width, device=reference.device, dtype=torch.float32)
    if lip_weight:
        weights = weights + lip_weight * lip_mask.float()
    if face_weight:
        weights = weights + face_weight * face_mask.float()
    return weights.reshape(-1, 1, 1, height, width).expand(-1, 1, num_frames, -1, -1)


def diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    sample_weights: torch.Tensor,
    pixel_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scalar loss, per-sample unweighted MSE).

    The MSE is averaged per sample (over channels, frames and pixels; weighted by `pixel_weights`
    normalised to mean 1 per sample, so region emphasis moves the loss around without changing its
    scale), then weighted per sample — unlike Hallo's scripts, which averaged the batch first.
    """
    error = (prediction.float() - target.float()) ** 2
    if pixel_weights is not None:
        normalised = pixel_weights / pixel_weights.mean(dim=(1, 2, 3, 4), keepdim=True)
        error = error * normalised
    per_sample = error.mean(dim=tuple(range(1, error.ndim)))
    return (per_sample * sample_weights).mean(), per_sample.detach()
