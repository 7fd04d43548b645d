"""Weight-free measures of a generated video: clip-border seams and mouth motion against speech.

* seam ratio: the mean frame-to-frame change across the borders between generated clips divided by
  the mean change inside clips. A video without visible seams scores about 1; a jump at every
  border scores well above 1.
* mouth-audio correlation: Pearson correlation, over the frames, of a mouth-opening proxy (how dark
  the mouth region is: an open mouth shows the dark mouth cavity) with the speech envelope (RMS of
  the audio under each frame). A mouth that never moves scores exactly 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emocast_core.pipeline import clip_starts

# Where the mouth sits in a face-centred frame (the generator's crop), as fractions of width and
# height: used when no face detector is given to find the mouth corners.
DEFAULT_MOUTH_BOX = (0.35, 0.62, 0.65, 0.85)
# Mouth box around the two mouth-corner keypoints: widened by this fraction of the corner distance
# on each side, and this fraction of it above and below (lips and an open jaw fit inside).
MOUTH_BOX_MARGIN = 0.25
MOUTH_BOX_HALF_HEIGHT = 0.6


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """``(T - 1,)`` float64 mean absolute pixel change between consecutive ``(T, H, W, 3)`` frames."""
    if len(frames) < 2:
        return np.zeros(0, dtype=np.float64)
    changes = np.empty(len(frames) - 1, dtype=np.float64)
    for index in range(len(frames) - 1):  # one pair at a time: no (T, H, W, 3) int16 copy of the video
        changes[index] = np.abs(frames[index + 1].astype(np.int16) - frames[index].astype(np.int16)).mean()
    return changes


def clip_border_pairs(num_frames: int, clip_length: int, overlap: int = 0) -> np.ndarray:
    """Indices ``i`` of the frame pairs ``(i, i + 1)`` that cross a border between generated clips.

    Clips start where the pipeline starts them (``pipeline.clip_starts``); with ``overlap`` frames
    cross-faded, the whole blended stretch counts as the border.
    """
    pairs = []
    for start in clip_starts(num_frames, clip_length, overlap)[1:]:
        pairs.extend(range(start - 1, min(start + overlap, num_frames - 1)))
    return np.array(sorted(set(pairs)), dtype=np.int64)


def seam_ratio(frames: np.ndarray, clip_length: int, overlap: int = 0) -> float | None:
    """Mean change across clip borders / mean change inside clips; None for a single clip or a
    video that does not change inside its clips."""
    changes = frame_changes(frames)
    border = clip_border_pairs(len(frames), clip_length, overlap)
    if border.size == 0 or border.size == changes.size:
        return None
    inside = np.delete(changes, border)
    inside_mean = float(inside.mean())
    if inside_mean <= 1e-9:
        return None
    return float(changes[border].mean()) / inside_mean


def mouth_box_from_keypoints(left_corner: np.ndarray, right_corner: np.ndarray) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` pixels of the mouth region around the two mouth-corner keypoints."""
    left, right = np.asarray(left_corner, dtype=np.float64), np.asarray(right_corner, dtype=np.float64)
    width = float(np.linalg.norm(right - left))
    centre = (left + right) / 2.0
    half_width = width * (0.5 + MOUTH_BOX_MARGIN)
    half_height = width * MOUTH_BOX_HALF_HEIGHT
    return (centre[0] - half_width, centre[1] - half_height, centre[0] + half_width, centre[1] + half_height)


def default_mouth_box(height: int, width: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = DEFAULT_MOUTH_BOX
    return (x0 * width, y0 * height, x1 * width, y1 * height)


def mouth_openings(frames: np.ndarray, mouth_boxes: Sequence[tuple[float, float, float, float]]) -> np.ndarray:
    """``(T,)`` mouth-opening proxy: darkness (1 - mean luma in [0, 1]) of each frame's mouth box."""
    height, width = frames.shape[1:3]
    openings = np.zeros(len(frames), dtype=np.float64)
    for index, (frame, box) in enumerate(zip(frames, mouth_boxes)):
        x0, y0 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
        x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x1 <= x0 or y1 <= y0:
            openings[index] = np.nan
            continue
        region = frame[y0:y1, x0:x1].astype(np.float64)
        luma = region @ np.array([0.299, 0.587, 0.114]) / 255.0
        openings[index] = 1.0 - luma.mean()
    return openings


def speech_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """``(num_frames,)`` RMS of the audio under each video frame (zeros past the end of the audio)."""
    samples_per_frame = sample_rate / fps
    envelope = np.zeros(num_frames, dtype=np.float64)
    for index in range(num_frames):
        start, stop = round(index * samples_per_frame), round((index + 1) * samples_per_frame)
        chunk = np.asarray(audio[start:stop], dtype=np.float64)
        if chunk.size:
            envelope[index] = np.sqrt(np.mean(chunk * chunk))
    return envelope


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the entries finite in both; 0 when either side does not vary."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    count = min(len(a), len(b))
    a, b = a[:count], b[:count]
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def mouth_audio_correlation(frames: np.ndarray, audio: np.ndarray, sample_rate: int, fps: float,
                            mouth_boxes: Sequence[tuple[float, float, float, float]] | None = None) -> float:
    """Correlation of the mouth-opening proxy with the speech envelope, frame by frame (no lag)."""
    if mouth_boxes is None:
        mouth_boxes = [default_mouth_box(*frames.shape[1:3])] * len(frames)
    openings = mouth_openings(frames, mouth_boxes)
    return pearson(openings, speech_envelope(audio, sample_rate, fps, len(frames)))
