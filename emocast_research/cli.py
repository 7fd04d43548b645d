"""The research command line: `python -m emocast_research <command> ...`.

Commands: `evaluate` (the field's metrics on generated videos, see docs/evaluation.md) and
`demo-model` (the synthetic learning benchmark that trains the embedded demo model, see
docs/demo-model.md). Parsing, exit codes and one-line errors are the runtime's
(`emocast_core.cli.run_command`).
"""
from __future__ import annotations

from collections.abc import Sequence

from emocast_core import __version__
from emocast_core.cli import (
    CommandLineParser,
    add_output_options,
    add_output_options_to_commands,
    run_command,
)

from .evaluation.cli import add_evaluate_command
from .synthetic.cli import add_demo_model_command


def build_parser() -> CommandLineParser:
    parser = CommandLineParser(
        prog="python -m emocast_research",
        description="EmoCAST research tools: evaluation metrics and the synthetic demo model (not needed to generate).",
    )
    parser.add_argument("--version", action="version", version=f"emocast_research {__version__}")
    add_output_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    add_evaluate_command(subparsers)
    add_demo_model_command(subparsers)
    add_output_options_to_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser(), argv)
