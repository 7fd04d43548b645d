"""What the denoiser reads during a clip, split into what is fixed for the clip and what is not.

A clip is denoised in two calls:

* `DenoisingUNet.prepare(DenoiserInputs) -> PreparedClip`, once per clip: everything that does not
  depend on the latents — the key/value projections of the text+face tokens, of the reference
  image's features (already laid out per frame row) and of the emotive audio tokens (the emotion
  text's attention over the audio tokens), the motion frames, the region masks and the face
  locator's features — in the compute dtype, with every data-dependent decision (which rows read
  the reference) taken here as plain Python values.
* `DenoisingUNet(latents, timestep, prepared)`, once per step: only what depends on the latents.
  It has no host synchronisation and no branch on tensor values, so `torch.compile` sees one graph.

A denoiser batch has R rows (the guidance branches of one clip, or the samples of a training
batch) of F frames each; per-frame tensors are frame-folded to R * F rows, row-major.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch


@dataclass
class DenoiserInputs:
    """The conditions of an R-row denoiser batch for one F-frame clip, before the network's own
    per-block projections.

    text_face_tokens: (R, F, L_text + L_face, D) cross-attention tokens of every frame.
    audio_tokens: (R, F, 32, D) projected audio tokens (zeros where a branch drops the audio).
    emotion_tokens: (R, F, 77, D) text tokens that query the audio tokens.
    region_masks: (full, face, lip), each a list over UNet levels of (1 or R, h_l * w_l).
    face_locator_features: (R, C0, 1 or F, h, w), added after conv_in; None adds nothing.
    reference_tokens: ReferenceNet block path -> (S, L, C): the reference image's tokens for S
        sources (e.g. encoded with the unconditional and the conditional tokens); None: no reference.
    reference_source: (R * F,) long: which source each frame row reads.
    reference_rows: R Python booleans: rows that attend to the reference (the others run plain
        self-attention, upstream's unconditional branch). Plain values, so that the step never
        looks at a tensor to decide.
    motion_tokens: ReferenceNet block path -> (R, M, L, C), the motion frames of each row.
    region_scales: [pose, face, lip] weights of the audio branches.
    frame_audio_weights: (F,) a weight of the audio branches per frame, on top of `region_scales`
        (0: the frame runs without the audio, e.g. a silent one); None: 1 for every frame.
    """

    text_face_tokens: torch.Tensor
    audio_tokens: torch.Tensor
    emotion_tokens: torch.Tensor
    region_masks: Sequence[Sequence[torch.Tensor]]
    face_locator_features: Optional[torch.Tensor] = None
    reference_tokens: Optional[dict[str, torch.Tensor]] = None
    reference_source: Optional[torch.Tensor] = None
    reference_rows: Sequence[bool] = ()
    motion_tokens: Optional[dict[str, torch.Tensor]] = None
    region_scales: Sequence[float] = (1.0, 1.0, 1.0)
    frame_audio_weights: Optional[torch.Tensor] = None

    @property
    def num_rows(self) -> int:
        return self.audio_tokens.shape[0]

    @property
    def num_frames(self) -> int:
        return self.audio_tokens.shape[1]


@dataclass
class CrossAttentionKV:
    """Keys and values of one decoupled text/face cross-attention, (R * F, L, inner) each."""

    text_key: torch.Tensor
    text_value: torch.Tensor
    face_key: torch.Tensor
    face_value: torch.Tensor


@dataclass(frozen=True)
class RowSegment:
    """Frame rows [start, stop) of a batch; `bank_start` is where their reference keys/values start
    in the block's reference bank, or None when these rows attend without the reference."""

    start: int
    stop: int
    bank_start: Optional[int] = None


def row_segments(reference_rows: Sequence[bool], num_frames: int) -> tuple[RowSegment, ...]:
    """Runs of consecutive batch rows that do / do not read the reference, in frame rows."""
    segments: list[RowSegment] = []
    bank_rows = 0
    for row, with_reference in enumerate(reference_rows):
        start, stop = row * num_frames, (row + 1) * num_frames
        previous = segments[-1] if segments else None
        if previous is not None and (previous.bank_start is not None) == bool(with_reference):
            segments[-1] = replace(previous, stop=stop)
        else:
            segments.append(RowSegment(start, stop, bank_rows if with_reference else None))
        bank_rows += num_frames if with_reference else 0
    return tuple(segments)


@dataclass
class PreparedClip:
    """Everything a denoising step reads that stays the same over the clip (see the module doc).

    cross_attention: spatial block path -> text/face keys and values per frame row.
    reference_kv: spatial block path -> (key, value), each (rows with a reference, L, inner): the
        reference image's tokens through the block's self-attention projections, one per frame row
        that reads them, in `segments` order.
    segments: which frame rows read the reference bank (empty when no reference is used).
    motion_frames: spatial block path -> (R, M, L, C) motion-frame tokens, compute dtype.
    emotive_audio_kv: audio block path -> ((key, value) of the pose, face and lip branches), each
        (R * F, 77, inner).
    region_masks: per UNet level, the (full, face, lip) masks, each (R * F, h_l * w_l).
    face_locator_features: (R * F, C0, h, w) or None.
    frame_audio_weights: (R * F, 1, 1) per-frame-row weights of the audio branches, or None (all 1).
    """

    num_rows: int
    num_frames: int
    cross_attention: dict[str, CrossAttentionKV]
    reference_kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    segments: tuple[RowSegment, ...] = ()
    motion_frames: dict[str, torch.Tensor] = field(default_factory=dict)
    emotive_audio_kv: dict[str, tuple[tuple[torch.Tensor, torch.Tensor], ...]] = field(default_factory=dict)
    region_masks: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = ()
    region_scales: tuple[float, float, float] = (1.0, 1.0, 1.0)
    face_locator_features: Optional[torch.Tensor] = None
    frame_audio_weights: Optional[torch.Tensor] = None
