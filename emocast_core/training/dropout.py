"""Condition dropout: which conditions each training sample keeps.

The sampler's unconditional branch (see `guidance.py`) runs without reference tokens, with a zero
face embedding, zero face-locator features, CLIP("") as text and zero audio tokens; its optional
separate branches drop only the audio or only the emotion text. The network must have seen those
inputs during training for guidance to mean anything, so each sample independently drops

* the reference (self-attention without reference tokens; motion frames still read),
* the face identity (zero ArcFace embedding before the projection),
* the audio (zero projected audio tokens),
* the text (CLIP("") both in the cross-attention and as the query of the emotive audio attention),
* the motion frames (replaced by the reference image, which is how the first clip of a video starts),

and with probability `all` every condition at once, including the face locator: exactly the
unconditional branch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import DropoutSection


@dataclass
class ConditionKeep:
    """Per-sample booleans (B,): True keeps the condition."""

    reference: torch.Tensor
    face: torch.Tensor
    face_locator: torch.Tensor
    audio: torch.Tensor
    text: torch.Tensor
    motion_frames: torch.Tensor

    def to(self, device) -> "ConditionKeep":
        return ConditionKeep(**{name: value.to(device) for name, value in vars(self).items()})


def draw_condition_keep(batch: int, dropout: DropoutSection, generator: torch.Generator, has_motion_frames: bool = True) -> ConditionKeep:
    """Independent draws per sample and condition (on the generator's device, the CPU)."""

    def keep(probability: float) -> torch.Tensor:
        return torch.rand(batch, generator=generator) >= probability

    drop_all = ~keep(dropout.all)
    return ConditionKeep(
        reference=keep(dropout.reference) & ~drop_all,
        face=keep(dropout.face) & ~drop_all,
        face_locator=~drop_all,
        audio=keep(dropout.audio) & ~drop_all,
        text=keep(dropout.text) & ~drop_all,
        motion_frames=keep(dropout.motion_frames) if has_motion_frames else torch.ones(batch, dtype=torch.bool),
    )
