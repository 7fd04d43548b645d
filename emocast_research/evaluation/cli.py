"""``python -m emocast_research evaluate``: the command-line face of ``evaluation.evaluate_videos``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .inputs import read_labels_file


def add_evaluate_command(subparsers) -> None:
    command = subparsers.add_parser(
        "evaluate",
        help="measure generated videos: Sync-C/D, FID, FVD, identity, emotion accuracy, seams, lip motion",
        description=(
            "Evaluate generated MP4s (files or folders). Each metric runs when its weight file is given and "
            "is skipped with a note otherwise; nothing is downloaded. Seam ratio and mouth-audio "
            "correlation need no weights. See docs/evaluation.md for where each file comes from."
        ),
    )
    command.add_argument("videos", nargs="+", type=Path, help="generated videos, or folders of them")
    command.add_argument("--ground-truth", type=Path, default=None,
                         help="folder of real videos with the same file names (for FID and FVD)")
    command.add_argument("--labels", type=Path, default=None,
                         help="CSV or JSON with columns video, emotion, prompt, reference, ground_truth")
    command.add_argument("--syncnet", type=Path, default=None, help="syncnet_v2.model (Sync-C / Sync-D)")
    command.add_argument("--inception", type=Path, default=None, help="inception-2015-12-05.pt TorchScript (FID)")
    command.add_argument("--i3d", type=Path, default=None, help="i3d_pretrained_400.pt (FVD)")
    command.add_argument("--face-models", type=Path, default=None,
                         help="InsightFace antelopev2 folder: scrfd_10g_bnkps.onnx + glintr100.onnx (identity, face crops)")
    command.add_argument("--emotion-model", type=Path, default=None,
                         help="HSEmotion / EmotiEffLib expression classifier .onnx (emotion accuracy)")
    command.add_argument("--clip-length", type=int, default=16, help="frames per generated clip (seam ratio; default 16)")
    command.add_argument("--overlap", type=int, default=0, help="frames shared by consecutive clips (default 0)")
    command.add_argument("--sampled-frames", type=int, default=16,
                         help="frames per video read for identity and emotion (default 16)")
    command.add_argument("--fid-frames", type=int, default=None, help="at most this many frames per video for FID")
    command.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    command.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    command.add_argument("--csv", type=Path, default=None, help="write one row per video and an ALL row here")
    command.add_argument("--no-progress", action="store_true", help="no progress bar")
    command.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    # The metrics load torch: imported when the command runs, so that --help stays fast.
    from emocast_core.conditioning.face import MissingFaceModelsError

    from .evaluate import EvaluationSettings, MetricWeights, evaluate_videos

    try:
        if args.ground_truth is not None and not args.ground_truth.is_dir():
            raise FileNotFoundError(f"--ground-truth {args.ground_truth}: not a folder")
        settings = EvaluationSettings(clip_length=args.clip_length, overlap=args.overlap,
                                      sampled_frames=args.sampled_frames, fid_frames=args.fid_frames, device=args.device)
        weights = MetricWeights(syncnet=args.syncnet, inception=args.inception, i3d=args.i3d,
                                face_models=args.face_models, emotion_classifier=args.emotion_model)
        labels = read_labels_file(args.labels) if args.labels is not None else None
        report = evaluate_videos(args.videos, weights, labels, args.ground_truth, settings, progress=not args.no_progress)
    except (FileNotFoundError, MissingFaceModelsError, ImportError, ValueError) as error:
        # Inputs, weight files and libraries are all checked before the first video is decoded, so
        # these are refusals of what was asked for: a usage error, as for every other command.
        if getattr(args, "debug", False):
            raise  # the command line's --debug prints the traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.format_table())
    for path, write in ((args.json, report.write_json), (args.csv, report.write_csv)):
        if path is not None:
            print(f"wrote {write(path)}")
    return 0
