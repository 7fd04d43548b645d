"""The two UNets of EmoCAST, built from an SD1.5-style config.

* `ReferenceUNet` — SD1.5's UNet without its output head; it runs once at t = 0 on the reference
  image (and the motion frames) and returns every spatial block's `norm1` tokens.
* `DenoisingUNet` — SD1.5 inflated to video: the same spatial levels, plus an audio module and an
  AnimateDiff motion module after each spatial transformer, the face locator's features added after
  `conv_in`, and the ReferenceNet's tokens read in every spatial self-attention.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from .blocks import BlockInputs, CrossAttnDownLevel, CrossAttnMidLevel, CrossAttnUpLevel, DownLevel, LevelSpec, UpLevel
from .config import EmoCASTConfig
from .reference import DenoiserReference, ReferenceNetFeatures
from .transformer import SpatialTransformer


def _has_attention(block_type: str) -> bool:
    if block_type.startswith("CrossAttn"):
        return True
    if block_type in ("DownBlock2D", "DownBlock3D", "UpBlock2D", "UpBlock3D"):
        return False
    raise ValueError(f"unsupported UNet block type {block_type!r}")


class _UNetLevels(nn.Module):
    """conv_in, time embedding and the down / mid / up levels common to both UNets."""

    def __init__(self, config: EmoCASTConfig, with_audio_and_motion: bool):
        super().__init__()
        unet = config.unet
        channels = unet.block_out_channels
        heads = unet.heads_per_level()
        num_levels = len(channels)
        temb_channels = channels[0] * 4
        self.num_levels = num_levels
        self.conv_in = nn.Conv2d(unet.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], unet.flip_sin_to_cos, unet.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        def spec(level: int, num_heads: int, downsampling: int) -> LevelSpec:
            with_motion = with_audio_and_motion and downsampling in config.motion.resolutions
            return LevelSpec(
                temb_channels=temb_channels,
                num_heads=num_heads,
                cross_attention_dim=unet.cross_attention_dim,
                num_face_tokens=config.num_face_tokens,
                norm_num_groups=unet.norm_num_groups,
                norm_eps=unet.norm_eps,
                act_fn=unet.act_fn,
                level=level,
                audio=config.audio if with_audio_and_motion else None,
                motion=config.motion if with_motion else None,
            )

        self.down_blocks = nn.ModuleList()
        out_channels = channels[0]
        for i, block_type in enumerate(unet.down_block_types):
            in_channels, out_channels = out_channels, channels[i]
            level_class = CrossAttnDownLevel if _has_attention(block_type) else DownLevel
            self.down_blocks.append(
                level_class(spec(i, heads[i], 2**i), in_channels, out_channels, unet.layers_per_block, i < num_levels - 1, unet.downsample_padding)
            )

        mid_spec = spec(num_levels - 1, heads[-1], 2 ** (num_levels - 1))
        if not config.motion.mid_block:
            mid_spec.motion = None
        self.mid_block = CrossAttnMidLevel(mid_spec, channels[-1], unet.mid_block_scale_factor)

        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(channels))
        reversed_heads = list(reversed(heads))
        out_channels = reversed_channels[0]
        for i, block_type in enumerate(unet.up_block_types):
            prev_output, out_channels = out_channels, reversed_channels[i]
            skip_channels = reversed_channels[min(i + 1, num_levels - 1)]
            level = num_levels - 1 - i
            level_class = CrossAttnUpLevel if _has_attention(block_type) else UpLevel
            self.up_blocks.append(
                level_class(spec(level, reversed_heads[i], 2**level), skip_channels, prev_output, out_channels, unet.layers_per_block + 1, i < num_levels - 1)
            )

        # Each spatial transformer knows its path: the key that pairs ReferenceNet and denoiser blocks.
        for name, module in self.named_modules():
            if isinstance(module, SpatialTransformer):
                module.reference_key = f"{name}.transformer_blocks.0"

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv_in.weight.device

    def _time_embedding(self, timestep: Union[torch.Tensor, float, int], batch: int, device: torch.device) -> torch.Tensor:
        timesteps = torch.as_tensor(timestep, device=device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        timesteps = timesteps.expand(batch)
        return self.time_embedding(self.time_proj(timesteps).to(self.dtype))

    def _run_levels(self, hidden_states: torch.Tensor, temb: torch.Tensor, inputs: BlockInputs) -> torch.Tensor:
        """hidden_states (N, C0, h, w) after conv_in -> last up level's output (N, C0, h, w)."""
        skips = (hidden_states,)
        for block in self.down_blocks:
            hidden_states, level_skips = block(hidden_states, temb, inputs)
            skips += level_skips
        hidden_states = self.mid_block(hidden_states, temb, inputs)
        for i, block in enumerate(self.up_blocks):
            level_skips = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            # Latents whose size is not a multiple of 2^levels need explicit upsample sizes.
            upsample_size = skips[-1].shape[2:] if i < len(self.up_blocks) - 1 else None
            hidden_states = block(hidden_states, level_skips, temb, inputs, upsample_size)
        return hidden_states


class ReferenceUNet(_UNetLevels):
    """SD1.5's UNet used as a feature extractor for the reference image (no output head)."""

    def __init__(self, config: EmoCASTConfig):
        super().__init__(config, with_audio_and_motion=False)

    def forward(self, latents: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: Union[torch.Tensor, int] = 0) -> ReferenceNetFeatures:
        """latents (N, 4, h, w); encoder_hidden_states (N, 81, D), the text+face tokens of each image.

        Returns block path -> norm1 tokens (N, h_l * w_l, C_l) for every spatial transformer.
        """
        if encoder_hidden_states.shape[0] != latents.shape[0]:
            raise ValueError(f"{latents.shape[0]} reference images but {encoder_hidden_states.shape[0]} token rows")
        features: ReferenceNetFeatures = {}
        inputs = BlockInputs(num_frames=1, encoder_hidden_states=encoder_hidden_states, written_reference=features)
        temb = self._time_embedding(timestep, latents.shape[0], latents.device)
        self._run_levels(self.conv_in(latents), temb, inputs)
        return features


class DenoisingUNet(_UNetLevels):
    """The video denoiser. `forward` predicts v for a batch of clips."""

    def __init__(self, config: EmoCASTConfig):
        super().__init__(config, with_audio_and_motion=True)
        channels = config.unet.block_out_channels
        self.conv_norm_out = nn.GroupNorm(config.unet.norm_num_groups, channels[0], eps=config.unet.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], config.unet.out_channels, kernel_size=3, padding=1)
        self.run_plain_motion_modules = config.upstream.run_plain_block_motion_modules

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float, int],
        encoder_hidden_states: torch.Tensor,
        audio_tokens: torch.Tensor,
        emotion_tokens: torch.Tensor,
        region_masks: Sequence[Sequence[torch.Tensor]],
        face_locator_features: Optional[torch.Tensor] = None,
        reference: Optional[DenoiserReference] = None,
        region_scales: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> torch.Tensor:
        """Predict the v-target of each clip.

        sample: (B, 4, F, h, w) noisy latents.
        encoder_hidden_states: (B, 81, D) text + face tokens of each batch row, or (B, F, 81, D)
            per frame (an emotion that changes within the clip).
        audio_tokens: (B, F, 32, D) projected audio tokens per frame.
        emotion_tokens: (B, F, 77, D) or (B, 77, D) CLIP tokens that query the audio (per frame).
        region_masks: (full, face, lip), each a list over UNet levels of (B*F or 1, h_l * w_l) masks.
        face_locator_features: (B, C0, F, h, w), added after conv_in.
        reference: ReferenceNet tokens per batch row (see `DenoiserReference`).
        region_scales: [pose, face, lip] weights of the audio branches.
        Returns (B, 4, F, h, w).
        """
        batch, _, num_frames, height, width = sample.shape
        rows = batch * num_frames
        fold = lambda x: x.transpose(1, 2).reshape(rows, *x.shape[1:2], *x.shape[3:])  # noqa: E731  (B,C,F,..)->(BF,C,..)

        if emotion_tokens.ndim == 3:
            emotion_tokens = emotion_tokens[:, None].expand(-1, num_frames, -1, -1)
        masks = [[self._rows(mask, rows) for mask in region] for region in region_masks]
        if len(masks) != 3 or any(len(region) != self.num_levels for region in masks):
            raise ValueError(f"region_masks must be 3 lists (full, face, lip) of {self.num_levels} levels")
        inputs = BlockInputs(
            num_frames=num_frames,
            encoder_hidden_states=(
                encoder_hidden_states.reshape(rows, *encoder_hidden_states.shape[2:])
                if encoder_hidden_states.ndim == 4
                else encoder_hidden_states.repeat_interleave(num_frames, dim=0)
            ),
            audio_tokens=audio_tokens.reshape(rows, *audio_tokens.shape[2:]),
            emotion_tokens=emotion_tokens.reshape(rows, *emotion_tokens.shape[2:]),
            region_masks=masks,
            region_scales=tuple(region_scales),
            reference=reference,
            run_plain_motion_modules=self.run_plain_motion_modules,
        )
        temb = self._time_embedding(timestep, batch, sample.device).repeat_interleave(num_frames, dim=0)
        hidden_states = self.conv_in(fold(sample))
        if face_locator_features is not None:
            hidden_states = hidden_states + fold(face_locator_features)
        hidden_states = self._run_levels(hidden_states, temb, inputs)
        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        return hidden_states.reshape(batch, num_frames, *hidden_states.shape[1:]).transpose(1, 2)

    @staticmethod
    def _rows(mask: torch.Tensor, rows: int) -> torch.Tensor:
        mask = mask.reshape(-1, mask.shape[-1])
        if mask.shape[0] == rows:
            return mask
        if mask.shape[0] == 1:
            return mask.expand(rows, -1)
        raise ValueError(f"a region mask has {mask.shape[0]} rows; expected 1 or batch x frames = {rows}")
