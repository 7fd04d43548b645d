"""Decoding driving audio into one mono float32 waveform at the rate wav2vec2 expects.

Every input kind (a file path of any container FFmpeg reads, a ComfyUI ``AUDIO`` dict, or an
``(array, sample_rate)`` pair) ends up as :class:`DecodedAudio`: mono, float32, at ``sample_rate``.

The steps follow what the upstream code got from ``librosa.load(path, sr=16000)`` so that a 16 kHz
PCM16 WAV gives bit-identical samples: integer PCM is scaled by ``1 / 2**(bits-1)``, channels are
averaged, and the mono signal is resampled with soxr (high quality) to ``ceil(n * new_rate / old_rate)``
samples. Files are mixed down and resampled block by block as they are decoded (soxr's stream gives
the same samples as its one-shot call), so decoding long audio holds little more than the result.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np
import torch

WAV2VEC_SAMPLE_RATE = 16000

# Peak level under which a clip counts as silent. -70 dBFS is about 10 LSB of 16-bit PCM: dither or
# hum, nothing a speech model can follow; wav2vec2's per-clip normalisation would only blow it up.
SILENCE_PEAK_DBFS = -70.0

# Full-scale value of each integer sample format PyAV hands back (planar and packed alike).
_INTEGER_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


class AudioDecodeError(ValueError):
    """A driving-audio input that cannot be used: unreadable, without audio, empty or silent."""


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """Mono audio ready for feature extraction.

    Attributes:
        waveform: float32 samples, shape (num_samples,), full scale = 1.0.
        sample_rate: samples per second of ``waveform``.
        start_seconds: where ``waveform[0]`` lies in the original source (non-zero after :meth:`crop`).
        source: a short description of where the audio came from (file path or input kind), for messages.
    """

    waveform: np.ndarray
    sample_rate: int
    start_seconds: float = 0.0
    source: str = "<array>"

    @property
    def num_samples(self) -> int:
        return int(self.waveform.shape[0])

    @property
    def duration_seconds(self) -> float:
        return self.num_samples / self.sample_rate

    @property
    def end_seconds(self) -> float:
        """End of this waveform in the original source, in seconds."""
        return self.start_seconds + self.duration_seconds

    def crop(self, start_seconds: float = 0.0, duration_seconds: float | None = None) -> "DecodedAudio":
        """Cut a span out of the waveform; times are relative to this waveform's first sample.

        The returned object records the absolute start, so a node can report the exact span used.
        """
        if start_seconds < 0 or (duration_seconds is not None and duration_seconds <= 0):
            raise ValueError(f"invalid crop start={start_seconds} s, duration={duration_seconds} s")
        first = min(int(round(start_seconds * self.sample_rate)), self.num_samples)
        last = self.num_samples
        if duration_seconds is not None:
            last = min(first + int(round(duration_seconds * self.sample_rate)), self.num_samples)
        return dataclasses.replace(
            self,
            waveform=self.waveform[first:last],
            start_seconds=self.start_seconds + first / self.sample_rate,
        )


AudioSource = Union[str, os.PathLike, Mapping[str, Any], tuple, DecodedAudio]


def load_audio(source: AudioSource, *, sample_rate: int = WAV2VEC_SAMPLE_RATE) -> DecodedAudio:
    """Decode ``source`` into mono float32 at ``sample_rate``.

    Args:
        source: a file path (wav, mp3, flac, ogg, m4a/aac, or a video whose first audio track is used),
            a ComfyUI ``AUDIO`` dict ``{"waveform": Tensor (B, C, T), "sample_rate": int}`` (batch item 0),
            an ``(array, sample_rate)`` pair with array shape (T,) or (C, T), or a :class:`DecodedAudio`.
        sample_rate: output rate in Hz.

    Raises:
        FileNotFoundError: the path does not exist.
        AudioDecodeError: the file cannot be decoded, has no audio stream, or holds no samples.
    """
    if isinstance(source, DecodedAudio):
        channels, rate, label = source.waveform[None, :], source.sample_rate, source.source
        start_seconds = source.start_seconds
    elif isinstance(source, (str, os.PathLike)):
        return DecodedAudio(_decode_file(Path(source), int(sample_rate)), int(sample_rate), 0.0, str(source))
    elif isinstance(source, Mapping):
        channels, rate = _channels_from_comfy_audio(source)
        label, start_seconds = "<ComfyUI AUDIO>", 0.0
    elif isinstance(source, tuple) and len(source) == 2:
        channels, rate = _channels_from_array(source[0]), int(source[1])
        label, start_seconds = "<array>", 0.0
    else:
        raise TypeError(
            "audio source must be a file path, a ComfyUI AUDIO dict, an (array, sample_rate) pair "
            f"or DecodedAudio, got {type(source).__name__}"
        )
    if channels.shape[-1] == 0:
        raise AudioDecodeError(f"{label}: the audio holds no samples")
    if rate <= 0:
        raise AudioDecodeError(f"{label}: invalid sample rate {rate}")
    mono = channels.mean(axis=0, dtype=np.float32) if channels.shape[0] > 1 else channels[0]
    mono = resample(mono, rate, sample_rate)
    return DecodedAudio(np.ascontiguousarray(mono, dtype=np.float32), int(sample_rate), start_seconds, label)


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono float32 audio (T,) with soxr "HQ"; the result has ``ceil(T * to / from)`` samples.

    The length rule is librosa's (``fix_length`` after soxr), which the upstream frame counts rest on.
    """
    if from_rate == to_rate:
        return waveform
    import soxr  # imported here so decoding 16 kHz input never needs the extension

    resampled = soxr.resample(waveform, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)
    target_length = -(-waveform.shape[0] * to_rate // from_rate)
    if resampled.shape[0] < target_length:
        resampled = np.pad(resampled, (0, target_length - resampled.shape[0]))
    return resampled[:target_length]


class _StreamResampler:
    """Mono float32 blocks in, the whole signal at ``to_rate`` out: what :func:`resample` gives for
    the concatenated blocks. With ``expected_input_samples`` (the container's duration) the output
    is written into one array as it comes instead of being concatenated at the end, which would
    briefly need twice its size."""

    def __init__(self, from_rate: int, to_rate: int, expected_input_samples: int = 0):
        self.from_rate, self.to_rate = int(from_rate), int(to_rate)
        self.num_input_samples = 0
        self._stream = None
        if self.from_rate != self.to_rate:
            import soxr  # imported here so decoding 16 kHz input never needs the extension

            self._stream = soxr.ResampleStream(self.from_rate, self.to_rate, 1, dtype="float32", quality="HQ")
        self._output = np.zeros(self._output_length(max(int(expected_input_samples), 0)) + 1024, np.float32)
        self._filled = 0

    def _output_length(self, num_input_samples: int) -> int:
        return -(-num_input_samples * self.to_rate // self.from_rate)

    def push(self, mono: np.ndarray) -> None:
        self.num_input_samples += mono.shape[0]
        self._append(mono if self._stream is None else self._stream.resample_chunk(mono, last=False))

    def _append(self, block: np.ndarray) -> None:
        needed = self._filled + block.shape[0]
        if needed > self._output.shape[0]:  # the duration was unknown or short: grow by half
            grown = np.zeros(max(needed, self._output.shape[0] * 3 // 2), np.float32)
            grown[: self._filled] = self._output[: self._filled]
            self._output = grown
        self._output[self._filled: needed] = block
        self._filled = needed

    def finish(self) -> np.ndarray:
        if self._stream is not None:
            self._append(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))
        target_length = self._output_length(self.num_input_samples)
        if self._filled < target_length:  # librosa's fix_length pads with zeros
            self._append(np.zeros(target_length - self._filled, np.float32))
        output, self._output = self._output, np.zeros(0, np.float32)
        if output.shape[0] > target_length + (target_length >> 4):  # much too long a guess: do not keep it
            return output[:target_length].copy()
        return output[:target_length]


def is_silent(waveform: np.ndarray, peak_dbfs: float = SILENCE_PEAK_DBFS) -> bool:
    """True when the absolute peak of ``waveform`` is below ``peak_dbfs`` (full scale = 1.0)."""
    if waveform.size == 0:
        return True
    peak = max(float(waveform.max()), -float(waveform.min()))  # no |x| copy of a long waveform
    return peak < 10.0 ** (peak_dbfs / 20.0)


def silent_frames(audio: DecodedAudio, fps: float, num_frames: int) -> torch.Tensor:
    """(num_frames,) bool on the CPU: the video frames whose stretch of sound, [i / fps, (i + 1) / fps)
    of ``audio``, is silent by :func:`is_silent`'s rule; frames past the end of the audio count as silent."""
    samples_per_frame = audio.sample_rate / float(fps)
    silent = torch.ones(num_frames, dtype=torch.bool)
    for frame in range(num_frames):
        start, stop = int(round(frame * samples_per_frame)), int(round((frame + 1) * samples_per_frame))
        if start < audio.waveform.shape[0]:
            silent[frame] = is_silent(audio.waveform[start:stop])
    return silent


def _decode_file(path: Path, sample_rate: int) -> np.ndarray:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate``, decoded block by block."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: audio file not found")
    import av  # PyAV is only needed for files

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
                raise AudioDecodeError(f"{path}: the file has no audio stream (streams: {kinds})")
            stream = container.streams.audio[0]
            resampler = None
            for frame in container.decode(stream):
                if resampler is None:
                    if frame.sample_rate <= 0:
                        raise AudioDecodeError(f"{path}: invalid sample rate {frame.sample_rate}")
                    resampler = _StreamResampler(frame.sample_rate, sample_rate,
                                                 _expected_samples(container, stream, frame.sample_rate))
                if frame.sample_rate != resampler.from_rate:
                    raise AudioDecodeError(f"{path}: the sample rate changes inside the stream")
                channels = _frame_to_channels(frame)
                resampler.push(channels.mean(axis=0, dtype=np.float32) if channels.shape[0] > 1 else channels[0])
    except AudioDecodeError:
        raise
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as error:
        raise AudioDecodeError(f"{path}: cannot decode audio ({error})") from error
    if resampler is None or resampler.num_input_samples == 0:
        raise AudioDecodeError(f"{path}: the audio stream holds no samples")
    return np.ascontiguousarray(resampler.finish(), dtype=np.float32)


def _expected_samples(container, stream, sample_rate: int) -> int:
    """The stream's length in samples as its header tells it (0 when it does not)."""
    if stream.duration is not None and stream.time_base is not None:
        return int(stream.duration * stream.time_base * sample_rate)
    if container.duration is not None:  # in microseconds
        return int(container.duration * sample_rate // 1_000_000)
    return 0


def _frame_to_channels(frame) -> np.ndarray:
    """One PyAV AudioFrame as float32 (channels, samples), integer PCM scaled to full scale 1.0."""
    samples = frame.to_ndarray()
    num_channels = len(frame.layout.channels)
    if not frame.format.is_planar:  # packed formats come back as (1, samples * channels), interleaved
        samples = samples.reshape(-1, num_channels).T
    base_format = frame.format.name.rstrip("p")
    if base_format in _INTEGER_FULL_SCALE:
        offset = 128.0 if base_format == "u8" else 0.0
        return ((samples.astype(np.float64) - offset) / _INTEGER_FULL_SCALE[base_format]).astype(np.float32)
    return samples.astype(np.float32, copy=False)


def _channels_from_comfy_audio(audio: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """ComfyUI AUDIO ``{"waveform": (B, C, T), "sample_rate": int}`` -> float32 (C, T) of batch item 0."""
    if "waveform" not in audio or "sample_rate" not in audio:
        raise AudioDecodeError("ComfyUI AUDIO input needs the keys 'waveform' and 'sample_rate'")
    waveform = audio["waveform"]
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().to(device="cpu", dtype=torch.float32).numpy()
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim != 3:
        raise AudioDecodeError(f"ComfyUI AUDIO waveform must be (batch, channels, samples), got {waveform.shape}")
    if waveform.shape[0] == 0:
        raise AudioDecodeError("ComfyUI AUDIO waveform has an empty batch")
    return waveform[0], int(audio["sample_rate"])


def _channels_from_array(array: Any) -> np.ndarray:
    """(T,) or (C, T) array or tensor -> float32 (C, T)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):  # integer PCM, e.g. int16 -> / 32768 like the file path
        half_range = 2.0 ** (8 * array.dtype.itemsize - 1)
        offset = half_range if np.issubdtype(array.dtype, np.unsignedinteger) else 0.0
        array = (array.astype(np.float64) - offset) / half_range
    array = array.astype(np.float32, copy=False)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim == 2:
        return array
    raise AudioDecodeError(f"audio array must be (samples,) or (channels, samples), got shape {array.shape}")


__all__ = [
    "WAV2VEC_SAMPLE_RATE",
    "SILENCE_PEAK_DBFS",
    "AudioDecodeError",
    "AudioSource",
    "DecodedAudio",
    "load_audio",
    "resample",
    "is_silent",
    "silent_frames",
]
