"""Evaluation results and how they are written: a terminal table, JSON and CSV.

JSON layout (stable for scripts)::

    {"videos": [{"path": ..., "sync_c": ..., ..., "notes": [...]}, ...],
     "summary": {"videos": N, "sync_c": ..., ..., "emotion_confusion": {...}},
     "notes": {"fvd": "skipped: ..."}}

A metric that could not be measured is ``null`` in JSON and empty in CSV. Files are written to a
temporary name beside the target and renamed when complete.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

METRIC_NAMES = ("sync_c", "sync_d", "fid", "fvd", "identity_similarity", "emotion_accuracy", "seam_ratio",
                "mouth_audio_correlation")
# Extra per-video values worth keeping: the SyncNet offset and the classifier's verdict.
DETAIL_NAMES = ("sync_offset", "requested_emotion", "predicted_emotion")
SUMMARY_ROW = "ALL"


@dataclass
class VideoResult:
    path: Path
    metrics: dict = field(default_factory=lambda: dict.fromkeys(METRIC_NAMES))
    details: dict = field(default_factory=lambda: dict.fromkeys(DETAIL_NAMES))
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"path": str(self.path), **self.metrics, **self.details, "notes": list(self.notes)}


@dataclass
class EvaluationReport:
    """``videos``: per-video results; ``summary``: the metrics over all videos (means of per-video
    values, and FID / FVD over the pooled frames / clips); ``notes``: why a metric was skipped."""

    videos: list[VideoResult]
    summary: dict
    notes: dict[str, str]

    def to_dict(self) -> dict:
        return {"videos": [video.to_dict() for video in self.videos], "summary": self.summary, "notes": self.notes}

    def write_json(self, path: str | Path) -> Path:
        return write_atomically(path, json.dumps(_finite(self.to_dict()), indent=2) + "\n")

    def write_csv(self, path: str | Path) -> Path:
        """One row per video, then a row ``ALL`` with the summary (its ``sync_offset`` is the mean |offset|)."""
        columns = ["path", *METRIC_NAMES, *DETAIL_NAMES]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for video in self.videos:
            row = video.to_dict()
            writer.writerow([_cell(row.get(column)) for column in columns])
        summary = {**self.summary, "sync_offset": self.summary.get("mean_abs_sync_offset")}
        writer.writerow([SUMMARY_ROW] + [_cell(summary.get(column)) for column in columns[1:]])
        return write_atomically(path, buffer.getvalue())

    def format_table(self) -> str:
        """A fixed-width table: one line per video, the summary, then the notes."""
        names = [video.path.name for video in self.videos] + [SUMMARY_ROW]
        width = max(12, *(len(name) for name in names))
        header = f"{'video':<{width}} " + " ".join(f"{_short(name):>9}" for name in METRIC_NAMES)
        lines = [header, "-" * len(header)]
        for video in self.videos:
            lines.append(f"{video.path.name:<{width}} " + " ".join(f"{_number(video.metrics[name]):>9}" for name in METRIC_NAMES))
        lines.append("-" * len(header))
        lines.append(f"{SUMMARY_ROW:<{width}} " + " ".join(f"{_number(self.summary.get(name)):>9}" for name in METRIC_NAMES))
        for name, note in self.notes.items():
            lines.append(f"{name}: {note}")
        for video in self.videos:
            lines.extend(f"{video.path.name}: {note}" for note in video.notes)
        return "\n".join(lines)


_SHORT_NAMES = {"identity_similarity": "identity", "emotion_accuracy": "emotion", "seam_ratio": "seam",
                "mouth_audio_correlation": "mouth-aud"}


def _short(name: str) -> str:
    return _SHORT_NAMES.get(name, name)


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _finite(value):
    """NaN/inf as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def write_atomically(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
