"""Reading a video to evaluate: its frames at the evaluation frame rate and its speech track.

Evaluation holds one video in memory at a time (talking-head clips are seconds long); frames are
taken at a fixed rate (25 fps, the rate SyncNet and the generator use) by nearest-frame selection,
so a 30 fps ground truth and a 25 fps generation are compared frame for frame in time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emocast_core.conditioning.audio_decode import AudioDecodeError, load_audio
from emocast_core.video import probe_video, read_video_frames

EVALUATION_FPS = 25.0
AUDIO_SAMPLE_RATE = 16000  # SyncNet's MFCCs and the speech envelope are both read at 16 kHz


@dataclass(frozen=True)
class EvaluatedVideo:
    """A decoded video.

    Attributes:
        path: the file.
        frames: ``(T, H, W, 3)`` uint8 RGB at ``fps``.
        fps: frame rate of ``frames``.
        audio: ``(S,)`` float32 mono speech at ``AUDIO_SAMPLE_RATE`` (full scale 1.0), or None when the
            file has no audio track.
    """

    path: Path
    frames: np.ndarray
    fps: float
    audio: np.ndarray | None

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


def resample_frames(frames: np.ndarray, source_fps: float, fps: float) -> np.ndarray:
    """Nearest-in-time frames at ``fps`` (frame k shows the source frame nearest to time k / fps)."""
    if source_fps <= 0 or abs(source_fps - fps) < 1e-3 or len(frames) == 0:
        return frames
    duration = len(frames) / source_fps
    count = max(1, round(duration * fps))
    source_index = np.minimum(np.round(np.arange(count) * source_fps / fps).astype(np.int64), len(frames) - 1)
    return frames[source_index]


def read_evaluated_video(path: str | Path, fps: float = EVALUATION_FPS, with_audio: bool = True) -> EvaluatedVideo:
    """Decode ``path``: frames resampled to ``fps`` and (when asked and present) its mono 16 kHz audio."""
    path = Path(path)
    info = probe_video(path)
    frames = resample_frames(read_video_frames(path), info.fps, fps)
    if frames.shape[0] == 0:
        raise ValueError(f"{path}: the video has no frames")
    audio = None
    if with_audio and info.has_audio:
        try:
            audio = load_audio(path, sample_rate=AUDIO_SAMPLE_RATE).waveform
        except AudioDecodeError:
            audio = None  # an empty audio track counts as none; the audio metrics then say so
    return EvaluatedVideo(path, frames, fps, audio)
