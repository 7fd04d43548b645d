"""The two UNets of EmoCAST, built from an SD1.5-style config.

* `ReferenceUNet` — SD1.5's UNet without its output head; it runs once at t = 0 on the reference
  image (and the motion frames) and returns every spatial block's `norm1` tokens.
* `DenoisingUNet` — SD1.5 inflated to video: the same spatial levels, plus an audio module and an
  AnimateDiff motion module after each spatial transformer, the face locator's features added after
  `conv_in`, and the ReferenceNet's tokens read in every spatial self-attention. A clip is
  denoised with `prepare` once (everything that does not depend on the latents) and the forward
  call once per step (see `prepared.py`).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from diffusers.models.embeddings import Timesteps
from torch import nn

from .blocks import BlockInputs, CrossAttnDownLevel, CrossAttnMidLevel, CrossAttnUpLevel, DownLevel, LevelSpec, UpLevel
from .config import EmoCASTConfig
from .layers import DEFAULT_OPERATIONS, Operations, TimestepEmbedding
from .prepared import DenoiserInputs, PreparedClip, row_segments
from .reference import ReferenceNetFeatures
from .transformer import AudioModule, SpatialTransformer


def _has_attention(block_type: str) -> bool:
    if block_type.startswith("CrossAttn"):
        return True
    if block_type in ("DownBlock2D", "DownBlock3D", "UpBlock2D", "UpBlock3D"):
        return False
    raise ValueError(f"unsupported UNet block type {block_type!r}")


class _UNetLevels(nn.Module):
    """conv_in, time embedding and the down / mid / up levels common to both UNets."""

    def __init__(self, config: EmoCASTConfig, with_audio_and_motion: bool, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__()
        unet = config.unet
        channels = unet.block_out_channels
        heads = unet.heads_per_level()
        num_levels = len(channels)
        temb_channels = channels[0] * 4
        self.num_levels = num_levels
        # Set by a host that computes somewhere other than where (some of) the weights are (see `device`).
        self.execution_device: Optional[torch.device] = None
        self.conv_in = operations.Conv2d(unet.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], unet.flip_sin_to_cos, unet.freq_shift)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels, operations)

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
                run_plain_motion_modules=config.upstream.run_plain_block_motion_modules,
                operations=operations,
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

        # Each spatial transformer knows its path: the key that pairs ReferenceNet and denoiser blocks
        # (and under which its per-clip keys/values are prepared); each audio module likewise.
        for name, module in self.named_modules():
            if isinstance(module, SpatialTransformer):
                module.reference_key = f"{name}.transformer_blocks.0"
            if isinstance(module, AudioModule):
                module.condition_key = name

    def spatial_transformers(self) -> list[SpatialTransformer]:
        return [module for module in self.modules() if isinstance(module, SpatialTransformer)]

    def cross_attention_kv(self, encoder_hidden_states: torch.Tensor) -> dict:
        """(N, L_text + L_face, D) tokens -> every spatial block's text/face keys and values."""
        return {spatial.reference_key: spatial.block.cross_attention_kv(encoder_hidden_states) for spatial in self.spatial_transformers()}

    @property
    def dtype(self) -> torch.dtype:
        return self.conv_in.weight.dtype

    @property
    def device(self) -> torch.device:
        """Where the UNet computes: where its weights are, unless the host set `execution_device`
        because it keeps some weights on an offload device and casts them in layer by layer
        (ComfyUI's partial loading, with layers built from `comfy.ops`)."""
        return self.execution_device or self.conv_in.weight.device

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

    def __init__(self, config: EmoCASTConfig, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__(config, with_audio_and_motion=False, operations=operations)

    def forward(self, latents: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: Union[torch.Tensor, int] = 0) -> ReferenceNetFeatures:
        """latents (N, 4, h, w); encoder_hidden_states (N, 81, D), the text+face tokens of each image.

        Returns block path -> norm1 tokens (N, h_l * w_l, C_l) for every spatial transformer.
        """
        if encoder_hidden_states.shape[0] != latents.shape[0]:
            raise ValueError(f"{latents.shape[0]} reference images but {encoder_hidden_states.shape[0]} token rows")
        features: ReferenceNetFeatures = {}
        clip = PreparedClip(num_rows=latents.shape[0], num_frames=1, cross_attention=self.cross_attention_kv(encoder_hidden_states))
        inputs = BlockInputs(clip, written_reference=features)
        temb = self._time_embedding(timestep, latents.shape[0], latents.device)
        self._run_levels(self.conv_in(latents), temb, inputs)
        return features


class DenoisingUNet(_UNetLevels):
    """The video denoiser. `forward` predicts v for a batch of clips."""

    def __init__(self, config: EmoCASTConfig, operations: Operations = DEFAULT_OPERATIONS):
        super().__init__(config, with_audio_and_motion=True, operations=operations)
        channels = config.unet.block_out_channels
        self.conv_norm_out = operations.GroupNorm(config.unet.norm_num_groups, channels[0], eps=config.unet.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = operations.Conv2d(channels[0], config.unet.out_channels, kernel_size=3, padding=1)

    def prepare(self, inputs: DenoiserInputs) -> PreparedClip:
        """Everything the steps of one clip share (see `models/prepared.py`), once per clip.

        Under autograd (training) gradients flow through it into the projections that made it.
        """
        dtype = self.dtype
        rows, num_frames = inputs.num_rows, inputs.num_frames
        frame_rows = rows * num_frames

        def per_frame_row(tokens: torch.Tensor) -> torch.Tensor:  # (R, F, L, D) -> (R * F, L, D)
            return tokens.to(dtype).reshape(frame_rows, *tokens.shape[2:])

        if len(inputs.region_masks) != 3 or any(len(region) != self.num_levels for region in inputs.region_masks):
            raise ValueError(f"region_masks must be 3 lists (full, face, lip) of {self.num_levels} levels")
        masks = []
        for level in range(self.num_levels):
            level_masks = []
            for region in inputs.region_masks:
                mask = region[level].to(self.device, dtype).reshape(-1, region[level].shape[-1])
                if mask.shape[0] not in (1, rows):
                    raise ValueError(f"a region mask has {mask.shape[0]} rows; expected 1 or the batch's {rows}")
                level_masks.append(mask.expand(rows, -1).repeat_interleave(num_frames, dim=0))
            masks.append(tuple(level_masks))

        locator = None
        if inputs.face_locator_features is not None:
            features = inputs.face_locator_features.to(dtype).expand(-1, -1, num_frames, -1, -1)
            locator = features.transpose(1, 2).reshape(frame_rows, *features.shape[1:2], *features.shape[3:])

        audio_tokens, emotion_tokens = per_frame_row(inputs.audio_tokens), per_frame_row(inputs.emotion_tokens)
        emotive_audio_kv = {
            module.condition_key: module.block.emotive_audio_kv(audio_tokens, emotion_tokens)
            for module in self.modules() if isinstance(module, AudioModule)
        }

        reference_kv, motion_frames, segments = {}, {}, ()
        if inputs.reference_tokens is not None:
            reference_rows = [bool(row) for row in inputs.reference_rows]
            if len(reference_rows) != rows:
                raise ValueError(f"reference_rows has {len(reference_rows)} entries for a batch of {rows} rows")
            segments = row_segments(reference_rows, num_frames)
            # The frame rows that read the reference, in bank order, and the source each one reads.
            reading = [r * num_frames + f for r in range(rows) if reference_rows[r] for f in range(num_frames)]
            if reading:
                sources = inputs.reference_source.to(self.device)[torch.tensor(reading, dtype=torch.long, device=self.device)]
                for spatial in self.spatial_transformers():
                    key = spatial.reference_key
                    # Projected once per source image, then laid out per reading frame row.
                    source_key, source_value = spatial.block.reference_kv(inputs.reference_tokens[key].to(self.device, dtype))
                    reference_kv[key] = (source_key[sources], source_value[sources])
        if inputs.motion_tokens is not None:
            motion_frames = {key: tokens.to(self.device, dtype) for key, tokens in inputs.motion_tokens.items() if tokens.shape[1] > 0}

        return PreparedClip(
            num_rows=rows,
            num_frames=num_frames,
            cross_attention=self.cross_attention_kv(per_frame_row(inputs.text_face_tokens)),
            reference_kv=reference_kv,
            segments=segments if reference_kv else (),
            motion_frames=motion_frames,
            emotive_audio_kv=emotive_audio_kv,
            region_masks=masks,
            region_scales=tuple(float(scale) for scale in inputs.region_scales),
            face_locator_features=locator,
            # The same frame weights for every row, laid out per frame row (rows are batch-major).
            frame_audio_weights=None if inputs.frame_audio_weights is None
            else inputs.frame_audio_weights.to(self.device, dtype).repeat(rows).view(frame_rows, 1, 1),
        )

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int], clip: PreparedClip) -> torch.Tensor:
        """Predict the v-target of each row: sample (R, 4, F, h, w) noisy latents, timestep a
        scalar or (R,), clip from `prepare`. Returns (R, 4, F, h, w).

        Only work that depends on the latents happens here; no host synchronisation.
        """
        batch, _, num_frames, height, width = sample.shape
        if batch != clip.num_rows or num_frames != clip.num_frames:
            raise ValueError(
                f"latents have {batch} rows of {num_frames} frames; the prepared clip has {clip.num_rows} of {clip.num_frames}"
            )
        rows = batch * num_frames
        temb = self._time_embedding(timestep, batch, sample.device).repeat_interleave(num_frames, dim=0)
        hidden_states = self.conv_in(sample.transpose(1, 2).reshape(rows, sample.shape[1], height, width))
        if clip.face_locator_features is not None:
            hidden_states = hidden_states + clip.face_locator_features
        hidden_states = self._run_levels(hidden_states, temb, BlockInputs(clip))
        hidden_states = self.conv_out(self.conv_act(self.conv_norm_out(hidden_states)))
        return hidden_states.reshape(batch, num_frames, *hidden_states.shape[1:]).transpose(1, 2)
