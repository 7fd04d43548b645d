"""What flows from the ReferenceNet into the denoising UNet.

The ReferenceNet runs on reference/motion-frame images and returns, for every spatial transformer
block, the block's `norm1` tokens (`ReferenceNetFeatures`). The denoiser reads them per block as
`DenoiserReference`: the reference image's tokens (extra self-attention keys/values) and the motion
frames' tokens (prepended before each motion module), for each row of its batch.

Blocks are matched by their module path (e.g. `down_blocks.0.attentions.0.transformer_blocks.0`),
which is the same in both UNets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

ReferenceNetFeatures = dict[str, torch.Tensor]
"""Block path -> norm1 tokens (N_images, L, C) written by the ReferenceNet, in execution order."""


@dataclass
class DenoiserReference:
    """ReferenceNet features of S groups of `[reference, motion_1, ..., motion_M]` images (S = 2
    for the `[uncond; cond]` token rows of guidance, or the samples of a training batch).

    reference_tokens: block path -> (S, L, C), the reference image's tokens of each group.
    motion_tokens: block path -> (S, M, L, C), the M motion frames' tokens of each group (or empty).
    Which denoiser rows and frames read which group is decided when a clip is prepared
    (`DenoiserInputs`).
    """

    reference_tokens: dict[str, torch.Tensor]
    motion_tokens: dict[str, torch.Tensor]

    @classmethod
    def from_reference_net(cls, features: ReferenceNetFeatures, batch_size: int, dtype: Optional[torch.dtype] = None) -> "DenoiserReference":
        """Split ReferenceNet features computed on `batch_size` groups of `[reference, motion_1, ...,
        motion_M]` images (group-major, as upstream lays out its batch).

        `dtype` rounds the stored features (upstream keeps them in float16, see
        `UpstreamBehaviour.reference_bank_dtype`); they are promoted back when used.
        """
        reference_tokens, motion_tokens = {}, {}
        for key, tokens in features.items():
            if tokens.shape[0] % batch_size:
                raise ValueError(f"{tokens.shape[0]} reference images do not split into {batch_size} groups")
            grouped = tokens.reshape(batch_size, tokens.shape[0] // batch_size, *tokens.shape[1:])
            if dtype is not None:
                grouped = grouped.to(dtype)
            reference_tokens[key] = grouped[:, 0]
            motion_tokens[key] = grouped[:, 1:]
        return cls(reference_tokens, motion_tokens)
