"""Loading and converting EmoCAST checkpoints safely.

* `load_state_dict` reads `.safetensors` or PyTorch (`.pth/.pt/.ckpt/.bin`) files without ever
  executing code from them (`weights_only=True`), memory-mapped where the format allows it, and
  casts floating tensors one at a time so a cast never needs a second full-precision copy.
* `load_emocast_weights` checks keys and shapes against the network first and explains a mismatch
  (counts, first keys, and what the file probably is) instead of torch's wall of key names.
* `load_emocast_net` builds the network on the meta device and assigns the loaded tensors, so the
  2.5 B-parameter model is allocated once, in its final dtype, and never randomly initialised.
* `convert_checkpoint` writes a self-describing `.safetensors` (format, dtype and architecture in
  the metadata), atomically.

Every failure is a `CheckpointError` whose message names the file. The released `net.pth` layout
is loaded as it is: no key is ever renamed.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .devices import dtype_label, dtype_named
from .models.config import EmoCASTConfig
from .models.net import EmoCASTNet

PathLike = Union[str, os.PathLike]
StateDict = dict[str, torch.Tensor]

# Top-level keys under which training scripts commonly nest the weights.
WRAPPER_KEYS = ("state_dict", "module", "net")
# Written into the metadata of converted files.
FORMAT_NAME = "emocast-net"
FORMAT_VERSION = "1"

_MAX_SAFETENSORS_HEADER = 100_000_000
# How many key names a mismatch message lists per category.
_KEYS_SHOWN = 5


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and says why."""


def resolve_dtype(dtype: Union[str, torch.dtype, None]) -> Optional[torch.dtype]:
    """'fp16' / 'bf16' / 'fp32' (or a torch dtype, or None = keep) -> torch dtype or None."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return dtype_named(dtype)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def load_state_dict(path: PathLike, *, device: Union[str, torch.device] = "cpu", dtype=None) -> StateDict:
    """Read a checkpoint into `{name: tensor}`.

    `.safetensors` files are read tensor by tensor; zip-format PyTorch files are loaded with
    `torch.load(weights_only=True, mmap=True)` (legacy pickles without mmap); a top-level
    `{"state_dict" | "module" | "net": {...}}` wrapper is unwrapped. Floating tensors are cast to
    `dtype` (None keeps the stored dtype) on the CPU one at a time, then moved to `device`, so the
    device never holds more than the final weights.
    """
    path = Path(path)
    kind = _sniff_format(path)
    target_dtype = resolve_dtype(dtype)
    if kind == "safetensors":
        return _load_safetensors(path, device, target_dtype)
    return _load_pytorch(path, device, target_dtype, use_mmap=kind == "zip")


def read_checkpoint_metadata(path: PathLike) -> dict[str, str]:
    """The `__metadata__` of a `.safetensors` file ({} for other formats or none)."""
    path = Path(path)
    if _sniff_format(path) != "safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except SafetensorError as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({error})") from None


def read_checkpoint_config(path: PathLike) -> Optional[EmoCASTConfig]:
    """The architecture stored by `convert_checkpoint` in a file's metadata, or None."""
    metadata = read_checkpoint_metadata(path)
    if "config" not in metadata:
        return None
    try:
        return EmoCASTConfig.from_dict(json.loads(metadata["config"]))
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: the config stored in the file's metadata is unreadable ({error})") from None


def _sniff_format(path: Path) -> str:
    """'safetensors', 'zip' or 'pickle' from the file's first bytes (the suffix can lie)."""
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(64)
    if len(head) == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download?)")
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    # Legacy torch.save files (and raw pickles) start with the pickle PROTO opcode.
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9:
        header_length = int.from_bytes(head[:8], "little")
        # safetensors caps its JSON header at 100 MB; a larger "length" is text that happens to
        # have a "{" as its ninth byte.
        if head[8:9] == b"{" and header_length <= _MAX_SAFETENSORS_HEADER:
            if 8 + header_length > size:
                raise CheckpointError(
                    f"{path}: truncated safetensors file: the header says {8 + header_length} bytes, the file has {size}"
                )
            return "safetensors"
    raise CheckpointError(f"{path}: not a checkpoint: {_describe_foreign_file(head)}")


def _describe_foreign_file(head: bytes) -> str:
    """A short guess at what a non-checkpoint file is, for the error message."""
    if head.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the weights (download the file itself, e.g. with `git lfs pull`)"
    signatures = {
        b"\xff\xd8\xff": "a JPEG image",
        b"\x89PNG": "a PNG image",
        b"\x1f\x8b": "a gzip archive",
        b"RIFF": "a RIFF (WAV/WebP/AVI) file",
        b"\x08": "an ONNX/protobuf file",
    }
    for magic, kind in signatures.items():
        if head.startswith(magic):
            return f"it looks like {kind}"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page (a login or error page saved instead of the download?)"
    if stripped.startswith((b"{", b"[")):
        return "it is a JSON/text file"
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        return "it is a text file"
    return "unknown format (expected .safetensors or a PyTorch .pth/.pt/.ckpt/.bin)"


def _load_safetensors(path: Path, device, dtype: Optional[torch.dtype]) -> StateDict:
    tensors: StateDict = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            for key in handle.keys():
                tensors[key] = _cast_and_move(handle.get_tensor(key), dtype, device)
    except SafetensorError as error:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    return tensors


def _load_pytorch(path: Path, device, dtype: Optional[torch.dtype], use_mmap: bool) -> StateDict:
    # mmap needs the zip format (torch.save's default since 1.6); legacy pickles are read into memory.
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except Exception as error:  # torch reports corrupt files with many exception types
        raise _pytorch_load_error(path, error) from None
    state_dict = _unwrap(path, loaded)
    return {key: _cast_and_move(tensor, dtype, device) for key, tensor in state_dict.items()}


def _pytorch_load_error(path: Path, error: Exception) -> CheckpointError:
    text = str(error)
    if "Weights only load failed" in text:
        # weights_only refuses any pickle that would import or call something not known to be a
        # plain tensor container: such a file can run arbitrary code when loaded.
        found = re.search(r"GLOBAL ([\w.]+)", text)
        detail = f" (it references {found.group(1)})" if found else ""
        return CheckpointError(
            f"{path}: refused: the file contains code, not just tensors{detail}. Loading it could run "
            "arbitrary code; use a .safetensors file or a plain state-dict checkpoint from a trusted source"
        )
    corruption_signs = ("EOF", "corrupt", "truncated", "zip archive", "central directory")
    if isinstance(error, (EOFError, OSError)) or any(sign in text for sign in corruption_signs):
        return CheckpointError(f"{path}: truncated or corrupt PyTorch checkpoint ({type(error).__name__}: {text or 'unexpected end of file'})")
    return CheckpointError(f"{path}: unreadable PyTorch checkpoint ({type(error).__name__}: {text})")


def _unwrap(path: Path, loaded) -> StateDict:
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors")
    for wrapper in WRAPPER_KEYS:
        if isinstance(loaded.get(wrapper), Mapping):
            loaded = loaded[wrapper]
            break
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(f"{key!r} ({type(loaded[key]).__name__})" for key in not_tensors[:_KEYS_SHOWN])
        raise CheckpointError(f"{path}: not a plain state dict: {len(not_tensors)} entries are not tensors: {shown}")
    return dict(loaded)


def _cast_and_move(tensor: torch.Tensor, dtype: Optional[torch.dtype], device) -> torch.Tensor:
    # Integer buffers (none in EmoCAST, but common elsewhere) keep their dtype.
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    return tensor.to(device)


# --------------------------------------------------------------------------------------------
# Matching a state dict to the network
# --------------------------------------------------------------------------------------------


@dataclass
class KeyReport:
    """How a state dict's keys and shapes compare with a network's."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # (key, file, model)

    @property
    def matches(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)


def compare_keys(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare `state_dict` with `expected` (e.g. a meta-device `net.state_dict()`)."""
    report = KeyReport(
        missing=[key for key in expected if key not in state_dict],
        unexpected=[key for key in state_dict if key not in expected],
    )
    for key, reference in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != tuple(reference.shape):
            report.shape_mismatches.append((key, tuple(state_dict[key].shape), tuple(reference.shape)))
    return report


def format_key_report(source: str, report: KeyReport, strict: bool = True) -> str:
    """The message of a mismatch: counts, the first few keys of each kind, and a hint."""
    lines = [
        f"{source}: does not match the EmoCAST network: {len(report.missing)} missing, "
        f"{len(report.unexpected)} unexpected, {len(report.shape_mismatches)} shape-mismatched keys"
    ]

    def listing(label: str, keys: list[str]):
        if keys:
            more = f" (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
            lines.append(f"  {label}: " + ", ".join(keys[:_KEYS_SHOWN]) + more)

    if strict:
        listing("missing", report.missing)
        listing("unexpected", report.unexpected)
    listing("shape mismatch (file vs model)", [f"{key} {list(got)} vs {list(want)}" for key, got, want in report.shape_mismatches])
    hint = _mismatch_hint(report)
    if hint:
        lines.append(f"  hint: {hint}")
    return "\n".join(lines)


_EMOCAST_ONLY_KEYS = ("attn_audioemo", "postnorm_audioemo", "to_k_ip", "to_v_ip")
_TOP_LEVEL = ("reference_unet.", "denoising_unet.", "face_locator.", "imageproj.", "audioproj.")


def _mismatch_hint(report: KeyReport) -> str:
    """What the file probably is, from the shape of the mismatch."""
    unexpected = report.unexpected
    if report.missing and not unexpected and all(any(part in key for part in _EMOCAST_ONLY_KEYS) for key in report.missing):
        return ("this looks like a Hallo checkpoint: it lacks only EmoCAST's emotion-audio attention "
                "(attn_audioemo) and face-token (to_k_ip/to_v_ip) layers; use EmoCAST's net.pth")
    if unexpected and not any(key.startswith(_TOP_LEVEL) for key in unexpected):
        if any(key.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")) for key in unexpected):
            return "this looks like a full Stable Diffusion checkpoint, not EmoCAST's net.pth"
        if any(key.startswith("module.") for key in unexpected):
            return "the keys carry a `module.` prefix (saved from a DataParallel wrapper); this is not the released net.pth layout"
        if all(".motion_modules." in key for key in unexpected):
            return "this looks like an AnimateDiff motion-module checkpoint, not EmoCAST's net.pth"
        if any(key.startswith(("encoder.down_blocks", "decoder.up_blocks", "quant_conv")) for key in unexpected):
            return "this looks like a VAE, not EmoCAST's net.pth"
        if any(key.startswith(("text_model.", "wav2vec2.", "vision_model.")) for key in unexpected):
            return "this looks like a CLIP / wav2vec2 encoder, not EmoCAST's net.pth"
        if any(key.startswith(("conv_in.", "down_blocks.", "mid_block.", "up_blocks.")) for key in unexpected):
            return ("this looks like an SD1.5 UNet: its keys lack the `reference_unet.` / `denoising_unet.` "
                    "prefixes of EmoCAST's net.pth")
        return "none of the keys belong to EmoCAST's network; is this the right file?"
    if report.shape_mismatches and not unexpected:
        return ("the names are EmoCAST's but the shapes are not: the file was made for another model size "
                "(e.g. a test model); pass the matching config")
    return ""


def load_emocast_weights(net: EmoCASTNet, state_dict_or_path: Union[PathLike, Mapping[str, torch.Tensor]], *, strict: bool = True) -> KeyReport:
    """Load weights into `net` (which may live on the meta device) after checking keys and shapes.

    Tensors are *assigned* (`load_state_dict(assign=True)`), cast per tensor to the dtype of the
    parameter they replace and placed on its device (or left where they are for a meta-device
    net), so no second copy of the model is made. With `strict=False` missing / unexpected keys
    are tolerated and reported (on a meta-device net, the missing ones stay on meta); shape
    mismatches are always an error.
    """
    if isinstance(state_dict_or_path, Mapping):
        source, state_dict = "state dict", dict(state_dict_or_path)
    else:
        source = str(state_dict_or_path)
        state_dict = load_state_dict(state_dict_or_path)

    expected = net.state_dict()
    report = compare_keys(expected, state_dict)
    if report.shape_mismatches or (strict and not report.matches):
        raise CheckpointError(format_key_report(source, report, strict))

    to_load = {}
    for key, tensor in state_dict.items():
        if key not in expected:
            continue
        target = expected[key]
        dtype = target.dtype if tensor.is_floating_point() and target.is_floating_point() else None
        device = None if target.is_meta else target.device
        to_load[key] = tensor.to(device=device, dtype=dtype)
    net.load_state_dict(to_load, strict=False, assign=True)
    return report


# --------------------------------------------------------------------------------------------
# Building the network from a file
# --------------------------------------------------------------------------------------------


def load_emocast_net(
    path: PathLike,
    config: Optional[EmoCASTConfig] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[str, torch.dtype, None] = None,
    operations=None,
) -> EmoCASTNet:
    """Build `EmoCASTNet` and load `path` into it strictly; returns the net in eval mode.

    config: None uses the architecture stored in a converted file's metadata, else SD1.5.
    dtype: None keeps the file's floating dtype (float32 if it mixes dtypes).
    operations: the layers' namespace (None: torch.nn; see `models/layers.py`).
    The net is built on the meta device (nothing allocated, no random init) and the file's
    tensors, each cast on the CPU and moved to `device`, become its parameters.
    """
    if config is None:
        config = read_checkpoint_config(path) or EmoCASTConfig.sd15()
    target_dtype = resolve_dtype(dtype)
    if target_dtype is None:
        # Read on the CPU (memory-mapped where possible) to learn the stored dtype, then move.
        state_dict = load_state_dict(path)
        target_dtype = _common_float_dtype(state_dict)
        state_dict = _cast_and_move_all(state_dict, target_dtype, device)
    else:
        state_dict = load_state_dict(path, device=device, dtype=target_dtype)

    net = EmoCASTNet.build(config, device="meta", dtype=target_dtype, operations=operations or torch.nn)
    report = compare_keys(net.state_dict(), state_dict)
    if not report.matches:
        raise CheckpointError(format_key_report(str(path), report))
    net.load_state_dict(state_dict, strict=True, assign=True)
    left_on_meta = [name for name, tensor in [*net.named_parameters(), *net.named_buffers()] if tensor.is_meta]
    if left_on_meta:  # a tensor the state dict does not own (e.g. a non-persistent buffer)
        raise CheckpointError(f"{path}: these tensors were not loaded: {left_on_meta[:_KEYS_SHOWN]}")
    return net.eval()


def _cast_and_move_all(state_dict: StateDict, dtype: torch.dtype, device) -> StateDict:
    """Cast and move tensor by tensor, dropping each source tensor once it is converted."""
    converted = {}
    for key in list(state_dict):
        converted[key] = _cast_and_move(state_dict.pop(key), dtype, device)
    return converted


def _common_float_dtype(state_dict: Mapping[str, torch.Tensor]) -> torch.dtype:
    dtypes = {tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def convert_checkpoint(
    src: PathLike,
    dst: PathLike,
    *,
    dtype: Union[str, torch.dtype, None] = "fp16",
    config: Optional[EmoCASTConfig] = None,
) -> Path:
    """Write `src` as a self-describing EmoCAST `.safetensors` at `dst` and return `dst`.

    The weights are checked against `config` (default: the one in `src`'s metadata, else SD1.5)
    first, so a wrong file is never converted. dtype: 'fp16' / 'bf16' / 'fp32' / None (keep).
    Metadata: `format` = "emocast-net", `dtype`, and `config` = the architecture as JSON
    (`EmoCASTConfig.to_dict()` without the run-time `upstream` switches). The file is written
    under a temporary name and renamed, so `dst` is either complete or untouched.
    """
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".safetensors":
        raise CheckpointError(f"{dst}: the converted file must end in .safetensors")
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise CheckpointError(f"{dst}: is the source file; write the converted file under another name")
    target_dtype = resolve_dtype(dtype)
    if config is None:
        config = read_checkpoint_config(src) or EmoCASTConfig.sd15()
    state_dict = load_state_dict(src, dtype=target_dtype)
    report = compare_keys(EmoCASTNet.build(config, device="meta").state_dict(), state_dict)
    if not report.matches:
        raise CheckpointError(format_key_report(str(src), report))

    tensors = _contiguous_unshared(state_dict)
    float_dtypes = sorted({dtype_label(t.dtype) for t in tensors.values() if t.is_floating_point()})
    architecture = config.to_dict()
    # The upstream-behaviour switches choose how the weights are *run*, not what they are.
    architecture.pop("upstream", None)
    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dtype": ",".join(float_dtypes),
        "config": json.dumps(architecture, sort_keys=True),
    }

    dst.parent.mkdir(parents=True, exist_ok=True)
    temporary = dst.with_name(f".{dst.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        os.replace(temporary, dst)
    finally:
        if temporary.exists():
            temporary.unlink()
    return dst


def _contiguous_unshared(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """safetensors stores each tensor on its own: copy tensors that share memory or are views."""
    seen_storages: set[int] = set()
    tensors = {}
    for key, tensor in state_dict.items():
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if tensor.numel() == 0:
            tensors[key] = tensor.contiguous()
            continue
        if pointer in seen_storages or not tensor.is_contiguous() or storage.nbytes() != tensor.nbytes:
            tensor = tensor.contiguous().clone()
        else:
            seen_storages.add(pointer)
        tensors[key] = tensor
    return tensors
