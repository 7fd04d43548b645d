"""Synthetic learning benchmark: does EmoCAST learn lip motion from audio and expression from text?

Steps (each one skipped when its output exists, so an interrupted run continues):

  corpus   synthetic talking faces (train identities/sentences, held-out identities/sentences)
  vae      a tiny AutoencoderKL trained on training frames
  dataset  the project's dataset builder on the training corpus
  train    the project's trainer (SyntheticTrainer) — resumes from its latest checkpoint
  evaluate lip sync, emotion and identity metrics on held-out material -> metrics.json
  bundle   the demo bundle (fp16 net, VAE, random wav2vec2, sample portrait and speech)

    python benchmarks/learning/run.py --work runs/learning
    python benchmarks/learning/run.py --work runs/learning --steps evaluate bundle
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from emocast_core.synthetic import benchmark

logger = logging.getLogger("benchmarks.learning")
STEPS = ("corpus", "vae", "dataset", "train", "evaluate", "bundle")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="working folder (corpus, data, runs, metrics)")
    parser.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    parser.add_argument("--preset", choices=sorted(benchmark.PRESETS), default="full")
    parser.add_argument("--train-steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--bundle-out", type=Path, default=REPO / "emocast_core" / "demo" / "assets")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    preset = benchmark.PRESETS[args.preset]
    if args.train_steps is not None:
        preset = preset.with_train_steps(args.train_steps)
    run = benchmark.LearningBenchmark(args.work, preset)
    for step in args.steps:
        started = time.time()
        result = getattr(run, step)() if step != "bundle" else run.bundle(args.bundle_out)
        logger.info("%s done in %.0f s", step, time.time() - started)
        if step == "evaluate":
            print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
