"""The on-disk training set: an index (JSONL) plus sharded tensors (safetensors).

Layout of a dataset folder::

    index.jsonl            one JSON object per clip (see `ClipRecord`)
    skipped.jsonl          one {"source", "reason"} per video that was left out
    shards/shard-00000.safetensors ...

A shard holds several clips; every tensor name is `<clip id>/<field>`:

    frames       uint8 (total_bytes,)  the clip's frames, each JPEG (or PNG) encoded, concatenated
    frame_offsets int64 (T + 1,)       byte offset of each encoded frame in `frames`
    audio_features float16 (T, L, C)   wav2vec2 layer outputs, one row per 25 fps frame
    audio_waveform int16 (N,)          the 16 kHz mono audio (validation videos get their sound)
    face_embedding float32 (512,)      ArcFace identity of the first frame with a face
    face_region   uint8 (S, S)         per-clip union face rectangle, 0/1 (face-locator input)
    soft_full / soft_face / soft_lip  uint8 (64, 64)  upstream's blurred union region masks
    landmarks_oval / landmarks_lips  float32 (T, K, 2)  per-frame points in crop pixels (NaN: no face)

Reading uses safetensors' lazy slices, so a sample decodes only the frames it needs.
"""
from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

INDEX_FILE = "index.jsonl"
SKIPPED_FILE = "skipped.jsonl"
SHARD_FOLDER = "shards"
FORMAT_NAME = "emocast-training-shard"
FORMAT_VERSION = "1"


@dataclass
class ClipRecord:
    """One line of index.jsonl.

    id: unique clip id (`<hash of source>-<segment>`); source: the video path relative to the input
    folder; segment / start_frame: which part of the video (long videos may be cut); shard: the shard
    file relative to the dataset folder; num_frames: 25 fps frames (== audio feature rows); size:
    side of the square crops; captions: emotive descriptions (the first is the main one);
    emotion / intensity / speaker: labels used by the emotion-aware sampler; caption_source: where
    the captions came from ("file", "captioner", "label").
    """

    id: str
    source: str
    shard: str
    num_frames: int
    size: int
    captions: list
    emotion: str = "unknown"
    intensity: Optional[int] = None
    speaker: Optional[str] = None
    caption_source: str = "label"
    segment: int = 0
    start_frame: int = 0
    fps: int = 25
    frame_codec: str = "jpeg"

    @classmethod
    def from_dict(cls, data: dict) -> "ClipRecord":
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class ClipTensors:
    """What the builder computed for one clip (see the module doc for the fields)."""

    frames: list  # encoded frames (bytes), one per 25 fps frame
    audio_features: torch.Tensor
    audio_waveform: torch.Tensor
    face_embedding: torch.Tensor
    face_region: torch.Tensor
    soft_full: torch.Tensor
    soft_face: torch.Tensor
    soft_lip: torch.Tensor
    landmarks_oval: torch.Tensor
    landmarks_lips: torch.Tensor

    def as_named_tensors(self, clip_id: str) -> dict[str, torch.Tensor]:
        lengths = np.array([len(frame) for frame in self.frames], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        blob = np.frombuffer(b"".join(self.frames), dtype=np.uint8).copy()
        tensors = {
            "frames": torch.from_numpy(blob),
            "frame_offsets": torch.from_numpy(offsets),
            "audio_features": self.audio_features.to(torch.float16),
            "audio_waveform": self.audio_waveform.to(torch.int16),
            "face_embedding": self.face_embedding.to(torch.float32),
            "face_region": self.face_region.to(torch.uint8),
            "soft_full": self.soft_full.to(torch.uint8),
            "soft_face": self.soft_face.to(torch.uint8),
            "soft_lip": self.soft_lip.to(torch.uint8),
            "landmarks_oval": self.landmarks_oval.to(torch.float32),
            "landmarks_lips": self.landmarks_lips.to(torch.float32),
        }
        return {f"{clip_id}/{name}": tensor.contiguous() for name, tensor in tensors.items()}


def encode_frame(frame_rgb: np.ndarray, codec: str = "jpeg", quality: int = 95) -> bytes:
    """(S, S, 3) uint8 RGB -> encoded bytes."""
    bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    if codec == "jpeg":
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif codec == "png":
        ok, buffer = cv2.imencode(".png", bgr)
    else:
        raise ValueError(f"frame codec must be 'jpeg' or 'png', got {codec!r}")
    if not ok:
        raise RuntimeError("frame encoding failed")
    return buffer.tobytes()


def decode_frame(encoded: np.ndarray) -> np.ndarray:
    """Encoded bytes (uint8 array) -> (S, S, 3) uint8 RGB."""
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a stored frame could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def read_index(root: Path) -> list[ClipRecord]:
    path = Path(root) / INDEX_FILE
    if not path.is_file():
        return []
    return [ClipRecord.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def read_skipped(root: Path) -> list[dict]:
    path = Path(root) / SKIPPED_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_lines(path: Path, rows: Iterable[dict]) -> None:
    """Append JSON lines in one write, flushed to disk (the index is the resume record)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    if not text:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class ShardWriter:
    """Buffers clips and writes them as shards; the index grows only after a shard is complete.

    `add_source` takes all clips of one video at once, so a video is either fully indexed or not at
    all: an interrupted build resumes with the videos that are absent from index.jsonl and
    skipped.jsonl (`done_sources`).
    """

    def __init__(self, root: Path, clips_per_shard: int = 16):
        self.root = Path(root)
        self.clips_per_shard = max(1, int(clips_per_shard))
        (self.root / SHARD_FOLDER).mkdir(parents=True, exist_ok=True)
        self._pending_records: list[ClipRecord] = []
        self._pending_tensors: dict[str, torch.Tensor] = {}
        existing = [int(p.stem.split("-")[-1]) for p in (self.root / SHARD_FOLDER).glob("shard-*.safetensors")]
        self._next_shard = max(existing, default=-1) + 1

    def done_sources(self) -> set[str]:
        """Sources already indexed or skipped (what a resumed build leaves out)."""
        return {record.source for record in read_index(self.root)} | {row["source"] for row in read_skipped(self.root)}

    def add_source(self, records: Sequence[ClipRecord], tensors: Sequence[ClipTensors]) -> None:
        for record, clip in zip(records, tensors):
            self._pending_records.append(record)
            self._pending_tensors.update(clip.as_named_tensors(record.id))
        if len(self._pending_records) >= self.clips_per_shard:
            self.flush()

    def skip(self, source: str, reason: str) -> None:
        _append_lines(self.root / SKIPPED_FILE, [{"source": source, "reason": reason}])

    def flush(self) -> None:
        if not self._pending_records:
            return
        name = f"{SHARD_FOLDER}/shard-{self._next_shard:05d}.safetensors"
        path = self.root / name
        temporary = path.with_name(f".{path.name}.partial")
        metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}
        save_file(self._pending_tensors, str(temporary), metadata=metadata)
        os.replace(temporary, path)
        for record in self._pending_records:
            record.shard = name
        _append_lines(self.root / INDEX_FILE, [asdict(record) for record in self._pending_records])
        self._next_shard += 1
        self._pending_records, self._pending_tensors = [], {}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclass
class ShardReader:
    """Lazy access to clip tensors; keeps a few shard files open (one reader per worker process)."""

    root: Path
    max_open: int = 8
    _handles: "OrderedDict[str, object]" = field(default_factory=OrderedDict, repr=False)

    def __getstate__(self):
        # Open file handles do not cross process boundaries (DataLoader workers reopen them).
        return {"root": self.root, "max_open": self.max_open, "_handles": OrderedDict()}

    def _handle(self, shard: str):
        if shard in self._handles:
            self._handles.move_to_end(shard)
            return self._handles[shard]
        handle = safe_open(str(Path(self.root) / shard), framework="pt", device="cpu")
        self._handles[shard] = handle
        while len(self._handles) > self.max_open:
            self._handles.popitem(last=False)
        return handle

    def tensor(self, record: ClipRecord, name: str) -> torch.Tensor:
        return self._handle(record.shard).get_tensor(f"{record.id}/{name}")

    def rows(self, record: ClipRecord, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a tensor, read without loading the rest."""
        return self._handle(record.shard).get_slice(f"{record.id}/{name}")[start:stop]

    def frames(self, record: ClipRecord, indices: Sequence[int]) -> np.ndarray:
        """Decoded frames (n, S, S, 3) uint8 RGB."""
        offsets = self.tensor(record, "frame_offsets")
        handle = self._handle(record.shard).get_slice(f"{record.id}/frames")
        decoded = []
        for index in indices:
            start, stop = int(offsets[index]), int(offsets[index + 1])
            decoded.append(decode_frame(handle[start:stop].numpy()))
        return np.stack(decoded)
