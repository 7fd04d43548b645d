"""Resumable training checkpoints and `net.pth` exports.

Layout of a run's `output_dir`::

    training_config.json               the resolved config of the run
    checkpoints/step-000500/           accelerate state (model, optimizer, LR schedule, RNG, EMA)
        trainer_state.json             step and samples consumed
        COMPLETE                       written last: a folder without it is ignored on resume
    exports/step-000500/net.pth        the network in the released layout (a plain state dict)
    exports/step-000500/net.safetensors  the same, self-describing (architecture in the metadata)
    exports/final/...                  after the last step

`net.pth` has exactly the released key set (`reference_unet.`, `denoising_unet.`, `face_locator.`,
`imageproj.`, `audioproj.`), so it loads in the official code as well as in ours
(`checkpoint.load_emocast_net`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import convert_checkpoint, resolve_dtype
from ..models.config import EmoCASTConfig

CHECKPOINT_FOLDER = "checkpoints"
EXPORT_FOLDER = "exports"
STATE_FILE = "trainer_state.json"
COMPLETE_MARKER = "COMPLETE"
_STEP_FOLDER = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINT_FOLDER / f"step-{step:06d}"


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    folder = Path(output_dir) / CHECKPOINT_FOLDER
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_FOLDER.match(path.name)
        if match and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def find_resume_checkpoint(output_dir: Path, resume: str) -> Optional[Path]:
    """"latest" -> newest complete checkpoint (or None), "none" -> None, else the given folder."""
    if resume == "none":
        return None
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(f"{path}: not a complete training checkpoint (no {COMPLETE_MARKER} file)")
    return path


def write_trainer_state(folder: Path, state: dict) -> None:
    (Path(folder) / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_trainer_state(folder: Path) -> dict:
    return json.loads((Path(folder) / STATE_FILE).read_text())


def mark_complete(folder: Path) -> None:
    marker = Path(folder) / COMPLETE_MARKER
    with open(marker, "w") as handle:
        handle.write("ok\n")
        handle.flush()
        os.fsync(handle.fileno())


def prune_checkpoints(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (and any incomplete older ones)."""
    complete = complete_checkpoints(output_dir)
    if keep > 0:
        for path in complete[:-keep]:
            shutil.rmtree(path, ignore_errors=True)


def export_state_dict(net_state: dict[str, torch.Tensor], averaged: Optional[dict[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """The net's state dict, with EMA averages in place of the trained weights when given."""
    state = dict(net_state)
    for name, value in (averaged or {}).items():
        if name not in state:
            raise KeyError(f"EMA weight {name!r} is not a network weight")
        state[name] = value
    return state


def export_net(state: dict[str, torch.Tensor], folder: Path, config: EmoCASTConfig, dtype: str = "fp16") -> Path:
    """Write `net.pth` (released layout) and `net.safetensors` (with the architecture) into `folder`.

    Returns the `.pth` path. Both are written under temporary names and renamed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = resolve_dtype(dtype)
    tensors = {
        key: (value.detach().to("cpu", target) if value.is_floating_point() else value.detach().cpu()).contiguous().clone()
        for key, value in state.items()
    }
    pth = folder / "net.pth"
    temporary = folder / f".net.pth.{os.getpid()}.partial"
    torch.save(tensors, temporary)
    os.replace(temporary, pth)
    convert_checkpoint(pth, folder / "net.safetensors", dtype=None, config=config)
    return pth
