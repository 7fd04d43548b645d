"""Device and precision choice, in one place: the command line, the Python API, training, the
benchmarks and the ComfyUI nodes all name precisions and pick dtypes through this module (nothing
else in the core names a device)."""
from __future__ import annotations

from typing import Optional

import torch

DTYPE_NAMES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}  # what users choose from
PRECISION_CHOICES = ("auto", *DTYPE_NAMES)  # a precision option: "auto" lets `pick_dtype` decide
# Every spelling accepted where a precision is named (configs, metadata, command lines).
DTYPE_ALIASES = {
    **DTYPE_NAMES,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
}


def dtype_named(name: str) -> torch.dtype:
    """The dtype of any accepted spelling ("fp16", "float16", "half", "bf16", ...), case-insensitive."""
    dtype = DTYPE_ALIASES.get(name.lower()) if isinstance(name, str) else None
    if dtype is None:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(DTYPE_NAMES)}")
    return dtype


def dtype_label(dtype: torch.dtype) -> str:
    """torch's own name without the module ("float16", "bfloat16", "float32"), as written in metadata."""
    return str(dtype).removeprefix("torch.")


class DeviceUnavailableError(ValueError):
    """The named device does not exist or this torch build cannot use it."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def pick_device(name: str = "auto") -> torch.device:
    """"auto" takes CUDA, then Apple MPS, then the CPU; anything else is checked and passed to torch.device.

    Raises:
        DeviceUnavailableError: for a name torch does not know or a device this machine lacks.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise DeviceUnavailableError(f"{name!r} is not a device name (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"{name} is not available: this torch has no CUDA or sees no NVIDIA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"{name} is not available: {torch.cuda.device_count()} CUDA device(s) found")
    elif device.type == "mps" and not _mps_available():
        raise DeviceUnavailableError(f"{name} is not available: Apple MPS needs a Mac with torch built for it")
    elif device.type not in ("cpu", "cuda", "mps"):
        accelerator = getattr(torch, device.type, None)
        if accelerator is None or not getattr(accelerator, "is_available", lambda: False)():
            raise DeviceUnavailableError(f"{name} is not available on this machine")
    return device


def pick_dtype(name: str, device: torch.device, *, auto: Optional[torch.dtype] = None) -> torch.dtype:
    """The dtype a precision choice (`PRECISION_CHOICES`) asks for on ``device``.

    "auto": ``auto`` when the caller's host application already chose one (ComfyUI's memory manager
    knows the GPU's fp16/bf16 support); else fp16 on CUDA/MPS (upstream ran in fp16), fp32 on the CPU.
    """
    if name != "auto":
        if name not in DTYPE_NAMES:
            raise ValueError(f"unknown precision {name!r}; choose auto, {', '.join(DTYPE_NAMES)}")
        return DTYPE_NAMES[name]
    if auto is not None:
        return auto
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.float32
