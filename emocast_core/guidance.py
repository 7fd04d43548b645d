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

All branches of a step run as rows of one denoiser batch. Per clip, `prepare_clip` assembles the
branches' conditions and has the denoiser prepare them (`DenoisingUNet.prepare`); per step,
`guided_prediction` is one denoiser call and a weighted combination of its rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from .devices import DTYPE_ALIASES
from .models.net import EmoCASTNet
from .models.prepared import DenoiserInputs, PreparedClip
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
        """(2, 81, D) `[uncond; cond]` rows, as the ReferenceNet receives them."""
        cond = torch.cat([self.text_tokens, self.face_tokens], dim=1)
        uncond = torch.cat([self.uncond_text_tokens, self.uncond_face_tokens], dim=1)
        return torch.cat([uncond, cond])

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
    """Combine reference-image and motion-frame features into what the denoiser reads: groups
    `[uncond; cond]` (the token rows they were encoded with), rounded to the bank dtype."""
    behaviour = net.config.upstream
    bank_dtype = DTYPE_ALIASES[behaviour.reference_bank_dtype] if behaviour.reference_bank_dtype else None
    combined = {}
    for key, image_tokens in image_features.items():
        motion_tokens = motion_features[key].reshape(2, -1, *image_tokens.shape[1:])
        combined[key] = torch.cat([image_tokens[:, None], motion_tokens], dim=1).flatten(0, 1)
    return DenoiserReference.from_reference_net(combined, batch_size=2, dtype=bank_dtype)


def reference_features(net: EmoCASTNet, reference_latents: torch.Tensor, conditions: VideoConditions) -> DenoiserReference:
    """All reference features for one clip from `[reference, motion_1, ..., motion_M]` latents
    (1+M, 4, h, w), as upstream computes them in its ReferenceNet call."""
    num_motion = reference_latents.shape[0] - 1
    image = encode_reference_image(net, reference_latents[:1], conditions, num_motion)
    motion = encode_motion_frames(net, reference_latents[1:], conditions)
    return assemble_reference(net, image, motion)


@dataclass(frozen=True)
class GuidanceBranch:
    """What one row of a guided denoiser batch keeps (True) or drops.

    text: the emotion prompt in the cross-attention (else CLIP("")); face: the identity tokens (else
    imageproj(0)); audio: the audio tokens (else 0); locator: the face locator (else 0);
    reference: reads the reference image in self-attention; emotion_query: the prompt queries the
    audio (else CLIP("")); token_group: which ReferenceNet group (0 = encoded with the
    unconditional tokens, 1 = conditional) its motion frames come from.
    """

    text: bool = True
    face: bool = True
    audio: bool = True
    locator: bool = True
    reference: bool = True
    emotion_query: bool = True
    token_group: int = 1


BRANCHES: dict[str, GuidanceBranch] = {
    # Upstream's unconditional branch: everything dropped except the motion frames and the audio query.
    "uncond": GuidanceBranch(text=False, face=False, audio=False, locator=False, reference=False, token_group=0),
    "cond": GuidanceBranch(),
    "no_audio": GuidanceBranch(audio=False),
    "no_emotion": GuidanceBranch(text=False, emotion_query=False),
}


def guided_branches(guidance: GuidanceConfig) -> tuple[str, ...]:
    """The rows of a guided step: `[uncond, cond]`, plus one row per separately guided condition."""
    names = ("uncond", "cond")
    if guidance.audio_scale is not None:
        names += ("no_audio",)
    if guidance.emotion_scale is not None:
        names += ("no_emotion",)
    return names


@dataclass
class PreparedGuidance:
    """One clip's denoiser batches, prepared once per clip.

    guided: all branches of a guided step (rows `guided_branches(...)`), or None when no step of the
        clip is guided. extra_scales: (E, 1, 1, 1, 1) scales of the separate branches after
        `[uncond, cond]`. conditional: the conditional row alone, for unguided steps (None when
        every step is guided).
    """

    scale: float
    guided: Optional[PreparedClip]
    extra_scales: Optional[torch.Tensor]
    conditional: Optional[PreparedClip]


def _branch_inputs(
    net: EmoCASTNet,
    names: Sequence[str],
    conditions: VideoConditions,
    emotion_tokens: torch.Tensor,
    audio_tokens: torch.Tensor,
    reference: DenoiserReference,
    region_scales: Sequence[float],
    num_frames: int,
    frame_audio_weights: Optional[torch.Tensor] = None,
) -> DenoiserInputs:
    """The denoiser inputs of the rows `names` (see `BRANCHES`), built once per clip."""
    unet = net.denoising_unet
    branches = [BRANCHES[name] for name in names]
    prompt = emotion_tokens.to(unet.device, unet.dtype).expand(num_frames, -1, -1)
    empty = conditions.uncond_text_tokens.expand(num_frames, -1, -1)
    face, no_face = conditions.face_tokens.expand(num_frames, -1, -1), conditions.uncond_face_tokens.expand(num_frames, -1, -1)
    audio = audio_tokens.to(unet.device, unet.dtype)[0]
    locator = conditions.face_locator_features[0]
    # Upstream spreads the two reference groups over the frame rows of its [uncond; cond] batch by
    # tiling (frame row r reads group r % 2); rows it runs as separate passes read the conditional group.
    tiled = net.config.upstream.reference_tiled_over_frames and tuple(names[:2]) == ("uncond", "cond")
    frame_rows = torch.arange(len(names) * num_frames, device=unet.device)
    source = torch.ones_like(frame_rows)
    if tiled:
        source = torch.where(frame_rows < 2 * num_frames, frame_rows % 2, source)
    groups = torch.tensor([branch.token_group for branch in branches], device=unet.device)
    return DenoiserInputs(
        text_face_tokens=torch.stack([
            torch.cat([prompt if b.text else empty, face if b.face else no_face], dim=1) for b in branches
        ]),
        audio_tokens=torch.stack([audio if b.audio else torch.zeros_like(audio) for b in branches]),
        emotion_tokens=torch.stack([prompt if b.emotion_query else empty for b in branches]),
        region_masks=conditions.region_masks,
        face_locator_features=torch.stack([locator if b.locator else torch.zeros_like(locator) for b in branches]),
        reference_tokens=reference.reference_tokens,
        reference_source=source,
        reference_rows=[b.reference for b in branches],
        motion_tokens={key: tokens[groups] for key, tokens in reference.motion_tokens.items()},
        region_scales=tuple(region_scales),
        frame_audio_weights=frame_audio_weights,
    )


def prepare_clip(
    net: EmoCASTNet,
    conditions: VideoConditions,
    emotion_tokens: torch.Tensor,
    audio_tokens: torch.Tensor,
    reference: DenoiserReference,
    guidance: GuidanceConfig,
    region_scales: Sequence[float] = (1.0, 1.0, 1.0),
    num_steps: int = 1,
    frame_audio_weights: Optional[torch.Tensor] = None,
) -> PreparedGuidance:
    """Everything the `num_steps` denoising steps of one clip share.

    emotion_tokens (F or 1, 77, D): the emotion text of each frame (or of the whole clip), read by
    the cross-attention and used as the audio query; audio_tokens (1, F, 32, D); frame_audio_weights
    (F,): how much of the audio each frame reads, on top of `region_scales` (0 = none), or None (all).
    """
    num_frames = audio_tokens.shape[1]
    guided_steps = sum(guidance.is_active(step, num_steps) for step in range(num_steps))
    clip = (conditions, emotion_tokens, audio_tokens, reference, region_scales, num_frames, frame_audio_weights)
    guided = extra_scales = conditional = None
    if guided_steps:
        names = guided_branches(guidance)
        guided = net.denoising_unet.prepare(_branch_inputs(net, names, *clip))
        extras = [scale for scale in (guidance.audio_scale, guidance.emotion_scale) if scale is not None]
        if extras:
            extra_scales = torch.tensor(extras, device=net.denoising_unet.device, dtype=net.denoising_unet.dtype).view(-1, 1, 1, 1, 1)
    if guided_steps < num_steps:
        conditional = net.denoising_unet.prepare(_branch_inputs(net, ("cond",), *clip))
    return PreparedGuidance(guidance.scale, guided, extra_scales, conditional)


def guided_prediction(denoiser, latents: torch.Tensor, timestep, prepared: PreparedGuidance, guided: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One denoising step's prediction: a single denoiser call over all branch rows.

    denoiser: `net.denoising_unet` (or its compiled form); latents (1, 4, F, h, w).
    Returns (guided prediction (1, 4, F, h, w), raw per-branch prediction (R, 4, F, h, w)).
    With `guided=False` only the conditional row runs (raw holds it alone).
    """
    clip = prepared.guided if guided else prepared.conditional
    raw = denoiser(latents.expand(clip.num_rows, -1, -1, -1, -1), timestep, clip)
    if not guided:
        return raw, raw
    uncond, cond = raw[:1], raw[1:2]
    prediction = uncond + prepared.scale * (cond - uncond)
    if prepared.extra_scales is not None:
        # + s_a (cond - cond_without_audio) + s_e (cond - cond_without_emotion), all rows at once.
        prediction = prediction + (prepared.extra_scales * (cond - raw[2:])).sum(dim=0, keepdim=True)
    return prediction, raw


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
    """One guided v-prediction for a clip, preparing and stepping in one call (for single
    predictions; a sampling loop prepares once per clip with `prepare_clip`).

    latents (1, 4, F, h, w); audio_tokens (1, F, 32, D); emotion_tokens (F, 77, D) or (1, 77, D).
    Returns (guided prediction (1, 4, F, h, w), raw per-branch prediction, `[uncond; cond]` first).
    """
    unet = net.denoising_unet
    steps = GuidanceConfig(guidance.scale, guidance.audio_scale, guidance.emotion_scale, 1.0 if guided else 0.0)
    prepared = prepare_clip(net, conditions, emotion_tokens, audio_tokens, reference, steps, region_scales)
    return guided_prediction(unet, latents.to(unet.device, unet.dtype), timestep, prepared, guided)
