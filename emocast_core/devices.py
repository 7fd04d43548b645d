"""Device and precision choice, in one place (nothing else in the core names a device)."""
from __future__ import annotations

import torch

DTYPE_NAMES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}  # what users choose from
# Every spelling accepted where a precision is named (configs, metadata, command lines).
DTYPE_ALIASES = {
    **DTYPE_NAMES,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float": torch.float32,
}


def pick_device(name: str = "auto") -> torch.device:
    """"auto" takes CUDA, then Apple MPS, then the CPU; anything else is passed to torch.device."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """"auto": fp16 on CUDA/MPS (upstream ran in fp16), bf16 where fp16 is not supported, fp32 on CPU."""
    if name != "auto":
        if name not in DTYPE_NAMES:
            raise ValueError(f"unknown precision {name!r}; choose auto, {', '.join(DTYPE_NAMES)}")
        return DTYPE_NAMES[name]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.float32
