"""The one description of the EmoCAST network's shape.

`EmoCASTConfig` holds every constructor argument of the network: the SD1.5-style UNet config that
both UNets are built from, the AnimateDiff motion-module and audio-module settings, the projection
heads, and the named switches for upstream behaviours that the released weights depend on.

`EmoCASTConfig.sd15()` is the released model's shape; `EmoCASTConfig.from_upstream(...)` reads the
configuration format of the official code (an SD `unet/config.json` plus `unet_additional_kwargs`
and the projection arguments), which is also how the official tiny fixture describes itself.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

# The SD1.5 `unet/config.json` (the fields the network uses). Both UNets of the released
# checkpoint were built from it.
SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


@dataclass
class UNetConfig:
    """The subset of diffusers' `UNet2DConditionModel` config that EmoCAST's UNets use.

    `attention_head_dim` keeps diffusers' legacy meaning for SD1.5: it is the number of heads.
    """

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = tuple(SD15_UNET_CONFIG["down_block_types"])
    up_block_types: tuple[str, ...] = tuple(SD15_UNET_CONFIG["up_block_types"])
    attention_head_dim: int | tuple[int, ...] = 8
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    act_fn: str = "silu"
    sample_size: int = 64

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "UNetConfig":
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in config.items() if key in known}
        for key in ("block_out_channels", "down_block_types", "up_block_types"):
            if key in values:
                values[key] = tuple(values[key])
        if isinstance(values.get("attention_head_dim"), list):
            values["attention_head_dim"] = tuple(values["attention_head_dim"])
        unsupported = [key for key in ("center_input_sample",) if config.get(key)]
        if unsupported:
            raise ValueError(f"unsupported UNet config options: {unsupported}")
        return cls(**values)

    def heads_per_level(self) -> tuple[int, ...]:
        if isinstance(self.attention_head_dim, int):
            return (self.attention_head_dim,) * len(self.block_out_channels)
        return tuple(self.attention_head_dim)


@dataclass
class MotionModuleConfig:
    """AnimateDiff v2 ("Vanilla") temporal modules of the denoising UNet."""

    num_attention_heads: int = 8
    num_transformer_blocks: int = 1
    num_attention_blocks: int = 2  # two "Temporal_Self" attentions per block
    max_frames: int = 32  # length of the sinusoidal position table (`pos_encoder.pe`)
    resolutions: tuple[int, ...] = (1, 2, 4, 8)  # downsampling factors that get a motion module
    mid_block: bool = True
    norm_num_groups: int = 32


@dataclass
class AudioModuleConfig:
    """Hallo's hierarchical audio attention with EmoCAST's emotive audio attention."""

    audio_token_dim: int = 768  # width of the projected audio tokens
    emotion_token_dim: int = 768  # width of the CLIP text tokens that query the audio
    emotive_head_dim: int = 80  # `attn_audioemo` head width (hard-coded upstream)


@dataclass
class UpstreamBehaviour:
    """Switches for upstream behaviours that the released weights were trained and evaluated with.

    The defaults reproduce the official code exactly. The alternatives are documented fixes of
    plain defects; they change results and are opt-in.
    """

    # The official `ReferenceAttentionControl.update` copies the reference bank to float16 even in a
    # float32 run (the features are promoted back when concatenated). None keeps the compute dtype.
    reference_bank_dtype: Optional[str] = "float16"
    # Upstream hands the ReferenceNet `[uncond; cond]` text/face tokens tiled over its batch of
    # `[ref, m1, m2] * 2` images, so image i sees row i % 2 ("tiled"). "per_half" gives each CFG
    # half its own tokens, as was evidently intended.
    reference_token_layout: str = "tiled"
    # Upstream spreads the `[uncond; cond]` reference features over the frame rows by tiling, so
    # every other conditional frame reads the reference computed with the unconditional tokens.
    # False gives every frame its own branch's reference.
    reference_tiled_over_frames: bool = True
    # Upstream never runs the motion modules of the plain (attention-free) down/up blocks at
    # inference: a train-mode branch skips them (their weights are still in net.pth).
    run_plain_block_motion_modules: bool = False

    def __post_init__(self):
        if self.reference_bank_dtype not in (None, "float16", "bfloat16", "float32"):
            raise ValueError(f"reference_bank_dtype must be float16/bfloat16/float32/None, got {self.reference_bank_dtype!r}")
        if self.reference_token_layout not in ("tiled", "per_half"):
            raise ValueError(f"reference_token_layout must be 'tiled' or 'per_half', got {self.reference_token_layout!r}")


@dataclass
class EmoCASTConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    motion: MotionModuleConfig = field(default_factory=MotionModuleConfig)
    audio: AudioModuleConfig = field(default_factory=AudioModuleConfig)
    # FaceLocator(conditioning_embedding_channels, conditioning_channels, block_out_channels)
    face_locator_block_out_channels: tuple[int, ...] = (16, 32, 64, 128)
    face_locator_conditioning_channels: int = 3
    # ImageProjModel: ArcFace embedding -> face tokens
    face_embedding_dim: int = 512
    num_face_tokens: int = 4
    # AudioProjModel: (window, wav2vec layers, wav2vec width) -> audio tokens
    audio_window: int = 5
    audio_layers: int = 12
    audio_channels: int = 768
    audio_intermediate_dim: int = 512
    num_audio_tokens: int = 32
    num_text_tokens: int = 77
    upstream: UpstreamBehaviour = field(default_factory=UpstreamBehaviour)

    @property
    def token_dim(self) -> int:
        """Width of text, face and audio tokens (the UNets' cross-attention width)."""
        return self.unet.cross_attention_dim

    @classmethod
    def sd15(cls, **upstream_overrides: Any) -> "EmoCASTConfig":
        """The released EmoCAST network (SD1.5 UNets, 2.49 B parameters)."""
        return cls(unet=UNetConfig.from_dict(SD15_UNET_CONFIG), upstream=UpstreamBehaviour(**upstream_overrides))

    @classmethod
    def from_upstream(
        cls,
        unet_config: dict[str, Any],
        unet_additional_kwargs: dict[str, Any],
        face_locator: dict[str, Any],
        image_proj: dict[str, Any],
        audio_proj: dict[str, Any],
    ) -> "EmoCASTConfig":
        """Build from the official code's configuration pieces (see `from_upstream_file`)."""
        extra = unet_additional_kwargs
        if not extra.get("use_motion_module", True) or not extra.get("use_audio_module", True):
            raise ValueError("EmoCAST needs both motion and audio modules")
        if extra.get("unet_use_temporal_attention") or extra.get("unet_use_cross_frame_attention"):
            raise ValueError("temporal / cross-frame attention in spatial blocks is not part of EmoCAST")
        motion_kwargs = extra.get("motion_module_kwargs", {})
        block_types = motion_kwargs.get("attention_block_types", ["Temporal_Self", "Temporal_Self"])
        if any(kind != "Temporal_Self" for kind in block_types):
            raise ValueError(f"only Temporal_Self motion attention is supported, got {block_types}")
        motion = MotionModuleConfig(
            num_attention_heads=motion_kwargs.get("num_attention_heads", 8),
            num_transformer_blocks=motion_kwargs.get("num_transformer_block", 1),
            num_attention_blocks=len(block_types),
            max_frames=motion_kwargs.get("temporal_position_encoding_max_len", 32),
            resolutions=tuple(extra.get("motion_module_resolutions", (1, 2, 4, 8))),
            mid_block=extra.get("motion_module_mid_block", True),
        )
        if extra.get("motion_module_decoder_only"):
            raise ValueError("decoder-only motion modules are not part of EmoCAST")
        unet = UNetConfig.from_dict(unet_config)
        if int(image_proj.get("cross_attention_dim", unet.cross_attention_dim)) != unet.cross_attention_dim:
            raise ValueError("image projection width must equal the UNet cross-attention width")
        return cls(
            unet=unet,
            motion=motion,
            audio=AudioModuleConfig(audio_token_dim=extra.get("audio_attention_dim", 768)),
            face_locator_block_out_channels=tuple(face_locator.get("block_out_channels", (16, 32, 64, 128))),
            face_locator_conditioning_channels=face_locator.get("conditioning_channels", 3),
            face_embedding_dim=image_proj.get("clip_embeddings_dim", 512),
            num_face_tokens=image_proj.get("clip_extra_context_tokens", 4),
            audio_window=audio_proj.get("seq_len", 5),
            audio_layers=audio_proj.get("blocks", 12),
            audio_channels=audio_proj.get("channels", 768),
            audio_intermediate_dim=audio_proj.get("intermediate_dim", 512),
            num_audio_tokens=audio_proj.get("context_tokens", 32),
        )

    @classmethod
    def from_upstream_file(cls, path: str | Path) -> "EmoCASTConfig":
        """Read a JSON file holding `unet_config`, `unet_additional_kwargs`, `face_locator`,
        `image_proj` and `audio_proj` (the layout of the official fixture's `tiny_config.json`)."""
        data = json.loads(Path(path).read_text())
        return cls.from_upstream(
            data["unet_config"], data["unet_additional_kwargs"], data["face_locator"], data["image_proj"], data["audio_proj"]
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmoCASTConfig":
        data = copy.deepcopy(data)
        motion = data.pop("motion", {})
        if "resolutions" in motion:
            motion["resolutions"] = tuple(motion["resolutions"])
        return cls(
            unet=UNetConfig.from_dict(data.pop("unet", {})),
            motion=MotionModuleConfig(**motion),
            audio=AudioModuleConfig(**data.pop("audio", {})),
            upstream=UpstreamBehaviour(**data.pop("upstream", {})),
            **{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()},
        )

    def with_upstream(self, **changes: Any) -> "EmoCASTConfig":
        """A copy with some `UpstreamBehaviour` switches changed."""
        new = copy.deepcopy(self)
        new.upstream = UpstreamBehaviour(**{**asdict(self.upstream), **changes})
        return new
