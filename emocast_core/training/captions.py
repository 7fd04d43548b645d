"""Emotive text descriptions of training clips, and where their emotion labels come from.

A clip's caption comes from, in order of precedence:

1. a user caption file (`read_caption_file`): the clip's own sentence;
2. a captioning callable the user plugs in (`load_captioner("package.module:function")`), called as
   `captioner(video_path, ClipLabel) -> str | None`;
3. its emotion label (+ intensity) through `describe_emotion`, which writes sentences in the style of
   the prompts the released model was shown ("A person is talking with happy emotion.").

Labels come from a label file (`read_label_file`) or from MEAD's folder convention
(`parse_mead_path`, e.g. `M003/video/front/happy/level_2/001.mp4`).
"""
from __future__ import annotations

import csv
import hashlib
import importlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..conditioning.emotion_presets import preset_name

# Sentence subjects of the released examples ("A person is talking with happy emotion.", "The person
# is talking with angry emotion.", "A portrait is talking with happy emotion.").
CAPTION_SUBJECTS = ("A person", "The person", "A portrait", "The portrait")
CAPTION_TEMPLATE = "{subject} is talking with {strength}{emotion} emotion."
# MEAD intensity levels 1..3. Level 2 is MEAD's "normal" and gets no word, so that the canonical
# preset prompt ("A person is talking with happy emotion.") is exactly a level-2 caption.
INTENSITY_WORDS = {1: "slight ", 2: "", 3: "strong "}
NEUTRAL = "neutral"
UNKNOWN_EMOTION = "unknown"

_MEAD_LEVEL = re.compile(r"^level[_-]?(\d+)$", re.IGNORECASE)
_MEAD_SPEAKER = re.compile(r"^[MW]\d{3}$")


@dataclass(frozen=True)
class ClipLabel:
    """What is known about a source video before captioning.

    emotion: canonical emotion name (a preset name such as "happy", "fearful") or "unknown".
    intensity: 1..3 (MEAD levels) or None.
    speaker: identity label used to find other clips of the same person (MEAD speaker id, a label
        file's `speaker` column, or the source folder name).
    """

    emotion: str = UNKNOWN_EMOTION
    intensity: Optional[int] = None
    speaker: Optional[str] = None


def canonical_emotion(text: Optional[str]) -> str:
    """'Happiness' / 'fear' / 'FEARFUL' -> preset name ('happy', 'fearful'); other words lower-cased."""
    if not text:
        return UNKNOWN_EMOTION
    name = preset_name(text)
    return name if name is not None else text.strip().lower()


def parse_mead_path(relative_path: Path) -> Optional[ClipLabel]:
    """Emotion, level and speaker from a MEAD-style path, or None when the path is not one.

    Recognised: `<speaker>/video/<view>/<emotion>/level_<n>/<take>.mp4` and any path that has an
    `<emotion>/level_<n>/` pair of folders (the speaker is then the first `[MW]ddd` folder, if any).
    """
    parts = Path(relative_path).parts[:-1]
    for index in range(len(parts) - 1, 0, -1):
        match = _MEAD_LEVEL.match(parts[index])
        if match:
            speaker = next((part for part in parts if _MEAD_SPEAKER.match(part)), None)
            return ClipLabel(canonical_emotion(parts[index - 1]), int(match.group(1)), speaker)
    return None


def describe_emotion(emotion: str, intensity: Optional[int] = None, subject: str = CAPTION_SUBJECTS[0]) -> str:
    """One sentence in the released prompt style, e.g. ("happy", 3) -> "A person is talking with
    strong happy emotion."; "neutral" ignores the intensity."""
    emotion = canonical_emotion(emotion)
    if emotion == UNKNOWN_EMOTION:
        raise ValueError("cannot describe an unknown emotion; give a caption or a label")
    strength = "" if emotion == NEUTRAL or intensity is None else INTENSITY_WORDS.get(int(intensity), "")
    return CAPTION_TEMPLATE.format(subject=subject, strength=strength, emotion=emotion)


def emotion_captions(emotion: str, intensity: Optional[int], key: str) -> list[str]:
    """All template sentences for a label, the first chosen by a stable hash of `key` (so captions
    vary across clips but never between runs)."""
    sentences = [describe_emotion(emotion, intensity, subject) for subject in CAPTION_SUBJECTS]
    first = int(hashlib.sha1(key.encode()).hexdigest(), 16) % len(sentences)
    return sentences[first:] + sentences[:first]


# --------------------------------------------------------------------------------------------
# User files
# --------------------------------------------------------------------------------------------


def _lookup_keys(relative_path: Path) -> list[str]:
    """Keys a user may have used for a video: the relative path (with and without suffix) and stem."""
    posix = relative_path.as_posix()
    return [posix, posix.rsplit(".", 1)[0], relative_path.name, relative_path.stem]


def _read_rows(path: Path) -> list[dict]:
    """Rows of a .jsonl / .json / .csv / .tsv file as dicts (a .json mapping gives key/value rows)."""
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [{"video": key, "value": value} for key, value in data.items()]
        return list(data)
    delimiter = "\t" if suffix == ".tsv" else ","
    return list(csv.DictReader(text.splitlines(), delimiter=delimiter))


class _KeyedTable:
    """Rows keyed by video path / stem, looked up with `_lookup_keys`."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows

    def get(self, relative_path: Path) -> Optional[dict]:
        for key in _lookup_keys(relative_path):
            if key in self.rows:
                return self.rows[key]
        return None


def _video_key(row: dict, path: Path) -> str:
    for name in ("video", "path", "file", "id"):
        if row.get(name):
            return str(row[name]).replace("\\", "/")
    raise ValueError(f"{path}: a row has no 'video' (or path/file/id) column: {row}")


def read_caption_file(path: Path) -> Callable[[Path], Optional[str]]:
    """A lookup `relative video path -> caption` from a .jsonl/.json/.csv/.tsv file.

    Rows carry the video (`video`, `path`, `file` or `id`: relative path, with or without suffix, or
    the file stem) and the text (`caption` or `text`); a .json file may also be `{video: caption}`.
    """
    table = {}
    for row in _read_rows(Path(path)):
        caption = row.get("caption") or row.get("text") or row.get("value")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"{path}: a row has no caption text: {row}")
        table[_video_key(row, path)] = {"caption": caption.strip()}
    keyed = _KeyedTable(table)
    return lambda relative_path: (keyed.get(relative_path) or {}).get("caption")


def read_label_file(path: Path) -> Callable[[Path], Optional[ClipLabel]]:
    """A lookup `relative video path -> ClipLabel` from a .jsonl/.json/.csv/.tsv file with columns
    `video`, `emotion`, optional `intensity` (1..3 or "level_2") and `speaker`. A .json mapping may
    be `{video: "happy"}` or `{video: {"emotion": ..., "intensity": ...}}`."""
    table = {}
    for row in _read_rows(Path(path)):
        value = row.get("value")
        if isinstance(value, str):
            row = {**row, "emotion": value}
        elif isinstance(value, dict):
            row = {**row, **value}
        if not row.get("emotion"):
            raise ValueError(f"{path}: a row has no emotion: {row}")
        table[_video_key(row, path)] = row
    keyed = _KeyedTable(table)

    def lookup(relative_path: Path) -> Optional[ClipLabel]:
        row = keyed.get(relative_path)
        if row is None:
            return None
        return ClipLabel(canonical_emotion(row["emotion"]), _parse_intensity(row.get("intensity")), row.get("speaker") or None)

    return lookup


def _parse_intensity(value) -> Optional[int]:
    if value is None or value == "":
        return None
    match = _MEAD_LEVEL.match(str(value))
    return int(match.group(1)) if match else int(float(value))


def load_captioner(spec: str) -> Callable:
    """Import `package.module:function`, a callable `(video_path, ClipLabel) -> str | None`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"captioner must be given as 'module:function', got {spec!r}")
    captioner = getattr(importlib.import_module(module_name), attribute)
    if not callable(captioner):
        raise TypeError(f"{spec} is not callable")
    return captioner


@dataclass
class CaptionSource:
    """Everything that may describe a clip; `describe` applies the precedence of the module doc."""

    captions: Optional[Callable[[Path], Optional[str]]] = None
    labels: Optional[Callable[[Path], Optional[ClipLabel]]] = None
    captioner: Optional[Callable] = None
    mead_folders: bool = True

    def label(self, relative_path: Path) -> ClipLabel:
        """The clip's label: label file first, then the MEAD folder convention, else unknown."""
        label = self.labels(relative_path) if self.labels else None
        if label is None and self.mead_folders:
            label = parse_mead_path(relative_path)
        if label is None:
            label = ClipLabel()
        if label.speaker is None:
            # Without a speaker label, the source folder stands in for the identity.
            parent = relative_path.parent.as_posix()
            label = ClipLabel(label.emotion, label.intensity, parent if parent != "." else relative_path.stem)
        return label

    def describe(self, video_path: Path, relative_path: Path, label: ClipLabel) -> Optional[list[str]]:
        """Caption sentences (main first), or None when nothing describes the clip."""
        if self.captions is not None:
            caption = self.captions(relative_path)
            if caption:
                return [caption]
        if self.captioner is not None:
            caption = self.captioner(video_path, label)
            if caption:
                return [str(caption).strip()]
        if label.emotion != UNKNOWN_EMOTION:
            return emotion_captions(label.emotion, label.intensity, relative_path.as_posix())
        return None
