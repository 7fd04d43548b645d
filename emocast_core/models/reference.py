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
    """Reference features for a denoiser batch of B rows (e.g. B = 2 for `[uncond; cond]`).

    reference_tokens: block path -> (B, L, C), the reference image's tokens for each row.
    motion_tokens: block path -> (B, M, L, C), the M motion frames' tokens for each row (or empty).
    reference_rows: (B,) bool; rows where False run self-attention without the reference (the
        unconditional branch). None means every row uses it.
    tile_over_frames: how the B reference rows are spread over the B x F frame rows. Upstream
        *tiles* them (frame row r reads reference row r % B, so with B = 2 every other conditional
        frame reads the reference features computed with the unconditional tokens); False gives
        each frame its own batch row's reference.
    """

    reference_tokens: dict[str, torch.Tensor]
    motion_tokens: dict[str, torch.Tensor]
    reference_rows: Optional[torch.Tensor] = None
    tile_over_frames: bool = True

    @classmethod
    def from_reference_net(
        cls,
        features: ReferenceNetFeatures,
        batch_size: int,
        reference_rows: Optional[torch.Tensor] = None,
        dtype: Optional[torch.dtype] = None,
        tile_over_frames: bool = True,
    ) -> "DenoiserReference":
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
        return cls(reference_tokens, motion_tokens, reference_rows, tile_over_frames)

    def for_block(self, key: str, num_frames: int) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """(reference tokens per frame row (B*F, L, C), row mask per frame row, motion tokens (B, M, L, C))."""
        tokens = self.reference_tokens[key]
        if self.tile_over_frames:
            tokens = tokens.repeat(num_frames, 1, 1)
        else:
            tokens = tokens.repeat_interleave(num_frames, dim=0)
        rows = None if self.reference_rows is None else self.reference_rows.repeat_interleave(num_frames)
        return tokens, rows, self.motion_tokens[key]

    def to(self, device: torch.device | str | None = None) -> "DenoiserReference":
        move = lambda t: t.to(device)  # noqa: E731
        rows = None if self.reference_rows is None else move(self.reference_rows)
        return DenoiserReference(
            {k: move(v) for k, v in self.reference_tokens.items()},
            {k: move(v) for k, v in self.motion_tokens.items()},
            rows,
            self.tile_over_frames,
        )

    def select_rows(self, rows: slice) -> "DenoiserReference":
        """The reference for a sub-batch (e.g. only the conditional row)."""
        return DenoiserReference(
            {k: v[rows] for k, v in self.reference_tokens.items()},
            {k: v[rows] for k, v in self.motion_tokens.items()},
            None if self.reference_rows is None else self.reference_rows[rows],
            self.tile_over_frames,
        )
