"""Command-line entry points of the training tools.

`add_dataset_command(subparsers)` and `add_train_command(subparsers)` register the `dataset` and
`train` commands on an argparse sub-parser set; each parser's `handler(args) -> int` runs the command
(the convention of `emocast_core.cli`).
`python -m emocast_core.training ...` exposes both on their own.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from pathlib import Path


def add_dataset_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("dataset", help="build or inspect a training set")
    commands = parser.add_subparsers(dest="dataset_command", required=True)

    build = commands.add_parser(
        "build",
        help="talking-head videos -> 25 fps face crops, masks, audio features, identity and captions",
        description="Builds (or resumes building) a training set: index.jsonl plus safetensors shards.",
    )
    build.add_argument("--videos", required=True, type=Path, help="folder searched recursively for videos")
    build.add_argument("--out", required=True, type=Path, help="dataset folder (created; an existing one is resumed)")
    build.add_argument("--face-models", required=True, type=Path,
                       help="InsightFace antelopev2 folder (scrfd_10g_bnkps.onnx, glintr100.onnx, 2d106det.onnx)")
    build.add_argument("--wav2vec", required=True, type=Path, help="wav2vec2-base-960h folder")
    build.add_argument("--labels", type=Path, help="emotion labels: .csv/.tsv/.jsonl/.json with video, emotion[, intensity, speaker]")
    build.add_argument("--captions", type=Path, help="captions: .csv/.tsv/.jsonl/.json with video, caption")
    build.add_argument("--captioner", help="a captioning callable 'package.module:function' (video_path, label) -> str")
    build.add_argument("--no-mead-folders", action="store_true", help="do not read labels from MEAD-style folder names")
    build.add_argument("--size", type=int, default=512, help="side of the square crops (multiple of 64)")
    build.add_argument("--crop-scale", type=float, default=None, help="crop side / face box side (default 1.7)")
    build.add_argument("--detect-every", type=int, default=5, help="frames between detections when placing the crop")
    build.add_argument("--min-face-fraction", type=float, default=0.5,
                       help="share of the sampled frames that must show a face (else the video is skipped)")
    build.add_argument("--min-frames", type=int, default=25, help="shorter videos are skipped")
    build.add_argument("--max-frames", type=int, default=0, help="cut longer videos into clips of this length (0 = never)")
    build.add_argument("--frame-codec", choices=("jpeg", "png"), default="jpeg")
    build.add_argument("--jpeg-quality", type=int, default=95)
    build.add_argument("--clips-per-shard", type=int, default=16)
    build.add_argument("--allow-silence", action="store_true", help="keep videos whose audio is silent")
    build.add_argument("--device", default="cpu", help="device of the wav2vec2 model (e.g. cuda)")
    build.add_argument("--onnx-provider", action="append", dest="onnx_providers",
                       help="onnxruntime provider for the face models (repeatable; default CPU)")
    build.set_defaults(handler=run_dataset_build)

    info = commands.add_parser("info", help="summarise a built dataset")
    info.add_argument("root", type=Path)
    info.set_defaults(handler=run_dataset_info)
    return parser


def add_train_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="run one training stage (also under `accelerate launch -m emocast_core train ...`)",
        description="Trains one EmoCAST stage from a YAML/JSON config (see docs/training.md).",
    )
    parser.add_argument("--config", required=True, type=Path, help="training config (.yaml/.yml/.json)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override a config field, e.g. --set train.max_steps=100 (repeatable)")
    parser.set_defaults(handler=run_train)
    return parser


def run_dataset_build(args) -> int:
    from ..conditioning.audio import AudioEncoder
    from ..conditioning.crop import DEFAULT_CROP_SCALE
    from ..conditioning.face import FaceAnalyzer
    from .captions import CaptionSource, load_captioner, read_caption_file, read_label_file
    from .dataset_builder import BuildOptions, DatasetBuilder

    _configure_logging()
    captions = CaptionSource(
        captions=read_caption_file(args.captions) if args.captions else None,
        labels=read_label_file(args.labels) if args.labels else None,
        captioner=load_captioner(args.captioner) if args.captioner else None,
        mead_folders=not args.no_mead_folders,
    )
    options = BuildOptions(
        size=args.size, crop_scale=args.crop_scale or DEFAULT_CROP_SCALE, detect_every=args.detect_every,
        min_face_fraction=args.min_face_fraction,
        min_frames=args.min_frames, max_frames=args.max_frames, frame_codec=args.frame_codec,
        jpeg_quality=args.jpeg_quality, clips_per_shard=args.clips_per_shard, allow_silence=args.allow_silence,
    )
    builder = DatasetBuilder(
        FaceAnalyzer.from_folder(args.face_models, providers=args.onnx_providers),
        AudioEncoder.from_pretrained(args.wav2vec, device=args.device),
        captions,
        options,
    )
    report = builder.build(args.videos, args.out, progress=lambda source, status: print(f"{source}: {status}", flush=True))
    print(f"added {report.added_clips} clip(s) from {report.added_videos} video(s); "
          f"skipped {len(report.skipped)}; already done {report.already_done}")
    for reason, count in Counter(reason.split(":")[0] for _, reason in report.skipped).most_common():
        print(f"  skipped ({reason}): {count}")
    return 0


def run_dataset_info(args) -> int:
    from .shards import read_index, read_skipped

    records = read_index(args.root)
    skipped = read_skipped(args.root)
    frames = sum(record.num_frames for record in records)
    print(f"{len(records)} clips, {frames} frames ({frames / 25 / 3600:.2f} h at 25 fps), {len(skipped)} skipped videos")
    for (emotion, intensity), count in sorted(Counter((r.emotion, r.intensity) for r in records).items(), key=str):
        print(f"  {emotion:<12} intensity {intensity}: {count}")
    for reason, count in Counter(row["reason"].split(":")[0] for row in skipped).most_common():
        print(f"  skipped ({reason}): {count}")
    return 0


def run_train(args) -> int:
    from .config import TrainingConfig
    from .trainer import Trainer

    _configure_logging()
    config = TrainingConfig.from_file(args.config, overrides=args.set)
    result = Trainer(config).train()
    if result.losses:
        print(f"trained to step {result.final_step}; last loss {result.losses[-1][1]:.5f}")
    if result.export is not None:
        print(f"exported {result.export}")
    return 0


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emocast_core.training", description="EmoCAST training tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_dataset_command(subparsers)
    add_train_command(subparsers)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
