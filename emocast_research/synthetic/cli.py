"""``python -m emocast_research demo-model``: the learning benchmark that trains the demo model.

Steps (each one skipped when its output exists, so an interrupted run continues):

  corpus   synthetic talking faces (train identities/sentences, held-out identities/sentences)
  vae      a small AutoencoderKL trained on freshly drawn frames (64 px, then grown to the demo's
           size); a random but fixed wav2vec2
  dataset  the project's dataset builder on the training corpus
  train    the project's trainer (`training.SyntheticTrainer`), resuming from its latest checkpoint
  finetune a second sitting of the trainer, continued from train's export at a lower learning rate
  decoder  the VAE's decoder trained on alone (the encoder, so the network's latent space, unchanged)
  evaluate lip sync, emotion and identity metrics on held-out material -> eval/metrics.json
  bundle   the demo bundle (fp16 net, VAE, wav2vec2, sample portrait and speech)
  check    the README's demo command per emotion on the installed bundle: time, seams, colour drift,
           upside-down frames, identity, emotion read, silences -> eval/demo_check.json (not in the
           default steps)
  vae_report  reconstruction errors of the run's VAEs on frames none trained on -> eval/vae_report.json
           (not in the default steps)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

STEPS = ("corpus", "vae", "dataset", "train", "finetune", "decoder", "evaluate", "bundle")
EXTRA_STEPS = ("check", "vae_report")
PRESET_NAMES = ("full", "test")  # `benchmark.PRESETS`, named here so that --help needs no torch
logger = logging.getLogger(__name__)


def at_least_one(text: str) -> int:
    """argparse type: an integer >= 1 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative(text: str) -> float:
    """argparse type: a number >= 0 (a usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_demo_model_command(subparsers) -> None:
    command = subparsers.add_parser(
        "demo-model",
        help="draw synthetic talking faces, train the small demo EmoCAST on them, evaluate it, write its bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    command.add_argument("--work", type=Path, required=True, help="working folder (corpus, data, runs, metrics)")
    command.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS + EXTRA_STEPS,
                         help="the steps to run, in this order (default: all)")
    command.add_argument("--preset", choices=PRESET_NAMES, default="full",
                         help="full: the shipped model (about 2.5 hours on 2 CPU cores); test: a few minutes")
    command.add_argument("--train-steps", type=at_least_one, default=None, help="override the preset's training steps")
    command.add_argument("--motion-frame-noise", type=non_negative, default=None,
                         help="override the preset's noise on the motion frames in training, both sittings "
                              "(training.md, noise.motion_frame_noise; the shipped model: 0)")
    command.add_argument("--bundle-out", type=Path, default=None,
                         help="where the bundle step writes the demo bundle (default: emocast_core/demo/assets)")
    command.add_argument("--threads", type=at_least_one, default=2, help="CPU threads for torch (default 2)")
    command.set_defaults(handler=run_demo_model)


def run_demo_model(args: argparse.Namespace) -> int:
    # The benchmark loads torch, diffusers and transformers: imported when the command runs, so
    # that --help stays fast.
    import torch

    from emocast_core.demo.bundle import ASSETS

    from .benchmark import PRESETS, LearningBenchmark

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    preset = PRESETS[args.preset]
    if args.train_steps is not None:
        preset = preset.with_train_steps(args.train_steps)
    if args.motion_frame_noise is not None:
        preset = dataclasses.replace(preset, motion_frame_noise=args.motion_frame_noise)
    run = LearningBenchmark(args.work, preset)
    for step in args.steps:
        started = time.time()
        result = run.bundle(args.bundle_out or ASSETS) if step == "bundle" else getattr(run, step)()
        logger.info("%s done in %.0f s", step, time.time() - started)
        if step in ("evaluate", "check", "vae_report"):
            print(json.dumps(result, indent=2))
    return 0
