"""The command-line interface: `python -m emocast_core <command> ...`.

Each command is registered by an `add_<name>_command(subparsers)` function that declares its
arguments and sets `handler`, a function taking the parsed arguments and returning an exit code.
Heavy imports happen inside the handlers, so `--help` stays fast. `run_command` (parsing, exit
codes, one-line errors) is shared with the research tools' `python -m emocast_research`.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from . import __version__
from .devices import DTYPE_NAMES
from .interrupts import EXIT_CODE_SIGINT, EXIT_CODE_SIGTERM, Terminated, terminate_as_exception
from .model_files import MissingModelFilesError
from .quiet import library_output
from .training.cli import add_dataset_command, add_train_command
from .validation import CLI_OPTIONS, InputError


class CommandLineParser(argparse.ArgumentParser):
    """argparse with usage errors in one line (exit code 2), not the usage block and then the error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def add_output_options(parser: argparse.ArgumentParser, default=None) -> None:
    """--debug and --verbose, accepted before the command and after it."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show the full traceback of an error (also: EMOCAST_DEBUG=1)")
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show the libraries' own log messages, warnings and load reports")


def add_thread_option(parser: argparse.ArgumentParser, default=None) -> None:
    """--threads, accepted before the command and after it."""
    parser.add_argument("--threads", type=thread_count, default=default, metavar="N",
                        help="CPU threads torch computes with (default: torch's choice, one per usable core, "
                             "or OMP_NUM_THREADS); 1 costs the least CPU time on a machine other programs keep busy")


def thread_count(text: str) -> int:
    """argparse type of --threads: a whole number of at least 1."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r}")
    return count


def use_threads(count: Optional[int]) -> None:
    """Make torch compute with `count` threads; None keeps torch's own choice.

    Torch is imported here, not at the top: `--help` stays fast."""
    if count is None:
        return
    import torch

    torch.set_num_threads(count)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(
        prog="python -m emocast_core",
        description="EmoCAST talking-portrait tools (no ComfyUI needed).",
    )
    parser.add_argument("--version", action="version", version=f"emocast_core {__version__}")
    add_output_options(parser)
    add_thread_option(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    add_generate_command(subparsers)
    add_convert_command(subparsers)
    add_dataset_command(subparsers)
    add_train_command(subparsers)
    add_output_options_to_commands(subparsers)
    add_thread_option_to_commands(subparsers)
    return parser


def add_output_options_to_commands(subparsers) -> None:
    """--debug and --verbose after every command registered so far."""
    for command in subparsers.choices.values():
        # SUPPRESS: an option left out after the command keeps the value given before it.
        add_output_options(command, default=argparse.SUPPRESS)


def add_thread_option_to_commands(subparsers) -> None:
    """--threads after every command registered so far (the research tools' commands choose their own)."""
    for command in subparsers.choices.values():
        add_thread_option(command, default=argparse.SUPPRESS)


# Commands that moved to the research tools: their old name gets a pointer, not "invalid choice".
MOVED_COMMANDS = {"evaluate": "python -m emocast_research evaluate"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a `python -m emocast_core` command (see `run_command`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The options before the command are flags only, so the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    if command in MOVED_COMMANDS:
        print(f"error: `{command}` is not part of the runtime; run `{MOVED_COMMANDS[command]} ...`",
              file=sys.stderr)
        return 2
    return run_command(build_parser(), argv)


def run_command(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> int:
    """Parse `argv` with `parser` and run the command's handler. Exit codes: 0 done, 1 the run
    failed, 2 a usage error (bad option or input), 130 interrupted (Ctrl-C), 143 terminated
    (SIGTERM). Errors are one line; `--debug` or EMOCAST_DEBUG=1 adds the traceback."""
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = args.debug or os.environ.get("EMOCAST_DEBUG", "") not in ("", "0")
    # Parsers without --threads (the research tools') keep torch's own choice.
    use_threads(getattr(args, "threads", None))
    try:
        with terminate_as_exception(), library_output(verbose=args.verbose):
            return args.handler(args)
    except KeyboardInterrupt:
        return _stopped("interrupted (Ctrl-C); nothing was written", EXIT_CODE_SIGINT, debug)
    except Terminated:
        return _stopped("terminated (SIGTERM); nothing was written", EXIT_CODE_SIGTERM, debug)
    except InputError as error:
        return _failed(error.describe(CLI_OPTIONS), 2, debug)
    except MissingModelFilesError as error:  # a list of every missing file, one per line on purpose
        return _failed(str(error), 2, debug)
    except Exception as error:  # noqa: BLE001 - the command line's last word on any failure
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        hint = "" if debug else " (run with --debug for the details)"
        return _failed(f"{message}{hint}", 1, debug)


def _failed(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


def _stopped(message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(message, file=sys.stderr)
    return code


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
        "--dtype", choices=tuple(DTYPE_NAMES), default=None,
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


def demo_generation(options: Sequence[str] = ()):
    """The sampling settings (`GenerationConfig`) that `generate --demo OPTIONS` runs with, read by the
    command's own parser and `--demo` defaults (for tools that measure or picture the command). Bad
    options exit as on the command line."""
    from .demo.bundle import DemoBundle
    from .generate import fill_demo_options, request_from_args

    args = build_parser().parse_args(["generate", "--demo", "--out", "demo.mp4", *options])
    fill_demo_options(args, DemoBundle())
    return request_from_args(args).generation

