"""What to evaluate: the generated videos, and per video what it was made from.

Labels come from a CSV (header row) or JSON file (a list of objects, or an object keyed by video)
with the columns ``video`` (file name, stem or path of the generated video) and any of
``emotion`` (a preset name such as ``happy``), ``prompt`` (the emotion text used), ``reference``
(the portrait image) and ``ground_truth`` (the real video). Relative paths in it are relative to
the labels file. Ground truth can also be a folder matched by file name (or stem).
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
LABEL_COLUMNS = ("video", "emotion", "prompt", "reference", "ground_truth")


@dataclass(frozen=True)
class VideoLabels:
    """What one generated video was made for and from; every field is optional."""

    emotion: str | None = None
    prompt: str | None = None
    reference: Path | None = None
    ground_truth: Path | None = None


def collect_videos(sources: Iterable[str | Path]) -> list[Path]:
    """Video files from files and folders (a folder gives its videos, sorted by name)."""
    videos: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
            if not found:
                raise ValueError(f"{source}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
            videos.extend(found)
        elif source.is_file():
            videos.append(source)
        else:
            raise FileNotFoundError(f"{source}: no such video file or folder")
    if not videos:
        raise ValueError("no videos to evaluate: give video files or a folder of them")
    return videos


def read_labels_file(path: str | Path) -> dict[str, VideoLabels]:
    """Labels by video key (as written in the file's ``video`` column)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [{"video": key, **value} for key, value in data.items()] if isinstance(data, dict) else data
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    labels = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or not row.get("video"):
            raise ValueError(f"{path}: entry {number} has no 'video' (columns: {', '.join(LABEL_COLUMNS)})")
        unknown = set(row) - set(LABEL_COLUMNS)
        if unknown:
            raise ValueError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}; use {', '.join(LABEL_COLUMNS)}")
        reference, ground_truth = (path.parent / row[name] if row.get(name) else None
                                   for name in ("reference", "ground_truth"))
        labels[str(row["video"])] = VideoLabels(
            emotion=row.get("emotion") or None, prompt=row.get("prompt") or None,
            reference=reference, ground_truth=ground_truth,
        )
    return labels


def labels_for(video: Path, labels: Mapping[str, VideoLabels]) -> VideoLabels:
    """The entry of ``video``: by path as given, file name, or stem."""
    for key in (str(video), video.name, video.stem):
        if key in labels:
            return labels[key]
    return VideoLabels()


def ground_truth_in_folder(video: Path, folder: Path) -> Path | None:
    """The file in ``folder`` with the video's name, or else its stem with any video suffix."""
    same_name = folder / video.name
    if same_name.is_file():
        return same_name
    return next((folder / (video.stem + suffix) for suffix in VIDEO_SUFFIXES if (folder / (video.stem + suffix)).is_file()), None)
