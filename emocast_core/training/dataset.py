"""Training samples from a built dataset, and emotion-aware sampling part 2: the reference frame.

`TalkingClipDataset[SampleKey]` returns one sample: `num_frames` consecutive target frames, the
`num_motion_frames` frames before them, a reference frame, the matching wav2vec2 windows, the
clip's identity embedding, face-locator mask, union region masks and an emotive caption.

Reference choice (`ReferencePolicy`), our interpretation of the paper's emotion-aware sampling (see
docs/training.md): if the reference shows the same expression as the target, the model can copy the
emotion from the reference and ignore the text. With "different_expression" the reference is

* with probability `cross_clip_probability`, a frame of another clip of the same speaker whose
  emotion label differs (MEAD records every speaker in every emotion), when one exists;
* otherwise a frame of the same clip, at least `sample_margin` frames from the targets, drawn among
  the `expression_quantile` share of candidates whose landmark expression differs most from the
  targets' (`expression_descriptor`).

"random" is Hallo's choice: any frame of the clip at least `sample_margin` away.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conditioning.masks import mask_levels
from .sampler import SampleKey
from .shards import ClipRecord, ShardReader, read_index


@dataclass
class ReferencePolicy:
    policy: str = "different_expression"
    cross_clip_probability: float = 0.5
    expression_quantile: float = 0.5
    sample_margin: int = 30


def expression_descriptor(oval: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """A pose- and scale-normalised expression vector from one frame's points ((K, 2) arrays).

    Points are centred on the face oval and divided by its RMS radius, so distances compare mouth
    and jaw shapes rather than where the head is.
    """
    points = np.concatenate([oval, lips], axis=0).astype(np.float64)
    center = oval.mean(axis=0)
    scale = np.sqrt(((oval - center) ** 2).sum(axis=1).mean()) + 1e-8
    return ((points - center) / scale).reshape(-1)


def _frame_descriptors(oval: np.ndarray, lips: np.ndarray) -> np.ndarray:
    """(T, D) descriptors, NaN rows for frames without landmarks."""
    rows = []
    for frame_oval, frame_lips in zip(oval, lips):
        if np.isnan(frame_oval).any() or np.isnan(frame_lips).any():
            rows.append(None)
        else:
            rows.append(expression_descriptor(frame_oval, frame_lips))
    width = next((row.shape[0] for row in rows if row is not None), 0)
    return np.stack([row if row is not None else np.full(width, np.nan) for row in rows]) if rows else np.zeros((0, 0))


def required_frames(num_frames: int, num_motion_frames: int) -> int:
    """Frames a clip needs for one sample: the motion frames, the targets and one reference frame."""
    return num_motion_frames + num_frames + 1


class TalkingClipDataset(Dataset):
    """Samples of a dataset folder for one training stage.

    Clips shorter than `required_frames(...)` are left out (`excluded` lists their ids).
    `mask_levels` is the number of UNet levels of the network being trained.
    """

    def __init__(
        self,
        root: Path,
        num_frames: int,
        num_motion_frames: int,
        reference: ReferencePolicy = ReferencePolicy(),
        audio_margin: int = 2,
        caption_choice: str = "random",
        num_mask_levels: int = 4,
        records: Optional[Sequence[ClipRecord]] = None,
    ):
        self.root = Path(root)
        all_records = list(records) if records is not None else read_index(self.root)
        if not all_records:
            raise FileNotFoundError(f"{self.root}: no clips in index.jsonl (build the dataset first)")
        need = required_frames(num_frames, num_motion_frames)
        self.records = [r for r in all_records if r.num_frames >= need]
        self.excluded = [r.id for r in all_records if r.num_frames < need]
        if not self.records:
            raise ValueError(f"{self.root}: no clip has the {need} frames a sample needs")
        self.num_frames = num_frames
        self.num_motion_frames = num_motion_frames
        self.reference = reference
        self.audio_margin = audio_margin
        self.caption_choice = caption_choice
        self.num_mask_levels = num_mask_levels
        self.reader = ShardReader(self.root)
        self._descriptors: dict[str, np.ndarray] = {}
        # Other clips of each speaker, by emotion, for cross-clip references.
        self._by_speaker: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            self._by_speaker.setdefault(record.speaker or record.id, []).append(index)

    def __len__(self) -> int:
        return len(self.records)

    def labels(self) -> list[tuple[str, Optional[int]]]:
        """(emotion, intensity) of every clip, for `EmotionBalancedSampler`."""
        return [(record.emotion, record.intensity) for record in self.records]

    # --- frame choice ----------------------------------------------------------------------------

    def descriptors(self, record: ClipRecord) -> np.ndarray:
        if record.id not in self._descriptors:
            oval = self.reader.tensor(record, "landmarks_oval").numpy()
            lips = self.reader.tensor(record, "landmarks_lips").numpy()
            self._descriptors[record.id] = _frame_descriptors(oval, lips)
        return self._descriptors[record.id]

    def choose_frames(self, index: int, rng: np.random.Generator) -> dict:
        """Target start, and the reference as (clip index, frame index)."""
        record = self.records[index]
        length = record.num_frames
        start = int(rng.integers(self.num_motion_frames, length - self.num_frames + 1))
        targets = np.arange(start, start + self.num_frames)
        policy = self.reference
        if policy.policy == "different_expression" and rng.random() < policy.cross_clip_probability:
            other = self._cross_clip_reference(index, rng)
            if other is not None:
                return {"start": start, "reference_clip": other[0], "reference_frame": other[1]}
        frame = self._same_clip_reference(record, targets, rng)
        return {"start": start, "reference_clip": index, "reference_frame": frame}

    def _reference_candidates(self, length: int, targets: np.ndarray) -> np.ndarray:
        frames = np.arange(length)
        distance = np.min(np.abs(frames[:, None] - targets[None, :]), axis=1)
        for margin in (self.reference.sample_margin, 1, 0):
            candidates = frames[distance >= margin]
            if len(candidates):
                return candidates
        return frames

    def _same_clip_reference(self, record: ClipRecord, targets: np.ndarray, rng: np.random.Generator) -> int:
        candidates = self._reference_candidates(record.num_frames, targets)
        if self.reference.policy == "different_expression":
            descriptors = self.descriptors(record)
            target_rows = descriptors[targets]
            valid_targets = target_rows[~np.isnan(target_rows).any(axis=1)]
            candidate_rows = descriptors[candidates]
            valid = ~np.isnan(candidate_rows).any(axis=1)
            if len(valid_targets) and valid.any():
                target_expression = valid_targets.mean(axis=0)
                candidates = candidates[valid]
                distance = np.linalg.norm(candidate_rows[valid] - target_expression, axis=1)
                keep = max(1, int(np.ceil(self.reference.expression_quantile * len(candidates))))
                candidates = candidates[np.argsort(-distance, kind="stable")[:keep]]
        return int(rng.choice(candidates))

    def _cross_clip_reference(self, index: int, rng: np.random.Generator) -> Optional[tuple[int, int]]:
        record = self.records[index]
        others = [
            i for i in self._by_speaker.get(record.speaker or record.id, [])
            if i != index and self.records[i].emotion != record.emotion
        ]
        if not others:
            return None
        other = int(rng.choice(others))
        descriptors = self.descriptors(self.records[other])
        valid = np.flatnonzero(~np.isnan(descriptors).any(axis=1)) if descriptors.size else np.array([], dtype=int)
        frames = valid if len(valid) else np.arange(self.records[other].num_frames)
        return other, int(rng.choice(frames))

    # --- sample ----------------------------------------------------------------------------------

    def __getitem__(self, key) -> dict:
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), int(key))
        rng = np.random.default_rng(key.seed)
        index = key.clip_index
        record = self.records[index]
        choice = self.choose_frames(index, rng)
        start = choice["start"]
        motion = list(range(start - self.num_motion_frames, start))
        targets = list(range(start, start + self.num_frames))
        frames = self.reader.frames(record, motion + targets)
        reference_record = self.records[choice["reference_clip"]]
        reference = self.reader.frames(reference_record, [choice["reference_frame"]])

        pixels = _to_pixels(frames)
        sample = {
            "pixel_values": pixels[self.num_motion_frames:],
            "reference_pixel_values": torch.cat([_to_pixels(reference), pixels[: self.num_motion_frames]]),
            "audio_windows": self._audio_windows(record, start),
            "face_embedding": self.reader.tensor(record, "face_embedding").float(),
            "face_region": self.reader.tensor(record, "face_region").float()[None].expand(3, -1, -1).contiguous(),
            "caption": self._caption(record, rng),
            "emotion": record.emotion,
            "intensity": -1 if record.intensity is None else int(record.intensity),
            "clip_index": index,
            "sample_seed": key.seed,
            "reference_from_other_clip": choice["reference_clip"] != index,
        }
        for name in ("full", "face", "lip"):
            soft = self.reader.tensor(record, f"soft_{name}").numpy()
            levels = mask_levels(soft, record.size)[: self.num_mask_levels]
            sample[f"{name}_mask"] = [torch.from_numpy(level.reshape(-1)) for level in levels]
        return sample

    def _audio_windows(self, record: ClipRecord, start: int) -> torch.Tensor:
        """(F, 2 * margin + 1, L, C): each target frame with its neighbours, clamped to the clip."""
        margin = self.audio_margin
        low = max(start - margin, 0)
        high = min(start + self.num_frames + margin, record.num_frames)
        rows = self.reader.rows(record, "audio_features", low, high).float()
        centers = torch.arange(start, start + self.num_frames)[:, None] + torch.arange(-margin, margin + 1)[None, :]
        return rows[centers.clamp(0, record.num_frames - 1) - low]

    def _caption(self, record: ClipRecord, rng: np.random.Generator) -> str:
        if self.caption_choice == "first" or len(record.captions) == 1:
            return record.captions[0]
        return record.captions[int(rng.integers(len(record.captions)))]


def _to_pixels(frames: np.ndarray) -> torch.Tensor:
    """(n, S, S, 3) uint8 -> (n, 3, S, S) float32 in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def collate_samples(samples: list[dict]) -> dict:
    """Stack tensors, keep strings/ints as lists; mask lists become per-level (B, h*w) tensors."""
    batch = {}
    for name, value in samples[0].items():
        values = [sample[name] for sample in samples]
        if isinstance(value, torch.Tensor):
            batch[name] = torch.stack(values)
        elif isinstance(value, list):
            batch[name] = [torch.stack([v[level] for v in values]) for level in range(len(value))]
        else:
            batch[name] = values
    return batch
