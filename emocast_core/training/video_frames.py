"""Decoding a source video at the training frame rate, and choosing one stable face crop for it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..conditioning.crop import CropTransform, face_crop_transform


def iter_frames_at_fps(path: Path, fps: float) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames resampled to `fps`, like ffmpeg's `fps` filter.

    Output frame k shows the input frame nearest to time k / fps (times counted from the first
    frame); frames are dropped or repeated as needed. Only one decoded frame is held at a time.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or fps)
        previous, previous_time, first_time = None, None, None
        output_index = 0
        for frame in container.decode(stream):
            time = frame.time if frame.time is not None else (previous_time or 0.0) + 1.0 / rate
            if first_time is None:
                first_time = time
            time -= first_time
            image = frame.to_ndarray(format="rgb24")
            if previous is not None:
                # Outputs closer in time to the previous frame than to this one show the previous frame.
                midpoint = (previous_time + time) / 2.0
                while output_index / fps < midpoint:
                    yield previous
                    output_index += 1
            previous, previous_time = image, time
        if previous is not None:
            end = previous_time + 1.0 / rate
            while output_index / fps < end - 0.5 / fps:
                yield previous
                output_index += 1


def stable_face_crop(
    boxes: Sequence[np.ndarray], source_size: tuple[int, int], output_size: int, crop_scale: float
) -> CropTransform:
    """One square crop for the whole video from face boxes (x0, y0, x1, y1) seen on sampled frames.

    Centred on the middle of the union of the boxes, with side `crop_scale` x the median box side,
    grown when needed so that every sampled box fits: a fixed crop (no jitter) that keeps the face
    in frame while the head moves.
    """
    stacked = np.asarray(boxes, dtype=np.float64)
    union = np.array([stacked[:, 0].min(), stacked[:, 1].min(), stacked[:, 2].max(), stacked[:, 3].max()])
    median_side = float(np.median(np.maximum(stacked[:, 2] - stacked[:, 0], stacked[:, 3] - stacked[:, 1])))
    union_side = float(max(union[2] - union[0], union[3] - union[1]))
    side = max(median_side, union_side / crop_scale)
    center_x, center_y = (union[0] + union[2]) / 2.0, (union[1] + union[3]) / 2.0
    box = np.array([center_x - side / 2.0, center_y - side / 2.0, center_x + side / 2.0, center_y + side / 2.0])
    return face_crop_transform(box, source_size, output_size, crop_scale)
