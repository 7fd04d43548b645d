"""AnimateDiff v2 ("Vanilla") temporal modules, in the parameter layout of the released checkpoint
(`motion_modules.N.temporal_transformer.transformer_blocks.0.attention_blocks.K...`)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .attention import self_attention
from .layers import DEFAULT_OPERATIONS, Attention, FeedForward, Operations


class SinusoidalFramePositions(nn.Module):
    """Adds a fixed sinusoidal table over frames. The table is a buffer (`pe`, (1, max_frames, dim))
    because the checkpoint stores it."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        position = torch.arange(max_frames).unsqueeze(1)
        frequencies = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        table = torch.zeros(1, max_frames, dim)
        table[0, :, 0::2] = torch.sin(position * frequencies)
        table[0, :, 1::2] = torch.cos(position * frequencies)
        self.register_buffer("pe", table)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        num_frames = sequence.shape[1]
        if num_frames > self.pe.shape[1]:
            raise ValueError(
                f"a motion module sees {num_frames} frames (clip + motion frames) but supports at most {self.pe.shape[1]}"
            )
        # The table is a buffer, not a weight: a host that loads the model partially (ComfyUI) may
        # leave it on the offload device, so it follows the tokens.
        return sequence + self.pe[:, :num_frames].to(sequence.device, sequence.dtype)


class TemporalSelfAttention(Attention):
    """Self-attention across frames at each spatial position, with frame positions added first."""

    def __init__(self, dim: int, num_heads: int, max_frames: int, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__(query_dim=dim, heads=num_heads, dim_head=dim // num_heads, operations=operations)
        self.pos_encoder = SinusoidalFramePositions(dim, max_frames)

    def forward(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:  # type: ignore[override]
        """tokens ((B F), L, C) -> ((B F), L, C), attention over F for each of the L positions."""
        batch_frames, positions, channels = tokens.shape
        batch = batch_frames // num_frames
        sequence = tokens.reshape(batch, num_frames, positions, channels).permute(0, 2, 1, 3)
        sequence = self.pos_encoder(sequence.reshape(batch * positions, num_frames, channels))
        attended = self_attention(self, sequence)
        attended = attended.reshape(batch, positions, num_frames, channels).permute(0, 2, 1, 3)
        return attended.reshape(batch_frames, positions, channels)


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_attention_blocks: int, max_frames: int, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, num_heads, max_frames, operations) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([operations.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, operations=operations)
        self.ff_norm = operations.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, num_frames: int) -> torch.Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms):
            tokens = attention(norm(tokens), num_frames) + tokens
        return self.ff(self.ff_norm(tokens)) + tokens


class TemporalTransformer(nn.Module):
    def __init__(
        self,
        channels: int,
        num_heads: int,
        num_blocks: int,
        num_attention_blocks: int,
        max_frames: int,
        norm_num_groups: int,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.norm = operations.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.proj_in = operations.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [TemporalTransformerBlock(channels, num_heads, num_attention_blocks, max_frames, operations) for _ in range(num_blocks)]
        )
        self.proj_out = operations.Linear(channels, channels)
        # AnimateDiff starts as an identity: the residual carries the input.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """hidden_states ((B F), C, H, W), frames of a video consecutive -> same shape."""
        batch_frames, channels, height, width = hidden_states.shape
        residual = hidden_states
        tokens = self.norm(hidden_states).permute(0, 2, 3, 1).reshape(batch_frames, height * width, channels)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, num_frames)
        tokens = self.proj_out(tokens)
        return tokens.reshape(batch_frames, height, width, channels).permute(0, 3, 1, 2) + residual


class MotionModule(nn.Module):
    """Temporal mixing of a clip, optionally preceded by motion-frame features.

    `forward(hidden_states (B F, C, H, W), num_frames, motion_frames (B, M, C, H, W) or None)`:
    the M motion frames (the previous clip's last frames, as ReferenceNet features) are put in front
    along time so the clip continues them, and cut off again afterwards.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        num_blocks: int,
        num_attention_blocks: int,
        max_frames: int,
        norm_num_groups: int,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(
            channels, num_heads, num_blocks, num_attention_blocks, max_frames, norm_num_groups, operations
        )

    def forward(self, hidden_states: torch.Tensor, num_frames: int, motion_frames: torch.Tensor | None = None) -> torch.Tensor:
        if motion_frames is None:
            return self.temporal_transformer(hidden_states, num_frames)
        batch = hidden_states.shape[0] // num_frames
        num_motion = motion_frames.shape[1]
        clip = hidden_states.reshape(batch, num_frames, *hidden_states.shape[1:])
        sequence = torch.cat([motion_frames, clip], dim=1)
        mixed = self.temporal_transformer(sequence.flatten(0, 1), num_frames + num_motion)
        mixed = mixed.reshape(batch, num_frames + num_motion, *hidden_states.shape[1:])
        return mixed[:, num_motion:].flatten(0, 1)
