"""`EmoCASTTrainingModel`: one training forward pass, from encoded inputs to the loss.

The whole pass — ReferenceNet on the reference + motion frames, projections, face locator and the
denoiser — lives in one `forward`, so that a distributed wrapper (DDP, DeepSpeed, FSDP) sees a
single module call per step. The frozen encoders (VAE, CLIP) run outside it (`TrainingBatch`).

The denoiser is called the way the sampler calls it (`guidance.py`): the batch's conditions become
`DenoiserInputs`, `DenoisingUNet.prepare` turns them into the per-clip keys/values, and one
`denoising_unet(latents, timesteps, prepared)` call predicts. Conditions: text + face tokens for both
UNets, the ReferenceNet at t = 0, reference tokens in self-attention and motion frames before each
motion module, the face locator's features after `conv_in`, the projected audio tokens with the
emotion text as their query.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..models.net import EmoCASTNet
from ..models.prepared import DenoiserInputs
from ..models.reference import DenoiserReference
from .dropout import ConditionKeep
from .objectives import diffusion_loss, region_weight_map


@dataclass
class TrainingBatch:
    """Encoded inputs of one micro-batch (B samples, F target frames, M motion frames).

    noisy_latents / target (B, 4, F, h, w): noised latents and their v-target.
    timesteps (B,); sample_weights (B,): min-SNR weights.
    reference_latents (B * (1 + M), 4, h, w): per sample [reference, motion_1..M] (group-major).
    text_tokens (B, 77, D): CLIP of each caption ("" where the text is dropped).
    face_embedding (B, 512); face_region (B, 3, S, S); audio_windows (B, F, window, L, C).
    region_masks: (full, face, lip) lists over UNet levels of (B, h_l * w_l).
    keep: per-sample condition dropout.
    """

    noisy_latents: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor
    sample_weights: torch.Tensor
    reference_latents: torch.Tensor
    text_tokens: torch.Tensor
    face_embedding: torch.Tensor
    face_region: torch.Tensor
    audio_windows: torch.Tensor
    region_masks: Sequence[Sequence[torch.Tensor]]
    keep: ConditionKeep


class EmoCASTTrainingModel(nn.Module):
    """Wraps `EmoCASTNet` (as `.net`, so exports take `.net.state_dict()`, the net.pth layout).

    lip_loss_weight / face_loss_weight: extra weight of the lip / face regions in the MSE.
    """

    def __init__(self, net: EmoCASTNet, lip_loss_weight: float = 0.0, face_loss_weight: float = 0.0):
        super().__init__()
        self.net = net
        self.lip_loss_weight = lip_loss_weight
        self.face_loss_weight = face_loss_weight

    def forward(self, batch: TrainingBatch) -> dict:
        prediction = self.predict(batch)
        _, _, num_frames, height, width = batch.target.shape
        pixel_weights = region_weight_map(
            batch.region_masks[2][0], batch.region_masks[1][0], self.lip_loss_weight, self.face_loss_weight,
            num_frames, height, width,
        )
        loss, per_sample = diffusion_loss(prediction, batch.target, batch.sample_weights, pixel_weights)
        return {"loss": loss, "per_sample_mse": per_sample}

    def predict(self, batch: TrainingBatch) -> torch.Tensor:
        """The denoiser's v-prediction (B, 4, F, h, w) for the batch's conditions."""
        net, keep = self.net, batch.keep
        batch_size, _, num_frames = batch.noisy_latents.shape[:3]
        dtype = net.denoising_unet.dtype
        group = batch.reference_latents.shape[0] // batch_size

        face_embedding = batch.face_embedding.to(dtype) * keep.face[:, None].to(dtype)
        face_tokens = net.imageproj(face_embedding)
        text_tokens = batch.text_tokens.to(face_tokens.dtype)
        text_face = torch.cat([text_tokens, face_tokens], dim=1)  # (B, 77 + 4, D)

        # ReferenceNet at t = 0 on [reference, motion frames] of every sample, each image with its
        # sample's tokens; the denoiser reads sample b's features in sample b's frames.
        features = net.reference_unet(batch.reference_latents.to(dtype), text_face.repeat_interleave(group, dim=0), timestep=0)
        reference = DenoiserReference.from_reference_net(features, batch_size=batch_size)

        locator = net.face_locator(batch.face_region.to(dtype)[:, :, None])  # (B, C0, 1, h, w), same every frame
        locator = locator * keep.face_locator.to(locator.dtype)[:, None, None, None, None]
        audio_tokens = net.audioproj(batch.audio_windows.to(dtype))
        audio_tokens = audio_tokens * keep.audio.to(audio_tokens.dtype)[:, None, None, None]
        per_frame = lambda tokens: tokens[:, None].expand(-1, num_frames, -1, -1)  # noqa: E731  (B, L, D) -> (B, F, L, D)

        prepared = net.denoising_unet.prepare(DenoiserInputs(
            text_face_tokens=per_frame(text_face),
            audio_tokens=audio_tokens,
            emotion_tokens=per_frame(text_tokens),
            region_masks=batch.region_masks,
            face_locator_features=locator,
            reference_tokens=reference.reference_tokens,
            reference_source=torch.arange(batch_size, device=locator.device).repeat_interleave(num_frames),
            # Which samples keep their reference is a layout decision: read once here, per batch.
            reference_rows=keep.reference.tolist(),
            motion_tokens=reference.motion_tokens,
        ))
        return net.denoising_unet(batch.noisy_latents.to(dtype), batch.timesteps, prepared)


def unwrap_training_model(model: nn.Module) -> EmoCASTTrainingModel:
    """The `EmoCASTTrainingModel` inside DDP / DeepSpeed / compile wrappers."""
    while not isinstance(model, EmoCASTTrainingModel):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"no EmoCASTTrainingModel inside {type(model).__name__}")
        model = inner
    return model
