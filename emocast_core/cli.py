"""The command-line interface: `python -m emocast_core <command> ...`.

Each command is registered by an `add_<name>_command(subparsers)` function that declares its
arguments and sets `handler`, a function taking the parsed arguments and returning an exit code.
Heavy imports happen inside the handlers, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .training.cli import add_dataset_command, add_train_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m emocast_core",
        description="EmoCAST talking-portrait tools (no ComfyUI needed).",
    )
    parser.add_argument("--version", action="version", version=f"emocast_core {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    add_generate_command(subparsers)
    add_convert_command(subparsers)
    add_dataset_command(subparsers)
    add_train_command(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------


def add_convert_command(subparsers) -> None:
    command = subparsers.add_parser(
        "convert",
        help="convert an EmoCAST checkpoint (net.pth or .safetensors) to a .safetensors file",
        description=(
            "Check an EmoCAST checkpoint against the network and write it as a self-describing "
            ".safetensors file (safe to load, memory-mapped, optionally fp16/bf16). The file is "
            "never unpickled with code execution: checkpoints that contain code are refused."
        ),
    )
    command.add_argument("src", type=Path, help="source checkpoint: .pth/.pt/.ckpt/.bin or .safetensors")
    command.add_argument("dst", type=Path, help="destination .safetensors file (written atomically)")
    command.add_argument(
        "--dtype", choices=("fp16", "bf16", "fp32"), default=None,
        help="floating-point precision of the output (default: keep the source's)",
    )
    command.add_argument(
        "--config", type=Path, default=None,
        help=("network architecture as JSON, in the official layout (unet_config, unet_additional_kwargs, "
              "face_locator, image_proj, audio_proj; e.g. a tiny test model's tiny_config.json) or as "
              "EmoCASTConfig.to_dict(). Default: the one stored in the source, else the released SD1.5 size"),
    )
    command.set_defaults(handler=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError, convert_checkpoint
    from .loading import read_config_file

    try:
        config = read_config_file(args.config) if args.config else None
        src_size = args.src.stat().st_size if args.src.is_file() else 0
        print(f"{args.src}: {format_bytes(src_size)}")
        convert_checkpoint(args.src, args.dst, dtype=args.dtype, config=config)
    except (CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    dst_size = args.dst.stat().st_size
    print(f"{args.dst}: {format_bytes(dst_size)} ({dst_size / max(src_size, 1):.0%} of the source)")
    return 0


def format_bytes(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1000
    return f"{size} B"


# --------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------


def add_generate_command(subparsers) -> None:
    """`generate`: portrait + speech + emotion -> MP4 (see `emocast_core.generate`)."""
    from .generate import add_generate_command as add

    add(subparsers)
