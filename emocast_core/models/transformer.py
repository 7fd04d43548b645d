"""Token containers around the transformer blocks: GroupNorm -> 1x1 conv in -> blocks -> 1x1 conv
out -> residual, on frame-folded feature maps (N = batch x frames, C, H, W)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .attention import EmotiveAudioTransformerBlock, SpatialTransformerBlock
from .layers import DEFAULT_OPERATIONS, Operations
from .prepared import CrossAttentionKV, RowSegment


def _to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    n, c, h, w = feature_map.shape
    return feature_map.permute(0, 2, 3, 1).reshape(n, h * w, c)


def _to_feature_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    n, _, c = tokens.shape
    return tokens.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()


class SpatialTransformer(nn.Module):
    """SD's `Transformer2DModel` (conv projections) holding `SpatialTransformerBlock`s."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        cross_attention_dim: int,
        num_face_tokens: int,
        norm_num_groups: int,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.norm = operations.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = operations.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [SpatialTransformerBlock(channels, num_heads, cross_attention_dim, num_face_tokens, operations)]
        )
        self.proj_out = operations.Conv2d(channels, channels, kernel_size=1)

    @property
    def block(self) -> SpatialTransformerBlock:
        (block,) = self.transformer_blocks
        return block

    def forward(
        self,
        hidden_states: torch.Tensor,
        cross_kv: CrossAttentionKV,
        reference_kv: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
        segments: Sequence[RowSegment] = (),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden_states (N, C, H, W); cross_kv: the block's text/face keys and values per row;
        reference_kv / segments: see `SpatialTransformerBlock`.

        Returns the output map and the `norm1` tokens (N, H*W, C) of the (single) block: the
        reference features this layer shares when it runs in the ReferenceNet.
        """
        _, _, height, width = hidden_states.shape
        residual = hidden_states
        tokens = _to_tokens(self.proj_in(self.norm(hidden_states)))
        tokens, reference_features = self.block(tokens, cross_kv, reference_kv, segments)
        hidden_states = self.proj_out(_to_feature_map(tokens, height, width))
        return hidden_states + residual, reference_features


class AudioModule(nn.Module):
    """Hallo's audio module: `EmotiveAudioTransformerBlock` in a conv-projected container.

    Its inner width may differ from the feature width: the released layout takes it from the
    enclosing block's *input* channels (see `blocks.py`), so proj_in maps `channels -> inner_dim`.
    """

    def __init__(
        self,
        channels: int,
        inner_dim: int,
        num_heads: int,
        norm_num_groups: int,
        audio_token_dim: int,
        emotion_token_dim: int,
        emotive_head_dim: int,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.norm = operations.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = operations.Conv2d(channels, inner_dim, kernel_size=1)
        self.transformer_blocks = nn.ModuleList(
            [EmotiveAudioTransformerBlock(inner_dim, num_heads, audio_token_dim, emotion_token_dim, emotive_head_dim, operations)]
        )
        self.proj_out = operations.Conv2d(inner_dim, channels, kernel_size=1)

    @property
    def block(self) -> EmotiveAudioTransformerBlock:
        (block,) = self.transformer_blocks
        return block

    def forward(
        self,
        hidden_states: torch.Tensor,
        emotive_audio_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
        region_masks: Sequence[torch.Tensor],
        region_scales: Sequence[float],
        frame_weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """hidden_states (N, C, H, W); emotive_audio_kv: the block's per-clip keys/values (see
        `EmotiveAudioTransformerBlock.emotive_audio_kv`); region_masks 3 x (N, H*W) at this resolution;
        frame_weights (N, 1, 1) or None (see the block)."""
        _, _, height, width = hidden_states.shape
        for mask in region_masks:
            if mask.shape[-1] != height * width:
                raise ValueError(f"region mask has {mask.shape[-1]} values, the {height}x{width} level needs {height * width}")
        residual = hidden_states
        tokens = _to_tokens(self.proj_in(self.norm(hidden_states)))
        tokens = self.block(tokens, height, width, emotive_audio_kv, region_masks, region_scales, frame_weights)
        return self.proj_out(_to_feature_map(tokens, height, width)) + residual
