"""Synthetic learning benchmark: does EmoCAST learn lip motion from audio and expression from text?

The same command as `python -m emocast_research demo-model` (see that command's --help and
docs/demo-model.md), runnable from a checkout without installing the package:

    python benchmarks/learning/run.py --work runs/learning
    python benchmarks/learning/run.py --work runs/learning --steps evaluate bundle
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checkout first, so that it runs without installing

from emocast_research.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["demo-model", *sys.argv[1:]]))
