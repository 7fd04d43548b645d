"""Classifier-free guidance around the EmoCAST network: how the conditional and unconditional
branches are assembled, run and combined.

Upstream's single guidance scale acts on all conditions together. Its unconditional branch
(`UpstreamBehaviour` reproduces it by default):
  * text tokens = CLIP("") and face tokens = imageproj(zeros) (not zero: LayerNorm of the bias);
  * face-locator features = 0 and projected audio tokens = 0;
  * no reference tokens in self-attention, but the motion frames are still used;
  * the emotion tokens that query the audio stay the prompt's (the same in both branches).

Optional separate guidance (`GuidanceConfig.audio_scale` / `emotion_scale`) adds branches that drop
only the audio or only the emotion text, so each condition gets its own scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .devices import DTYPE_ALIASES
from .models.net import EmoCASTNet
from .models.reference import DenoiserReference, ReferenceNetFeatures



@dataclass
class GuidanceConfig:
    """scale: the joint scale (upstream 3.5). audio_scale / emotion_scale: when set, extra branches
    without audio / without the emotion text guide those conditions separately (default: off).
    active_fraction: guidance is applied in the first `active_fraction` of the steps only (1.0 =
    all steps); later steps use the conditional prediction alone."""

    scale: float = 3.5
    audio_scale: Optional[float] = None
    emotion_scale: Optional[float] = None
    active_fraction: float = 1.0

    def __post_init__(self):
        if not 0.0 <= self.active_fraction <= 1.0:
            raise ValueError(f"active_fraction must be in [0, 1], got {self.active_fraction}")

    def is_active(self, step_index: int, num_steps: int) -> bool:
        """Whether step `step_index` (0-based) of `num_steps` is guided."""
        return step_index < math.ceil(self.active_fraction * num_steps - 1e-9)


@dataclass
class VideoConditions:
    """Conditions that stay the same over a whole video (computed once).

    face_tokens / uncond_face_tokens: (1, 4, D) imageproj(face embedding) / imageproj(zeros).
    text_tokens / uncond_text_tokens: (1, 77, D) CLIP of the prompt / of "".
    face_locator_features: (1, C0, 1, h, w) FaceLocator output for the face-region mask.
    region_masks: (full, face, lip), each a list over UNet levels of (1, h_l * w_l).
    """

    face_tokens: torch.Tensor
    uncond_face_tokens: torch.Tensor
    text_tokens: torch.Tensor
    uncond_text_tokens: torch.Tensor
    face_locator_features: torch.Tensor
    region_masks: Sequence[Sequence[torch.Tensor]]

    @property
    def text_face_tokens(self) -> torch.Tensor:
        """(2, 81, D) `[uncond; cond]` rows, as both UNets receive them."""
        return self.text_face_tokens_for(self.text_tokens)

    def text_face_tokens_for(self, text_tokens: torch.Tensor) -> torch.Tensor:
        """`[uncond; cond]` text+face rows for other text tokens: (1, 77, D) -> (2, 81, D), or per
        frame (F, 77, D) -> (2, F, 81, D)."""
        if text_tokens.ndim == 3 and text_tokens.shape[0] == 1:
            cond = torch.cat([text_tokens, self.face_tokens], dim=1)
            uncond = torch.cat([self.uncond_text_tokens, self.uncond_face_tokens], dim=1)
            return torch.cat([uncond, cond])
        frames = text_tokens.shape[0]
        cond = torch.cat([text_tokens, self.face_tokens.expand(frames, -1, -1)], dim=1)
        uncond = torch.cat([self.uncond_text_tokens, self.uncond_face_tokens], dim=1).expand(frames, -1, -1)
        return torch.stack([uncond, cond])

    def with_text(self, text_tokens: torch.Tensor) -> "VideoConditions":
        """The same conditions with another (1, 77, D) emotion text (e.g. a clip of a schedule)."""
        return VideoConditions(
            self.face_tokens, self.uncond_face_tokens, text_tokens, self.uncond_text_tokens,
            self.face_locator_features, self.region_masks,
        )


def prepare_video_conditions(
    net: EmoCASTNet,
    face_embedding: torch.Tensor,
    text_tokens: torch.Tensor,
    uncond_text_tokens: torch.Tensor,
    face_region: torch.Tensor,
    region_masks: Sequence[Sequence[torch.Tensor]],
) -> VideoConditions:
    """face_embedding (1, 512); text tokens (1, 77, D); face_region (1, 3, H, W) in {0, 1}."""
    dtype, device = net.denoising_unet.dtype, net.denoising_unet.device
    face_embedding = face_embedding.to(device, dtype)
    face_region = face_region.to(device, dtype)
    return VideoConditions(
        face_tokens=net.imageproj(face_embedding),
        uncond_face_tokens=net.imageproj(torch.zeros_like(face_embedding)),
        text_tokens=text_tokens.to(device, dtype),
        uncond_text_tokens=uncond_text_tokens.to(device, dtype),
        # The mask is the same for every frame: run the locator once and broadcast over frames.
        face_locator_features=net.face_locator(face_region[:, :, None]),
        region_masks=[[m.to(device, dtype).reshape(1, -1) for m in region] for region in region_masks],
    )


def _token_rows(behaviour, group: int, index: int, group_size: int) -> int:
    """Which `[uncond; cond]` token row image `index` of guidance group `group` is encoded with.

    Upstream runs the ReferenceNet on the 2 x (1+M) images `[ref, m_1..m_M] * 2` with the two
    token rows *tiled* over that batch, so global image i gets row i % 2 (with M = 2: ref->uncond,
    m1->cond, m2->uncond, ref->cond, m1->uncond, m2->cond). "per_half" uses the group's own row.
    """
    if behaviour.reference_token_layout == "tiled":
        return (group * group_size + index) % 2
    return group


def encode_reference_image(net: EmoCASTNet, reference_latent: torch.Tensor, conditions: VideoConditions, num_motion_frames: int) -> ReferenceNetFeatures:
    """ReferenceNet features of the reference image for the two guidance rows: block -> (2, L, C).

    The reference image is the same for every clip, so a pipeline computes this once per video.
    """
    behaviour = net.config.upstream
    rows = [_token_rows(behaviour, group, 0, 1 + num_motion_frames) for group in (0, 1)]
    latents = reference_latent.to(net.reference_unet.device, net.reference_unet.dtype).expand(2, -1, -1, -1)
    return net.reference_unet(latents, conditions.text_face_tokens[rows], timestep=0)


def encode_motion_frames(net: EmoCASTNet, motion_latents: torch.Tensor, conditions: VideoConditions) -> ReferenceNetFeatures:
    """ReferenceNet features of the M motion frames (M, 4, h, w) for both guidance rows:
    block -> (2 * M, L, C), group-major."""
    behaviour = net.config.upstream
    num_motion = motion_latents.shape[0]
    rows = [_token_rows(behaviour, group, 1 + j, 1 + num_motion) for group in (0, 1) for j in range(num_motion)]
    latents = motion_latents.to(net.reference_unet.device, net.reference_unet.dtype).repeat(2, 1, 1, 1)
    return net.reference_unet(latents, conditions.text_face_tokens[rows], timestep=0)


def assemble_reference(net: EmoCASTNet, image_features: ReferenceNetFeatures, motion_features: ReferenceNetFeatures) -> DenoiserReference:
    """Combine reference-image and motion-frame features into what the denoiser reads, rows
    `[uncond; cond]`; the unconditional row attends without the reference (upstream's branch)."""
    behaviour = net.config.upstream
    bank_dtype = DTYPE_ALIASES[behaviour.reference_bank_dtype] if behaviour.reference_bank_dtype else None
    combined = {}
    for key, image_tokens in image_features.items():
        motion_tokens = motion_features[key].reshape(2, -1, *image_tokens.shape[1:])
        combined[key] = torch.cat([image_tokens[:, None], motion_tokens], dim=1).flatten(0, 1)
    reference_rows = torch.tensor([False, True], device=net.reference_unet.device)
    return DenoiserReference.from_reference_net(
        combined, batch_size=2, reference_rows=reference_rows, dtype=bank_dtype,
        tile_over_frames=behaviour.reference_tiled_over_frames,
    )


def reference_features(net: EmoCASTNet, reference_latents: torch.Tensor, conditions: VideoConditions) -> DenoiserReference:
    """All reference features for one clip from `[reference, motion_1, ..., motion_M]` latents
    (1+M, 4, h, w), as upstream computes them in its ReferenceNet call."""
    num_motion = reference_latents.shape[0] - 1
    image = encode_reference_image(net, reference_latents[:1], conditions, num_motion)
    motion = encode_motion_frames(net, reference_latents[1:], conditions)
    return assemble_reference(net, image, motion)


def predict_guided(
    net: EmoCASTNet,
    latents: torch.Tensor,
    timestep: torch.Tensor | int,
    conditions: VideoConditions,
    audio_tokens: torch.Tensor,
    emotion_tokens: torch.Tensor,
    reference: DenoiserReference,
    guidance: GuidanceConfig,
    region_scales: Sequence[float] = (1.0, 1.0, 1.0),
    guided: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One guided v-prediction for a clip.

    latents (1, 4, F, h, w); audio_tokens (1, F, 32, D); emotion_tokens (F, 77, D) or (1, 77, D):
    the emotion text of each frame (or of the whole clip), read by the cross-attention and used as
    the audio query.
    Returns (guided prediction (1, 4, F, h, w), raw `[uncond; cond]` prediction (2, 4, F, h, w)).
    With `guided=False` only the conditional branch runs (raw holds it alone).
    """
    unet = net.denoising_unet
    num_frames = latents.shape[2]
    latents = latents.to(unet.device, unet.dtype)
    audio_tokens = audio_tokens.to(unet.device, unet.dtype)
    emotion_tokens = emotion_tokens.to(unet.device, unet.dtype)
    # One row: the same emotion for the whole clip (a (2, 81, D) batch); F rows: per frame.
    text_face = conditions.text_face_tokens_for(emotion_tokens)
    emotion = emotion_tokens.expand(num_frames, -1, -1)[None]  # (1, F, 77, D), the audio query
    locator = conditions.face_locator_features.expand(-1, -1, num_frames, -1, -1)

    if not guided:
        cond_reference = reference.select_rows(slice(1, 2))
        cond = unet(
            latents, timestep, text_face[1:], audio_tokens, emotion, conditions.region_masks,
            locator, cond_reference, region_scales,
        )
        return cond, cond

    raw = unet(
        torch.cat([latents, latents]),
        timestep,
        text_face,
        torch.cat([torch.zeros_like(audio_tokens), audio_tokens]),
        torch.cat([emotion, emotion]),
        conditions.region_masks,
        torch.cat([torch.zeros_like(locator), locator]),
        reference,
        region_scales,
    )
    uncond, cond = raw.chunk(2)
    guided_prediction = uncond + guidance.scale * (cond - uncond)

    if guidance.audio_scale is not None or guidance.emotion_scale is not None:
        guided_prediction = _add_separate_guidance(
            net, latents, timestep, conditions, text_face, audio_tokens, emotion, locator, reference, guidance, region_scales, cond,
            guided_prediction,
        )
    return guided_prediction, raw


def _add_separate_guidance(net, latents, timestep, conditions, text_face, audio_tokens, emotion, locator, reference, guidance, region_scales, cond, guided):
    """Add `s_a (cond - cond_without_audio)` and/or `s_e (cond - cond_without_emotion)`.

    The branch without emotion uses CLIP("") in the cross-attention and as the audio query.
    """
    unet = net.denoising_unet
    cond_reference = reference.select_rows(slice(1, 2))
    if guidance.audio_scale is not None:
        no_audio = unet(
            latents, timestep, text_face[1:], torch.zeros_like(audio_tokens), emotion,
            conditions.region_masks, locator, cond_reference, region_scales,
        )
        guided = guided + guidance.audio_scale * (cond - no_audio)
    if guidance.emotion_scale is not None:
        neutral_tokens = torch.cat([conditions.uncond_text_tokens, conditions.face_tokens], dim=1)
        neutral_query = conditions.uncond_text_tokens[:, None].expand_as(emotion)
        no_emotion = unet(
            latents, timestep, neutral_tokens, audio_tokens, neutral_query, conditions.region_masks, locator,
            cond_reference, region_scales,
        )
        guided = guided + guidance.emotion_scale * (cond - no_emotion)
    return guided
