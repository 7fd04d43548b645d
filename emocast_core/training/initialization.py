"""Where a training run's weights start.

* Fine-tuning: the released `net.pth` (or a converted `.safetensors`, or a previous stage's export)
  is loaded with the same key checks as inference (`checkpoint.load_emocast_weights`).
* From scratch, as Hallo/EmoCAST were built:
  - the SD1.5 UNet (`unet/` diffusers folder) fills the spatial layers of *both* UNets — the key
    names are the same (`down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight`, ...);
    the ReferenceNet has no output head, so SD's `conv_norm_out`/`conv_out` go to the denoiser only;
  - EmoCAST's new face K/V (`attn2.processor.to_k_ip/to_v_ip`) start as copies of SD's text K/V
    (IP-Adapter's initialisation): the face tokens are then read the way SD read its context;
  - AnimateDiff's `mm_sd_v15_v2.ckpt` fills the motion modules: its keys are already the
    denoiser's (`down_blocks.N.motion_modules.M.temporal_transformer...`, including the
    `pos_encoder.pe` tables);
  - audio modules, audio/image projections and the face locator keep their fresh initialisation
    (zero-initialised output convs make them start as no-ops where the design intends it).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import CheckpointError, load_emocast_weights, load_state_dict
from ..models.net import EmoCASTNet

logger = logging.getLogger(__name__)

SD_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# SD's output head has no counterpart in the ReferenceNet.
_DENOISER_ONLY_PREFIXES = ("conv_norm_out.", "conv_out.")


@dataclass
class InitReport:
    """What an initialisation step filled: counts of tensors per target, and what it left out."""

    loaded: dict = field(default_factory=dict)  # target prefix -> number of tensors
    unused: list = field(default_factory=list)  # source keys with no destination
    shape_mismatches: list = field(default_factory=list)


def read_sd15_unet(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict of an SD UNet diffusers folder (or of the `unet/` folder inside an SD folder)."""
    folder = Path(folder)
    if (folder / "unet").is_dir():
        folder = folder / "unet"
    for name in SD_WEIGHT_FILES:
        if (folder / name).is_file():
            return load_state_dict(folder / name)
    raise FileNotFoundError(f"{folder}: no {' or '.join(SD_WEIGHT_FILES)} (an SD1.5 `unet/` diffusers folder is expected)")


def _copy_matching(net: EmoCASTNet, prefix: str, source: dict[str, torch.Tensor], report: InitReport, skip=()) -> set[str]:
    """Copy `source[k]` into `net` key `prefix + k` where it exists with the same shape."""
    target = net.state_dict()
    used = set()
    with torch.no_grad():
        for key, tensor in source.items():
            if key.startswith(skip):
                continue
            name = prefix + key
            if name not in target:
                continue
            if tuple(target[name].shape) != tuple(tensor.shape):
                report.shape_mismatches.append((name, tuple(tensor.shape), tuple(target[name].shape)))
                continue
            target[name].copy_(tensor.to(target[name].dtype))
            used.add(key)
    report.loaded[prefix] = report.loaded.get(prefix, 0) + len(used)
    return used


def init_from_sd15_unet(net: EmoCASTNet, unet_state: dict[str, torch.Tensor]) -> InitReport:
    """SD1.5 UNet weights -> both UNets' spatial layers; face K/V copied from the text K/V."""
    report = InitReport()
    used = _copy_matching(net, "reference_unet.", unet_state, report, skip=_DENOISER_ONLY_PREFIXES)
    used |= _copy_matching(net, "denoising_unet.", unet_state, report)
    report.unused = sorted(set(unet_state) - used)
    with torch.no_grad():
        for name, module in net.named_modules():
            processor = getattr(module, "processor", None)
            if hasattr(processor, "to_k_ip") and hasattr(module, "to_k"):
                processor.to_k_ip[0].weight.copy_(module.to_k.weight)
                processor.to_v_ip[0].weight.copy_(module.to_v.weight)
    if report.shape_mismatches:
        raise CheckpointError(
            f"the SD UNet does not fit the network: {len(report.shape_mismatches)} shape mismatches, e.g. "
            f"{report.shape_mismatches[:3]}; is model.architecture the SD1.5 shape?"
        )
    return report


def init_from_motion_module(net: EmoCASTNet, motion_state: dict[str, torch.Tensor]) -> InitReport:
    """AnimateDiff motion weights (`*.motion_modules.*` keys) -> the denoiser's motion modules."""
    report = InitReport()
    motion_state = {k: v for k, v in motion_state.items() if ".motion_modules." in f".{k}"}
    if not motion_state:
        raise CheckpointError("the motion-module checkpoint holds no `motion_modules` keys")
    used = _copy_matching(net, "denoising_unet.", motion_state, report)
    report.unused = sorted(set(motion_state) - used)
    expected = [k for k in net.state_dict() if k.startswith("denoising_unet.") and ".motion_modules." in k]
    missing = [k for k in expected if k.removeprefix("denoising_unet.") not in motion_state]
    if report.shape_mismatches or report.unused or missing:
        raise CheckpointError(
            f"the motion-module checkpoint does not fit the denoiser: {len(missing)} missing, "
            f"{len(report.unused)} unexpected, {len(report.shape_mismatches)} shape-mismatched keys "
            f"(first: {(missing + report.unused)[:3]} {report.shape_mismatches[:2]})"
        )
    return report


def initialize_net(
    net: EmoCASTNet,
    init_net: Optional[str] = None,
    init_net_strict: bool = True,
    sd15_unet: Optional[str] = None,
    motion_module: Optional[str] = None,
) -> dict:
    """Apply the configured initialisation to a freshly built (randomly initialised) net.

    `init_net` wins: with it the SD/AnimateDiff sources are not needed. Returns a summary.
    """
    summary = {}
    if init_net:
        report = load_emocast_weights(net, init_net, strict=init_net_strict)
        summary["init_net"] = {"path": init_net, "missing": len(report.missing), "unexpected": len(report.unexpected)}
        return summary
    if sd15_unet:
        report = init_from_sd15_unet(net, read_sd15_unet(Path(sd15_unet)))
        summary["sd15_unet"] = {"path": sd15_unet, "loaded": report.loaded, "unused": report.unused}
    if motion_module:
        report = init_from_motion_module(net, load_state_dict(motion_module))
        summary["motion_module"] = {"path": motion_module, "loaded": report.loaded}
    if not summary:
        logger.warning("no init_net / init_sd15_unet / init_motion_module: training from random weights")
    return summary
