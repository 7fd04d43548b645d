"""The training configuration: one YAML/JSON file per stage run.

`TrainingConfig.from_file(path)` reads a YAML (`.yaml`/`.yml`) or JSON file whose top-level keys are
the sections below; every section and every field is optional except `data.root` and
`output_dir`. Unknown keys are an error (a typo should not silently train with a default).
Relative paths are taken from the current working directory (as in Hallo's configs: run from the
folder that holds `pretrained_models/`) and made absolute when the file is read.

docs/training.md explains every field; configs/training/*.yaml are complete examples.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

STAGE_NAMES = ("appearance", "motion", "lip_sync", "emotion")


class ConfigError(ValueError):
    """The training config is invalid; the message names the field."""


@dataclass
class ModelSection:
    """What network to train and the frozen helper models.

    architecture: "sd15" (the released shape), a path to an upstream-style JSON (`tiny_config.json`
        layout: `unet_config`, `unet_additional_kwargs`, ...) or to an `EmoCASTConfig.to_dict()` JSON,
        or an inline `EmoCASTConfig.to_dict()` mapping.
    init_net: EmoCAST weights to start from (released `net.pth`, a converted `.safetensors`, or a
        previous stage's export). Loaded before `init_sd15_unet` / `init_motion_module` are ignored.
    init_net_strict: refuse an `init_net` whose keys differ from the network's.
    init_sd15_unet: an SD1.5 `unet/` diffusers folder; its weights go into both UNets' spatial layers.
    init_motion_module: an AnimateDiff motion checkpoint (mm_sd_v15_v2.ckpt); its keys match the
        denoiser's `*.motion_modules.*` names.
    vae: diffusers `AutoencoderKL` folder (sd-vae-ft-mse).
    text_encoder: CLIP-L text encoder (HF folder or a single clip_l.safetensors; see
        `EmotionTextEncoder.from_pretrained`); text_tokenizer: its tokenizer folder when not found
        beside it.
    """

    architecture: Union[str, dict] = "sd15"
    init_net: Optional[str] = None
    init_net_strict: bool = True
    init_sd15_unet: Optional[str] = None
    init_motion_module: Optional[str] = None
    vae: Optional[str] = None
    text_encoder: Optional[str] = None
    text_tokenizer: Optional[str] = None


@dataclass
class DataSection:
    """root: a folder written by `dataset build` (index.jsonl + shards/).
    num_frames: target frames per sample (1 = single frames, stage "appearance").
    num_motion_frames: preceding frames given as motion frames (0 in the appearance stage).
    sample_margin: minimum distance in frames between the reference frame and the target frames.
    audio_margin: wav2vec context frames on each side of a frame (upstream 2 -> 5-frame windows).
    caption_choice: "first" uses each clip's main caption; "random" draws among its alternatives.
    num_workers: DataLoader worker processes.
    """

    root: str = ""
    num_frames: int = 14
    num_motion_frames: int = 2
    sample_margin: int = 30
    audio_margin: int = 2
    caption_choice: str = "random"
    num_workers: int = 2


@dataclass
class StageSection:
    """name: one of "appearance", "motion", "lip_sync", "emotion" (docs/training.md, strategy 2).
    trainable / frozen: glob patterns over parameter names (`net.pth` key names) that replace the
        stage's default trainable set / remove parameters from it.
    lip_loss_weight / face_loss_weight: extra loss weight inside the lip / face (expression) region:
        the per-pixel weight is 1 + w_lip * lip_mask + w_face * face_mask at latent resolution.
    """

    name: str = "motion"
    trainable: Optional[list] = None
    frozen: list = field(default_factory=list)
    lip_loss_weight: Optional[float] = None
    face_loss_weight: Optional[float] = None


@dataclass
class SamplingSection:
    """Emotion-aware sampling (docs/training.md, strategy 1).

    emotion_balance: 0 samples clips uniformly, 1 makes every emotion equally likely (power on the
        inverse class frequency in between).
    intensity_balance: the same for the intensity levels inside each emotion.
    reference_policy: "different_expression" draws references whose expression differs from the
        target's; "random" draws any frame at least `data.sample_margin` away (Hallo).
    cross_clip_probability: with "different_expression", the chance of taking the reference from
        another clip of the same speaker with a different emotion label, when one exists.
    expression_quantile: with "different_expression", the reference is drawn among the frames whose
        expression distance to the target is in the top `expression_quantile` fraction.
    epoch_size: samples per sampler epoch (0 = the number of clips).
    """

    emotion_balance: float = 1.0
    intensity_balance: float = 1.0
    reference_policy: str = "different_expression"
    cross_clip_probability: float = 0.5
    expression_quantile: float = 0.5
    epoch_size: int = 0


@dataclass
class DropoutSection:
    """Per-sample probabilities of dropping conditions so that guidance works at inference.

    reference: no reference tokens in self-attention; face: zero identity embedding; audio: zero
    audio tokens; text: the emotion text becomes "" (CLIP of the empty string) everywhere;
    motion_frames: the motion frames become the reference image (how the first clip starts);
    all: every condition at once, exactly the unconditional branch of the sampler (reference, face
    embedding, face locator, text and audio).
    """

    reference: float = 0.05
    face: float = 0.05
    audio: float = 0.05
    text: float = 0.05
    motion_frames: float = 0.05
    all: float = 0.05


@dataclass
class NoiseSection:
    """The training noise schedule and loss weighting (DDPM, v-prediction, zero-terminal SNR)."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "linear"
    noise_offset: float = 0.05
    min_snr_gamma: Optional[float] = 5.0
    # Largest standard deviation of Gaussian noise added to the motion frames' latents (per sample,
    # drawn uniformly from [0, motion_frame_noise]; 0 = off). At inference every clip after the first
    # continues from frames the network made itself, with their errors; clean motion frames in
    # training teach it to copy them, so errors pile up clip after clip. Noisy ones teach it to take
    # appearance from the reference and only motion from them.
    motion_frame_noise: float = 0.0


@dataclass
class OptimizerSection:
    learning_rate: float = 1e-5
    scale_lr: bool = False
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    use_8bit_adam: bool = False
    max_grad_norm: float = 1.0


@dataclass
class TrainSection:
    """batch_size: samples per device per micro-step. max_steps: optimizer steps of this run.
    mixed_precision: "no", "fp16" or "bf16"; null takes it from `accelerate launch --mixed_precision`
        / the accelerate config (default "no").
    cast_frozen_weights: keep frozen weights in the mixed-precision dtype (saves memory; set False
        for FSDP, which needs one dtype per flattened parameter group).
    gradient_checkpointing: recompute transformer/resnet activations in the backward pass.
    find_unused_parameters: DDP option; needed because some ReferenceNet layers feed no loss.
    """

    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_steps: int = 30000
    mixed_precision: Optional[str] = None
    cast_frozen_weights: bool = True
    gradient_checkpointing: bool = False
    find_unused_parameters: bool = True
    log_every: int = 10


@dataclass
class EMASection:
    enabled: bool = False
    decay: float = 0.9999
    use_for_export: bool = True


@dataclass
class CheckpointSection:
    """every: steps between resumable checkpoints (and `net.pth` exports). keep: checkpoints kept.
    export_dtype: dtype of exported `net.pth` / `net.safetensors` ("fp16" as released, "fp32", "bf16").
    resume: "latest" continues from the newest complete checkpoint in output_dir, "none" starts
        afresh, or a path to a checkpoint folder.
    """

    every: int = 1000
    keep: int = 3
    export_dtype: str = "fp16"
    resume: str = "latest"


@dataclass
class ValidationSection:
    """every: steps between validation renders (0 = never). clips: dataset clip ids to render (empty:
    the first `num_clips` clips). prompts: emotion texts or preset names (empty: each clip's caption).
    num_frames / num_inference_steps / guidance_scale / clip_length: sampler settings."""

    every: int = 0
    clips: list = field(default_factory=list)
    num_clips: int = 1
    prompts: list = field(default_factory=list)
    num_frames: int = 32
    num_inference_steps: int = 25
    guidance_scale: float = 3.5
    clip_length: int = 16
    seed: int = 42


@dataclass
class TrainingConfig:
    output_dir: str = ""
    seed: int = 42
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    stage: StageSection = field(default_factory=StageSection)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    dropout: DropoutSection = field(default_factory=DropoutSection)
    noise: NoiseSection = field(default_factory=NoiseSection)
    optimizer: OptimizerSection = field(default_factory=OptimizerSection)
    train: TrainSection = field(default_factory=TrainSection)
    ema: EMASection = field(default_factory=EMASection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.stage.name not in STAGE_NAMES:
            raise ConfigError(f"stage.name must be one of {STAGE_NAMES}, got {self.stage.name!r}")
        if self.data.num_frames < 1:
            raise ConfigError("data.num_frames must be at least 1")
        if self.data.num_motion_frames < 0:
            raise ConfigError("data.num_motion_frames must be >= 0")
        if self.data.caption_choice not in ("first", "random"):
            raise ConfigError(f"data.caption_choice must be 'first' or 'random', got {self.data.caption_choice!r}")
        if self.sampling.reference_policy not in ("different_expression", "random"):
            raise ConfigError(
                f"sampling.reference_policy must be 'different_expression' or 'random', got {self.sampling.reference_policy!r}"
            )
        for name in ("emotion_balance", "intensity_balance", "cross_clip_probability"):
            value = getattr(self.sampling, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"sampling.{name} must be in [0, 1], got {value}")
        if not 0.0 < self.sampling.expression_quantile <= 1.0:
            raise ConfigError(f"sampling.expression_quantile must be in (0, 1], got {self.sampling.expression_quantile}")
        for item in dataclasses.fields(self.dropout):
            value = getattr(self.dropout, item.name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"dropout.{item.name} must be in [0, 1], got {value}")
        if self.train.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ConfigError(f"train.mixed_precision must be 'no', 'fp16', 'bf16' or null, got {self.train.mixed_precision!r}")
        if self.train.batch_size < 1 or self.train.gradient_accumulation_steps < 1 or self.train.max_steps < 0:
            raise ConfigError("train.batch_size and train.gradient_accumulation_steps must be >= 1, train.max_steps >= 0")
        if self.checkpoint.export_dtype not in ("fp16", "bf16", "fp32"):
            raise ConfigError(f"checkpoint.export_dtype must be fp16, bf16 or fp32, got {self.checkpoint.export_dtype!r}")
        if self.noise.min_snr_gamma is not None and self.noise.min_snr_gamma <= 0:
            raise ConfigError("noise.min_snr_gamma must be positive or null (no weighting)")
        if self.noise.motion_frame_noise < 0:
            raise ConfigError(f"noise.motion_frame_noise must be >= 0, got {self.noise.motion_frame_noise}")

    # --- reading and writing ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Optional[Union[str, Path]] = None) -> "TrainingConfig":
        """Build from nested mappings; relative paths are taken relative to `base_dir`."""
        data = dict(data)
        sections = {}
        for item in dataclasses.fields(cls):
            if item.name not in data:
                continue
            value = data.pop(item.name)
            section_type = _SECTION_TYPES.get(item.name)
            sections[item.name] = _section_from_dict(section_type, value, item.name) if section_type else value
        if data:
            raise ConfigError(f"unknown top-level config keys: {sorted(data)}")
        config = cls(**sections)
        if base_dir is not None:
            config.resolve_paths(Path(base_dir))
        return config

    @classmethod
    def from_file(cls, path: Union[str, Path], overrides: Optional[list[str]] = None) -> "TrainingConfig":
        """Read a .yaml/.yml/.json file; `overrides` are `section.field=value` strings (YAML values)."""
        path = Path(path)
        data = load_mapping_file(path)
        for override in overrides or []:
            apply_override(data, override)
        return cls.from_dict(data, base_dir=Path.cwd())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False))

    def resolve_paths(self, base_dir: Path) -> None:
        """Make the file-system fields absolute (relative to `base_dir`)."""

        def resolve(value):
            if value is None or value == "" or Path(value).is_absolute():
                return value
            return str((base_dir / value).resolve())

        self.output_dir = resolve(self.output_dir)
        self.data.root = resolve(self.data.root)
        for name in ("init_net", "init_sd15_unet", "init_motion_module", "vae", "text_encoder", "text_tokenizer"):
            setattr(self.model, name, resolve(getattr(self.model, name)))
        if isinstance(self.model.architecture, str) and self.model.architecture != "sd15":
            self.model.architecture = resolve(self.model.architecture)
        if self.checkpoint.resume not in ("latest", "none"):
            self.checkpoint.resume = resolve(self.checkpoint.resume)


_SECTION_TYPES = {
    "model": ModelSection,
    "data": DataSection,
    "stage": StageSection,
    "sampling": SamplingSection,
    "dropout": DropoutSection,
    "noise": NoiseSection,
    "optimizer": OptimizerSection,
    "train": TrainSection,
    "ema": EMASection,
    "checkpoint": CheckpointSection,
    "validation": ValidationSection,
}


def _section_from_dict(section_type, value, name: str):
    if value is None:
        return section_type()
    if not isinstance(value, dict):
        raise ConfigError(f"config section {name!r} must be a mapping, got {type(value).__name__}")
    known = {item.name for item in dataclasses.fields(section_type)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"unknown keys in section {name!r}: {unknown} (known: {sorted(known)})")
    return section_type(**value)


def load_mapping_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON file holding a mapping."""
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping at the top level")
    return data


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply `section.field=value` (the value parsed as YAML, e.g. `train.max_steps=10`)."""
    import yaml

    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like section.field=value")
    dotted, raw_value = override.split("=", 1)
    keys = dotted.strip().split(".")
    target = data
    for key in keys[:-1]:
        target = target.setdefault(key, {})
        if not isinstance(target, dict):
            raise ConfigError(f"override {override!r}: {key!r} is not a section")
    target[keys[-1]] = yaml.safe_load(raw_value)
