"""UNet levels shared by the ReferenceNet and the denoising UNet.

Feature maps and time embeddings travel frame-folded, (N, C, H, W) / (N, C_t) with
N = batch x frames (batch-major), so SD's 2D
layers (`layers.ResnetBlock`, `Downsample`, `Upsample`) run per frame exactly like upstream's
"inflated" 3D layers. Each layer of a cross-attention level runs, in order:

    resnet -> spatial transformer (+ reference features) -> audio module -> motion module

The ReferenceNet's levels have no audio or motion modules; it collects each spatial transformer's
`norm1` tokens instead (`BlockInputs.written_reference`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from .config import AudioModuleConfig, MotionModuleConfig
from .layers import DEFAULT_OPERATIONS, Downsample, Operations, ResnetBlock, Upsample
from .motion import MotionModule
from .prepared import PreparedClip
from .transformer import AudioModule, SpatialTransformer


@dataclass
class BlockInputs:
    """What every level reads in one UNet call.

    clip: the per-clip constants (`PreparedClip`): cross-attention keys/values per block, and in the
        denoiser the reference bank, motion frames, emotive audio keys/values and region masks.
    written_reference: where the ReferenceNet puts its features (block path -> tokens), or None.
    """

    clip: PreparedClip
    written_reference: Optional[dict[str, torch.Tensor]] = field(default=None)

    @property
    def num_frames(self) -> int:
        return self.clip.num_frames


@dataclass
class LevelSpec:
    """What a level is built with (the same for every level of one UNet, except the channels)."""

    temb_channels: int
    num_heads: int
    cross_attention_dim: int
    num_face_tokens: int
    norm_num_groups: int
    norm_eps: float
    act_fn: str
    level: int  # index into the region-mask pyramid (0 = full latent resolution)
    audio: Optional[AudioModuleConfig] = None  # None: no audio modules (ReferenceNet)
    motion: Optional[MotionModuleConfig] = None  # None: no motion modules at this level
    # Whether the levels without attention run their motion modules (`UpstreamBehaviour`).
    run_plain_motion_modules: bool = False
    # What the weight-holding layers are built from (see `layers.py`).
    operations: Operations = DEFAULT_OPERATIONS

    def resnet(self, in_channels: int, out_channels: int, output_scale_factor: float = 1.0) -> ResnetBlock:
        return ResnetBlock(
            in_channels=in_channels,
            out_channels=out_channels,
            temb_channels=self.temb_channels,
            groups=self.norm_num_groups,
            eps=self.norm_eps,
            act_fn=self.act_fn,
            output_scale_factor=output_scale_factor,
            operations=self.operations,
        )

    def downsample(self, channels: int, padding: int) -> Downsample:
        return Downsample(channels, channels, padding=padding, operations=self.operations)

    def upsample(self, channels: int) -> Upsample:
        return Upsample(channels, channels, operations=self.operations)

    def spatial(self, channels: int) -> SpatialTransformer:
        return SpatialTransformer(
            channels, self.num_heads, self.cross_attention_dim, self.num_face_tokens, self.norm_num_groups, self.operations
        )

    def audio_module(self, channels: int, width_source: int) -> AudioModule:
        # Upstream sizes the audio module from `width_source // heads` heads-widths, not `channels`.
        inner_dim = self.num_heads * (width_source // self.num_heads)
        return AudioModule(
            channels,
            inner_dim,
            self.num_heads,
            self.norm_num_groups,
            self.audio.audio_token_dim,
            self.audio.emotion_token_dim,
            self.audio.emotive_head_dim,
            self.operations,
        )

    def motion_module(self, channels: int) -> MotionModule:
        m = self.motion
        return MotionModule(
            channels, m.num_attention_heads, m.num_transformer_blocks, m.num_attention_blocks, m.max_frames, m.norm_num_groups,
            self.operations,
        )


class _AttentionLayers(nn.Module):
    """The spatial -> audio -> motion part of a cross-attention layer (shared by all level kinds)."""

    attentions: nn.ModuleList
    audio_modules: Optional[nn.ModuleList]
    motion_modules: Optional[nn.ModuleList]

    def _build_attention_layers(self, spec: LevelSpec, channels: Sequence[int], audio_widths: Sequence[int]) -> None:
        self.level = spec.level
        self.attentions = nn.ModuleList([spec.spatial(c) for c in channels])
        self.audio_modules = (
            nn.ModuleList([spec.audio_module(c, w) for c, w in zip(channels, audio_widths)]) if spec.audio else None
        )
        self.motion_modules = nn.ModuleList([spec.motion_module(c) for c in channels]) if spec.motion else None

    def _attention_layer(self, index: int, hidden_states: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        clip = inputs.clip
        spatial = self.attentions[index]
        key = spatial.reference_key
        hidden_states, written = spatial(hidden_states, clip.cross_attention[key], clip.reference_kv.get(key), clip.segments)
        if inputs.written_reference is not None:
            inputs.written_reference[key] = written

        if self.audio_modules is not None:
            audio = self.audio_modules[index]
            hidden_states = audio(hidden_states, clip.emotive_audio_kv[audio.condition_key], clip.region_masks[self.level],
                                  clip.region_scales, clip.frame_audio_weights)
        if self.motion_modules is not None:
            motion_frames = None
            motion_tokens = clip.motion_frames.get(key)
            if motion_tokens is not None:
                # Motion-frame tokens (B, M, H*W, C) become feature maps (B, M, C, H, W). Upstream does
                # this only in a train-mode branch; here it is the behaviour.
                _, _, height, width = hidden_states.shape
                b, m, _, c = motion_tokens.shape
                motion_frames = motion_tokens.reshape(b, m, height, width, c).permute(0, 1, 4, 2, 3)
            hidden_states = self.motion_modules[index](hidden_states, inputs.num_frames, motion_frames)
        return hidden_states


class CrossAttnDownLevel(_AttentionLayers):
    def __init__(self, spec: LevelSpec, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool, downsample_padding: int):
        super().__init__()
        layer_inputs = [in_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList([spec.resnet(c, out_channels) for c in layer_inputs])
        # Released layout: the audio module of layer i is as wide as that layer's input.
        self._build_attention_layers(spec, [out_channels] * num_layers, layer_inputs)
        self.downsamplers = (
            nn.ModuleList([spec.downsample(out_channels, downsample_padding)])
            if add_downsample
            else None
        )

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, inputs: BlockInputs):
        skips = ()
        for index, resnet in enumerate(self.resnets):
            hidden_states = self._attention_layer(index, resnet(hidden_states, temb), inputs)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class DownLevel(nn.Module):
    def __init__(self, spec: LevelSpec, in_channels: int, out_channels: int, num_layers: int, add_downsample: bool, downsample_padding: int):
        super().__init__()
        layer_inputs = [in_channels] + [out_channels] * (num_layers - 1)
        self.resnets = nn.ModuleList([spec.resnet(c, out_channels) for c in layer_inputs])
        self.motion_modules = nn.ModuleList([spec.motion_module(out_channels) for _ in layer_inputs]) if spec.motion else None
        self.run_motion_modules = spec.motion is not None and spec.run_plain_motion_modules
        self.downsamplers = (
            nn.ModuleList([spec.downsample(out_channels, downsample_padding)])
            if add_downsample
            else None
        )

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, inputs: BlockInputs):
        skips = ()
        for index, resnet in enumerate(self.resnets):
            hidden_states = resnet(hidden_states, temb)
            if self.run_motion_modules:
                hidden_states = self.motion_modules[index](hidden_states, inputs.num_frames)
            skips += (hidden_states,)
        if self.downsamplers is not None:
            hidden_states = self.downsamplers[0](hidden_states)
            skips += (hidden_states,)
        return hidden_states, skips


class CrossAttnMidLevel(_AttentionLayers):
    def __init__(self, spec: LevelSpec, channels: int, output_scale_factor: float):
        super().__init__()
        self.resnets = nn.ModuleList([spec.resnet(channels, channels, output_scale_factor) for _ in range(2)])
        self._build_attention_layers(spec, [channels], [channels])

    def forward(self, hidden_states: torch.Tensor, temb: torch.Tensor, inputs: BlockInputs):
        hidden_states = self.resnets[0](hidden_states, temb)
        hidden_states = self._attention_layer(0, hidden_states, inputs)
        return self.resnets[1](hidden_states, temb)


def _up_resnet_inputs(in_channels: int, prev_output_channels: int, out_channels: int, num_layers: int) -> list[int]:
    """Resnet input widths of an up level: previous output (or this level's) + the skip width."""
    widths = []
    for i in range(num_layers):
        skip = in_channels if i == num_layers - 1 else out_channels
        previous = prev_output_channels if i == 0 else out_channels
        widths.append(previous + skip)
    return widths


class CrossAttnUpLevel(_AttentionLayers):
    def __init__(self, spec: LevelSpec, in_channels: int, prev_output_channels: int, out_channels: int, num_layers: int, add_upsample: bool):
        super().__init__()
        widths = _up_resnet_inputs(in_channels, prev_output_channels, out_channels, num_layers)
        self.resnets = nn.ModuleList([spec.resnet(w, out_channels) for w in widths])
        # Released layout: every audio module of an up level is as wide as the level's skip input.
        self._build_attention_layers(spec, [out_channels] * num_layers, [in_channels] * num_layers)
        self.upsamplers = nn.ModuleList([spec.upsample(out_channels)]) if add_upsample else None

    def forward(self, hidden_states, skips, temb, inputs: BlockInputs, upsample_size=None):
        for index, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skips[-1 - index]], dim=1)
            hidden_states = self._attention_layer(index, resnet(hidden_states, temb), inputs)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states


class UpLevel(nn.Module):
    def __init__(self, spec: LevelSpec, in_channels: int, prev_output_channels: int, out_channels: int, num_layers: int, add_upsample: bool):
        super().__init__()
        widths = _up_resnet_inputs(in_channels, prev_output_channels, out_channels, num_layers)
        self.resnets = nn.ModuleList([spec.resnet(w, out_channels) for w in widths])
        self.motion_modules = nn.ModuleList([spec.motion_module(out_channels) for _ in widths]) if spec.motion else None
        self.run_motion_modules = spec.motion is not None and spec.run_plain_motion_modules
        self.upsamplers = nn.ModuleList([spec.upsample(out_channels)]) if add_upsample else None

    def forward(self, hidden_states, skips, temb, inputs: BlockInputs, upsample_size=None):
        for index, resnet in enumerate(self.resnets):
            hidden_states = resnet(torch.cat([hidden_states, skips[-1 - index]], dim=1), temb)
            if self.run_motion_modules:
                hidden_states = self.motion_modules[index](hidden_states, inputs.num_frames)
        if self.upsamplers is not None:
            hidden_states = self.upsamplers[0](hidden_states, upsample_size)
        return hidden_states
