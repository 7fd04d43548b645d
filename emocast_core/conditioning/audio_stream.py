"""wav2vec2 features of driving audio of any length, a span of video frames at a time.

:meth:`AudioEncoder.encode` runs wav2vec2 over the whole clip at once, as upstream does. Its memory
grows with the audio: the CNN's first layers run at 3200 vectors/s (10 minutes of speech give 1.9 M
vectors per channel), and the (T, 5, L, C) windows of every frame are five times the features.
:class:`StreamedAudioFeatures` computes the same numbers when the pipeline asks for a clip's frames:

* normalisation: the whole clip's mean and standard deviation, computed once; a slice of the
  normalised, zero-padded signal is made when needed (:class:`NormalizedSignal`). Exact.
* CNN: computed on the slice that a span of frames reads, in chunks; every CNN row depends on 400
  samples only, and the first layer's GroupNorm uses the whole signal's per-channel statistics,
  computed once (:class:`~.audio.ConvStatistics`). Exact.
* resampling onto the video frames: the whole clip's grid (:class:`~.audio.FrameGrid`), evaluated for
  the span. Exact.
* transformer: attention is global, so a frame's output depends on every other frame. Audio up to
  ``segment + 2 * context`` frames (60 s by default; the padding of the last clip comes on top) is
  encoded in one piece, which is the whole-clip computation. Longer audio is encoded in segments of ``segment`` frames, each run with ``context``
  frames of audio on both sides (10 s by default, fewer at the ends of the clip). Frames therefore
  attend to the audio within at least 10 s instead of the whole clip; docs/benchmarks.md gives the
  measured difference. Upstream's models never saw longer attention spans: they were trained on
  short clips, and Hallo2 cuts long audio into 60 s pieces before wav2vec2.

Every frame's features come from one fixed segment, whatever order the frames are asked for in, so
the result does not depend on how a caller walks through the video. The last two segments used are
kept; walking through the video in order computes each segment once.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from .audio import DEFAULT_WINDOW_RADIUS, ConvStatistics, Fps, FrameGrid, FrameSpan, window_indices
from .audio_decode import WAV2VEC_SAMPLE_RATE

if TYPE_CHECKING:
    from .audio import AudioEncoder

CACHED_SEGMENTS = 2  # a clip's windows straddle at most two segments


class NormalizedSignal:
    """The signal wav2vec2 reads: ``(waveform - mean) / std``, followed by zeros up to ``num_samples``
    (upstream pads after normalising). Slices are made on demand; only the original is kept."""

    def __init__(self, waveform: np.ndarray, mean: float, std: float, num_samples: int):
        if num_samples < waveform.shape[0]:
            raise ValueError(f"num_samples {num_samples} is shorter than the waveform ({waveform.shape[0]})")
        self.waveform = waveform
        self.mean = np.float32(mean)
        self.std = np.float32(std)
        self.num_samples = int(num_samples)

    @property
    def num_real_samples(self) -> int:
        return int(self.waveform.shape[0])

    def read(self, first: int, stop: int) -> np.ndarray:
        """float32 samples [first, stop) of the normalised, padded signal."""
        if not 0 <= first <= stop <= self.num_samples:
            raise ValueError(f"samples [{first}, {stop}) are outside the signal of {self.num_samples}")
        out = np.zeros(stop - first, dtype=np.float32)
        real_stop = min(stop, self.num_real_samples)
        if real_stop > first:
            np.subtract(self.waveform[first:real_stop], self.mean, out=out[: real_stop - first])
            out[: real_stop - first] /= self.std
        return out


class StreamedAudioFeatures:
    """Per-video-frame wav2vec2 features of a driving clip, computed a span at a time.

    Made by :meth:`AudioEncoder.stream`. It stands in for an :class:`~.audio.AudioFeatures` where the
    pipeline takes audio windows: ``windows(start, stop)`` gives the (stop - start, 5, L, C) windows of
    one clip, on the encoder's device and dtype. Nothing covering the whole video is ever built.

    Attributes:
        num_frames: video frames covered by the real audio; trim the video to this.
        num_padded_frames: frames including the zero padding that completes the last clip (T_pad).
        fps, sample_rate, num_samples, start_seconds: as in :class:`~.audio.AudioFeatures`.
    """

    def __init__(self, encoder: "AudioEncoder", signal: NormalizedSignal, grid: FrameGrid,
                 conv_statistics: Optional[ConvStatistics], *, num_frames: int, fps: Fps,
                 start_seconds: float = 0.0, segment_frames: int, context_frames: int, cnn_chunk: int = 256):
        if segment_frames < 1 or context_frames < 0:
            raise ValueError(f"invalid segment ({segment_frames}) or context ({context_frames}) frames")
        self.encoder = encoder
        self.signal = signal
        self.grid = grid
        self.conv_statistics = conv_statistics
        self.num_frames = int(num_frames)
        self.fps = fps
        self.sample_rate = WAV2VEC_SAMPLE_RATE
        self.start_seconds = start_seconds
        self.cnn_chunk = cnn_chunk
        self.context_frames = int(context_frames)
        # Audio that fits one encoder run is encoded whole (with the padding of its last clip): exactly
        # what `AudioEncoder.encode` computes.
        fits_once = self.num_frames <= segment_frames + 2 * context_frames
        self.segment_frames = grid.num_frames if fits_once else int(segment_frames)
        self._segments: OrderedDict[int, torch.Tensor] = OrderedDict()

    # ------------------------------------------------------------------ description
    @property
    def num_padded_frames(self) -> int:
        return self.grid.num_frames

    @property
    def num_samples(self) -> int:
        return self.signal.num_real_samples

    @property
    def end_seconds(self) -> float:
        return self.start_seconds + self.num_samples / self.sample_rate

    @property
    def num_segments(self) -> int:
        return -(-self.num_padded_frames // self.segment_frames)

    @property
    def cached_bytes(self) -> int:
        """Memory held by the cached segments' features."""
        return sum(segment.nbytes for segment in self._segments.values())

    def __len__(self) -> int:
        return self.num_padded_frames

    # ------------------------------------------------------------------ features
    def features(self, start: int, stop: int) -> torch.Tensor:
        """(stop - start, L, C): the outputs of the L transformer layers at frames [start, stop)."""
        if not 0 <= start < stop <= self.num_padded_frames:
            raise ValueError(f"frames [{start}, {stop}) are outside the {self.num_padded_frames} audio frames")
        size = self.segment_frames
        pieces = []
        for index in range(start // size, (stop - 1) // size + 1):
            core_start = index * size
            segment = self._segment(index)
            pieces.append(segment[max(start - core_start, 0): min(stop - core_start, segment.shape[0])])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def windows(self, start: int, stop: int, *, radius: int = DEFAULT_WINDOW_RADIUS) -> torch.Tensor:
        """(stop - start, 2 * radius + 1, L, C) context windows of frames [start, stop), clamped as
        :func:`~.audio.window_indices` (frames past the end repeat the last window)."""
        last = self.num_padded_frames - 1
        first_row = max(min(start, last) - radius, 0)
        stop_row = min(min(max(stop - 1, start), last) + radius, last) + 1
        rows = self.features(first_row, stop_row)
        return rows[window_indices(start, stop, self.num_padded_frames, radius, rows.device) - first_row]

    # ------------------------------------------------------------------ segments
    def segment_span(self, index: int) -> tuple[int, int, int, int]:
        """Frames ``(first, stop)`` the transformer sees for segment ``index``, and the frames
        ``(core_start, core_stop)`` the segment provides."""
        total, size = self.num_padded_frames, self.segment_frames
        core_start = index * size
        core_stop = min(core_start + size, total)
        width = min(total, size + 2 * self.context_frames)
        first = min(max(core_start - self.context_frames, 0), total - width)
        return first, first + width, core_start, core_stop

    def _segment(self, index: int) -> torch.Tensor:
        if index in self._segments:
            self._segments.move_to_end(index)
            return self._segments[index]
        features = self._encode_segment(index)
        self._segments[index] = features
        while len(self._segments) > CACHED_SEGMENTS:
            self._segments.popitem(last=False)
        return features

    def _encode_segment(self, index: int) -> torch.Tensor:
        """(core_stop - core_start, L, C) for segment ``index``."""
        first, stop, core_start, core_stop = self.segment_span(index)
        frame_rate_encoder = self.encoder.wav2vec2.feature_extractor
        first_cnn, stop_cnn = self.grid.cnn_range(first, stop)
        hop = frame_rate_encoder.hop
        samples = self.signal.read(first_cnn * hop, (stop_cnn - 1) * hop + frame_rate_encoder.receptive_field)
        span = FrameSpan(self.grid, first, stop, first_cnn=first_cnn, chunked=True,
                         conv_statistics=self.conv_statistics, cnn_chunk=self.cnn_chunk)
        hidden_states = self.encoder.span_hidden_states(samples, span)[1:]
        keep = slice(core_start - first, core_stop - first)
        return torch.stack([layer_output[0, keep] for layer_output in hidden_states], dim=1)


__all__ = ["NormalizedSignal", "StreamedAudioFeatures"]
