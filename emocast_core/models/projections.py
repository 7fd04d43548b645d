"""Small heads that turn conditions into what the UNets consume.

* `FaceLocator` — face-region mask (B, 3, F, H, W) -> features added after the denoiser's conv_in.
* `ImageProjModel` — 512-d ArcFace identity embedding -> 4 face tokens.
* `AudioProjModel` — wav2vec windows (B, F, 5, 12, 768) -> 32 audio tokens per frame.

Attribute names follow the released checkpoint (`conv_in`, `blocks.N`, `conv_out`, `proj`, `norm`,
`proj1..3`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DEFAULT_OPERATIONS, Operations


class FaceLocator(nn.Module):
    """Per-frame conv stack; its stride-2 convs match the VAE's downsampling, its last conv starts at
    zero so a fresh locator adds nothing."""

    def __init__(
        self,
        conditioning_embedding_channels: int,
        conditioning_channels: int = 3,
        block_out_channels: tuple[int, ...] = (16, 32, 64, 128),
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.conv_in = operations.Conv2d(conditioning_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.blocks = nn.ModuleList()
        for channels_in, channels_out in zip(block_out_channels[:-1], block_out_channels[1:]):
            self.blocks.append(operations.Conv2d(channels_in, channels_in, kernel_size=3, padding=1))
            self.blocks.append(operations.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, stride=2))
        self.conv_out = operations.Conv2d(block_out_channels[-1], conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, conditioning: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) or (B, C, H, W) -> (B, C0, F, H/8, W/8) or (B, C0, H/8, W/8)."""
        video = conditioning.ndim == 5
        if video:
            batch, channels, frames, height, width = conditioning.shape
            conditioning = conditioning.transpose(1, 2).reshape(batch * frames, channels, height, width)
        embedding = F.silu(self.conv_in(conditioning))
        for block in self.blocks:
            embedding = F.silu(block(embedding))
        embedding = self.conv_out(embedding)
        if video:
            embedding = embedding.reshape(batch, frames, *embedding.shape[1:]).transpose(1, 2)
        return embedding


class ImageProjModel(nn.Module):
    def __init__(
        self,
        cross_attention_dim: int = 768,
        clip_embeddings_dim: int = 512,
        clip_extra_context_tokens: int = 4,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.num_tokens = clip_extra_context_tokens
        self.proj = operations.Linear(clip_embeddings_dim, clip_extra_context_tokens * cross_attention_dim)
        self.norm = operations.LayerNorm(cross_attention_dim)

    def forward(self, face_embedding: torch.Tensor) -> torch.Tensor:
        """(B, 512) -> (B, 4, D)."""
        tokens = self.proj(face_embedding).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(tokens)


class AudioProjModel(nn.Module):
    def __init__(
        self,
        seq_len: int = 5,
        blocks: int = 12,
        channels: int = 768,
        intermediate_dim: int = 512,
        output_dim: int = 768,
        context_tokens: int = 32,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.input_dim = seq_len * blocks * channels
        self.context_tokens = context_tokens
        self.output_dim = output_dim
        self.proj1 = operations.Linear(self.input_dim, intermediate_dim)
        self.proj2 = operations.Linear(intermediate_dim, intermediate_dim)
        self.proj3 = operations.Linear(intermediate_dim, context_tokens * output_dim)
        self.norm = operations.LayerNorm(output_dim)

    def forward(self, audio_windows: torch.Tensor) -> torch.Tensor:
        """(B, F, window, layers, channels) -> (B, F, 32, D)."""
        batch, frames = audio_windows.shape[:2]
        flat = audio_windows.reshape(batch * frames, -1)
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"audio windows hold {flat.shape[1]} values per frame; this model expects {self.input_dim}")
        hidden = torch.relu(self.proj2(torch.relu(self.proj1(flat))))
        tokens = self.norm(self.proj3(hidden).reshape(batch * frames, self.context_tokens, self.output_dim))
        return tokens.reshape(batch, frames, self.context_tokens, self.output_dim)
