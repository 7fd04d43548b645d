"""The SD1.5 building blocks both UNets are made of, built from an `operations` namespace.

Every layer that holds weights is made by `operations.Linear`, `operations.Conv2d`,
`operations.GroupNorm` or `operations.LayerNorm`. The default, `torch.nn`, gives plain torch layers
(command line, Python API, training). A host that manages memory itself passes its own namespace
with the same constructors: ComfyUI's `comfy.ops.disable_weight_init` / `comfy.ops.manual_cast`,
whose layers can keep their weights on the offload device and cast them to the compute device
layer by layer, which is what lets ComfyUI load a model partially (`--lowvram`, `--novram`).

The modules compute what diffusers' `ResnetBlock2D`, `Downsample2D`, `Upsample2D`,
`TimestepEmbedding`, `Attention` (its projections) and `FeedForward(activation_fn="geglu")` compute
for SD1.5's settings, under the same parameter names, so the released checkpoint loads unchanged.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Operations = Any  # a namespace with torch.nn's Linear, Conv2d, GroupNorm and LayerNorm constructors
DEFAULT_OPERATIONS: ModuleType = nn


def activation(name: str) -> nn.Module:
    """The UNet config's `act_fn` as a module (SD1.5: silu)."""
    activations = {"silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU, "relu": nn.ReLU}
    if name not in activations:
        raise ValueError(f"unsupported activation {name!r}; choose one of {', '.join(activations)}")
    return activations[name]()


class ResnetBlock(nn.Module):
    """GroupNorm -> act -> 3x3 conv -> + time embedding -> GroupNorm -> act -> 3x3 conv, plus the
    (1x1-projected when the width changes) input, divided by `output_scale_factor`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        temb_channels: int,
        groups: int,
        eps: float,
        act_fn: str = "silu",
        output_scale_factor: float = 1.0,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        self.output_scale_factor = output_scale_factor
        self.norm1 = operations.GroupNorm(groups, in_channels, eps=eps)
        self.conv1 = operations.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_emb_proj = operations.Linear(temb_channels, out_channels)
        self.norm2 = operations.GroupNorm(groups, out_channels, eps=eps)
        self.conv2 = operations.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.nonlinearity = activation(act_fn)
        self.conv_shortcut = (
            operations.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None
        )

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """input_tensor (N, C_in, H, W), temb (N, C_t) -> (N, C_out, H, W)."""
        hidden_states = self.conv1(self.nonlinearity(self.norm1(input_tensor)))
        hidden_states = hidden_states + self.time_emb_proj(self.nonlinearity(temb))[:, :, None, None]
        hidden_states = self.conv2(self.nonlinearity(self.norm2(hidden_states)))
        if self.conv_shortcut is not None:
            input_tensor = self.conv_shortcut(input_tensor)
        return (input_tensor + hidden_states) / self.output_scale_factor


class Downsample(nn.Module):
    """Stride-2 3x3 conv (`conv`); with padding 0 the map is padded right/bottom first, as SD does."""

    def __init__(self, channels: int, out_channels: int, padding: int = 1, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.padding = padding
        self.conv = operations.Conv2d(channels, out_channels, kernel_size=3, stride=2, padding=padding)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.padding == 0:
            hidden_states = F.pad(hidden_states, (0, 1, 0, 1), mode="constant", value=0)
        return self.conv(hidden_states)


class Upsample(nn.Module):
    """Nearest-neighbour x2 (or to `output_size`) then a 3x3 conv (`conv`)."""

    def __init__(self, channels: int, out_channels: int, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.conv = operations.Conv2d(channels, out_channels, kernel_size=3, padding=1)

    def forward(self, hidden_states: torch.Tensor, output_size: Optional[Sequence[int]] = None) -> torch.Tensor:
        # Nearest upsampling of channels-last maps fails for large batches unless contiguous.
        if hidden_states.shape[0] >= 64:
            hidden_states = hidden_states.contiguous()
        if output_size is None:
            hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
        else:
            hidden_states = F.interpolate(hidden_states, size=tuple(output_size), mode="nearest")
        return self.conv(hidden_states)


class TimestepEmbedding(nn.Module):
    """Sinusoidal timestep features -> linear_1 -> SiLU -> linear_2."""

    def __init__(self, in_channels: int, time_embed_dim: int, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.linear_1 = operations.Linear(in_channels, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = operations.Linear(time_embed_dim, time_embed_dim)

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(sample)))


class Attention(nn.Module):
    """The projections of one multi-head attention: `to_q`, `to_k`, `to_v` (no bias) and `to_out`
    (a biased linear, then a dropout that is the identity at inference — kept for the key names).
    The attention itself is computed by the functions in `attention.py`.

    processor: an optional module stored as `processor` (EmoCAST's decoupled text/face attention
    keeps its extra face keys/values there, the released key layout).
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        dim_head: int,
        cross_attention_dim: Optional[int] = None,
        processor: Optional[nn.Module] = None,
        operations: Operations = DEFAULT_OPERATIONS,
    ):
        super().__init__()
        inner_dim = heads * dim_head
        key_dim = cross_attention_dim or query_dim
        self.heads = heads
        self.to_q = operations.Linear(query_dim, inner_dim, bias=False)
        self.to_k = operations.Linear(key_dim, inner_dim, bias=False)
        self.to_v = operations.Linear(key_dim, inner_dim, bias=False)
        self.to_out = nn.ModuleList([operations.Linear(inner_dim, query_dim), nn.Dropout(0.0)])
        if processor is not None:
            self.processor = processor


class GEGLU(nn.Module):
    """`proj` to twice the width, then value * GELU(gate)."""

    def __init__(self, dim_in: int, dim_out: int, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        self.proj = operations.Linear(dim_in, dim_out * 2)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states, gate = self.proj(hidden_states).chunk(2, dim=-1)
        return hidden_states * F.gelu(gate)


class FeedForward(nn.Module):
    """SD's transformer feed-forward: GEGLU to 4x the width, dropout (identity), linear back
    (`net.0.proj`, `net.2`)."""

    def __init__(self, dim: int, mult: int = 4, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        inner_dim = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner_dim, operations), nn.Dropout(0.0), operations.Linear(inner_dim, dim)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden_states = module(hidden_states)
        return hidden_states
