"""Progressive functional training: what each stage trains and how it is fed.

This is our interpretation of the paper's "progressive functional training" (its text was not
available; see docs/training.md). Each stage has its own trainable set, data shape and loss
emphasis; everything else is frozen.

| stage       | trains                                                        | samples                  | loss emphasis |
|-------------|---------------------------------------------------------------|--------------------------|---------------|
| appearance  | ReferenceNet, denoiser spatial layers (incl. the text/face    | single frames, no motion | none          |
|             | cross-attention and its face K/V), face locator, image proj.  | frames                   |               |
| motion      | audio projection, audio modules (incl. the emotive audio      | clips + motion frames    | none          |
|             | attention), motion modules                                    |                          |               |
| lip_sync    | audio projection, audio modules                               | clips + motion frames    | lip region    |
| emotion     | emotive audio attention, spatial text cross-attention (Q/K/V/ | clips + motion frames    | face region   |
|             | out of both UNets; not the face K/V)                          |                          |               |

Patterns are shell-style globs over parameter names as they appear in `net.pth`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Sequence

from torch import nn

from .config import StageSection

# torch's activation-checkpoint wrapper inserts this into parameter paths (not into state dicts).
_WRAPPER_PREFIX = "_checkpoint_wrapped_module."


@dataclass(frozen=True)
class StageDefaults:
    trainable: tuple[str, ...]
    frozen: tuple[str, ...] = ()
    single_frame: bool = False
    lip_loss_weight: float = 0.0
    face_loss_weight: float = 0.0


STAGE_DEFAULTS = {
    "appearance": StageDefaults(
        trainable=("reference_unet.*", "denoising_unet.*", "face_locator.*", "imageproj.*"),
        frozen=("*.audio_modules.*", "*.motion_modules.*"),
        single_frame=True,
    ),
    "motion": StageDefaults(
        trainable=("audioproj.*", "denoising_unet.*.audio_modules.*", "denoising_unet.*.motion_modules.*"),
    ),
    "lip_sync": StageDefaults(
        trainable=("audioproj.*", "denoising_unet.*.audio_modules.*"),
        lip_loss_weight=2.0,
    ),
    "emotion": StageDefaults(
        trainable=(
            "denoising_unet.*.attn_audioemo.*",
            "denoising_unet.*.postnorm_audioemo.*",
            "reference_unet.*.attentions.*.attn2.*",
            "denoising_unet.*.attentions.*.attn2.*",
        ),
        # The face-identity K/V belongs to appearance, not to emotion.
        frozen=("*.attn2.processor.*",),
        face_loss_weight=1.0,
    ),
}


@dataclass
class StagePlan:
    """A stage's resolved settings."""

    name: str
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    single_frame: bool
    lip_loss_weight: float
    face_loss_weight: float
    trainable_names: list = field(default_factory=list)


def clean_parameter_name(name: str) -> str:
    """The `net.pth` key of a parameter path (drops activation-checkpoint wrapper segments)."""
    return name.replace(_WRAPPER_PREFIX, "")


def is_trainable(name: str, trainable: Sequence[str], frozen: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in trainable) and not any(fnmatchcase(name, p) for p in frozen)


def plan_stage(stage: StageSection) -> StagePlan:
    defaults = STAGE_DEFAULTS[stage.name]
    return StagePlan(
        name=stage.name,
        trainable=tuple(stage.trainable) if stage.trainable is not None else defaults.trainable,
        frozen=tuple(defaults.frozen if stage.trainable is None else ()) + tuple(stage.frozen),
        single_frame=defaults.single_frame,
        lip_loss_weight=defaults.lip_loss_weight if stage.lip_loss_weight is None else stage.lip_loss_weight,
        face_loss_weight=defaults.face_loss_weight if stage.face_loss_weight is None else stage.face_loss_weight,
    )


def unreachable_parameter_names(net) -> set[str]:
    """Parameters of an `EmoCASTNet` that no loss can reach, so training them is pointless:

    * the ReferenceNet's last spatial transformer past its `norm1` (and its `proj_out`): only the
      `norm1` tokens of each block leave the ReferenceNet;
    * the motion modules of the plain (attention-free) down/up levels, which the released model
      stores but never runs (`UpstreamBehaviour.run_plain_block_motion_modules`).
    """
    from ..models.blocks import DownLevel, UpLevel
    from ..models.transformer import SpatialTransformer

    names: set[str] = set()
    last = None
    for module_name, module in net.reference_unet.named_modules():
        if isinstance(module, SpatialTransformer):
            last = (module_name, module)
    if last is not None:
        module_name, module = last
        for name, _ in module.named_parameters():
            if not name.startswith("transformer_blocks.0.norm1.") and not name.startswith(("norm.", "proj_in.")):
                names.add(clean_parameter_name(f"reference_unet.{module_name}.{name}"))
    if not net.config.upstream.run_plain_block_motion_modules:
        for module_name, module in net.denoising_unet.named_modules():
            if isinstance(module, (DownLevel, UpLevel)) and module.motion_modules is not None:
                for name, _ in module.motion_modules.named_parameters():
                    names.add(clean_parameter_name(f"denoising_unet.{module_name}.motion_modules.{name}"))
    return names


def apply_stage(net: nn.Module, plan: StagePlan, exclude: Sequence[str] = ()) -> list[str]:
    """Freeze everything, then unfreeze the stage's parameters (minus `exclude`, e.g.
    `unreachable_parameter_names(net)`); returns their names.

    Raises ValueError when the patterns select nothing (a typo would otherwise train nothing).
    """
    selected = []
    excluded = set(exclude)
    for name, parameter in net.named_parameters():
        key = clean_parameter_name(name)
        keep = is_trainable(key, plan.trainable, plan.frozen) and key not in excluded
        parameter.requires_grad_(keep)
        if keep:
            selected.append(key)
    if not selected:
        raise ValueError(f"stage {plan.name!r}: the patterns {plan.trainable} (minus {plan.frozen}) select no parameter")
    plan.trainable_names = selected
    return selected
