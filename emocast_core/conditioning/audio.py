"""Audio conditioning front-end: driving audio -> per-video-frame wav2vec2 features.

The numbers follow the upstream EmoCAST/Hallo ``AudioProcessor`` (fixture README, quirk 11):

1. 16 kHz mono waveform (see :mod:`.audio_decode`), normalised to zero mean / unit variance over the
   whole clip by ``Wav2Vec2FeatureExtractor``;
2. ``num_frames = ceil(num_samples / 16000 * fps)`` video frames;
3. when ``num_frames`` is not a multiple of ``clip_length``, the *normalised* signal is zero-padded by
   the missing frames' worth of samples (640 per frame at 25 fps);
4. wav2vec2 CNN -> linear interpolation (``align_corners=True``) of its ~50 Hz output to exactly one
   vector per (padded) video frame -> feature projection -> transformer encoder;
5. the outputs of the transformer layers (``hidden_states[1:]``) stacked to (T_pad, L, C);
6. a +-2 frame context window per frame, clamped to the *padded* length: (T_pad, 5, L, C).

Step 4 uses the model's own ``forward(output_hidden_states=True)``: transformers 5.x records hidden
states with hooks on that top-level call, so calling ``feature_projection``/``encoder`` by hand (the
upstream pattern) yields no hidden states there. The resampling to the video rate is done by
:class:`FrameRateFeatureEncoder`, which replaces the ``feature_extractor`` submodule of the
``Wav2Vec2Model`` instance that :class:`AudioEncoder` builds itself (library classes stay untouched).

:meth:`AudioEncoder.encode` computes all of this for the whole clip at once (the parity path).
:meth:`AudioEncoder.stream` gives the same features for any audio length in bounded memory, a span
of frames at a time (see :mod:`.audio_stream`); the CNN part of a span is computed in chunks, with
the whole-clip statistics of the CNN's first GroupNorm passed in (:class:`ConvStatistics`).
"""
from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .audio_decode import (
    SILENCE_PEAK_DBFS,
    WAV2VEC_SAMPLE_RATE,
    AudioDecodeError,
    AudioSource,
    DecodedAudio,
    is_silent,
    load_audio,
)

if TYPE_CHECKING:
    from .audio_stream import StreamedAudioFeatures

DEFAULT_FPS = 25
DEFAULT_CLIP_LENGTH = 16
DEFAULT_WINDOW_RADIUS = 2

_CONFIG_FILE = "config.json"
_PREPROCESSOR_FILE = "preprocessor_config.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

# Checkpoint prefixes of the heads that wrap a Wav2Vec2Model (Wav2Vec2ForCTC, ...): stripped on load.
_BASE_MODEL_PREFIX = "wav2vec2."
# Keys a bare feature encoder does not need: the CTC head, and the SpecAugment vector (training only).
_UNUSED_KEY_PREFIXES = ("lm_head.", "quantizer.", "project_q.", "project_hid.")
_TRAINING_ONLY_KEYS = ("masked_spec_embed",)
# The positional conv is weight-normed. Old checkpoints store weight_g/weight_v; models built with
# torch's parametrizations API name them original0/original1. Either side may be either style.
_WEIGHT_NORM_ALIASES = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}

Fps = Union[int, float, Fraction]


def _as_fraction(fps: Fps) -> Fraction:
    """Exact rational frame rate; 29.97 -> 2997/100, 30000/1001 (as float) -> 30000/1001."""
    rate = Fraction(fps).limit_denominator(1_000_000)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def num_video_frames(num_samples: int, sample_rate: int = WAV2VEC_SAMPLE_RATE, fps: Fps = DEFAULT_FPS) -> int:
    """Video frames covering ``num_samples`` audio samples: ``ceil(duration * fps)``, computed exactly.

    (Upstream evaluates ``ceil(n / 16000 * 25)`` in floating point, which adds a spurious frame for
    some exact multiples of 640 samples, e.g. 4480 samples -> 8. Exact arithmetic gives 7.)
    """
    frames = Fraction(int(num_samples)) * _as_fraction(fps) / int(sample_rate)
    return int(-((-frames.numerator) // frames.denominator))


def padded_frame_count(num_frames: int, clip_length: int) -> int:
    """``num_frames`` rounded up to a multiple of ``clip_length`` (no rounding when clip_length <= 0)."""
    if clip_length <= 0 or num_frames % clip_length == 0:
        return num_frames
    return num_frames + clip_length - num_frames % clip_length


def padding_samples(num_frames: int, clip_length: int, fps: Fps = DEFAULT_FPS,
                    sample_rate: int = WAV2VEC_SAMPLE_RATE) -> int:
    """Zero samples appended for the frames added by :func:`padded_frame_count`.

    ``round(missing_frames * sample_rate / fps)``: 640 per frame at 25 fps, as upstream (which used
    ``sample_rate // fps`` and so drifted for frame rates that do not divide 16000).
    """
    missing_frames = padded_frame_count(num_frames, clip_length) - num_frames
    return int(round(Fraction(missing_frames * sample_rate) / _as_fraction(fps)))


@dataclasses.dataclass(frozen=True)
class AudioFeatures:
    """wav2vec2 features of one driving clip, one row per video frame.

    Attributes:
        features: (T_pad, L, C) outputs of the L transformer layers at each of the T_pad frames;
            rows ``num_frames:`` belong to the zero padding that completes the last clip.
        num_frames: video frames covered by the real audio (T <= T_pad); trim the video to this.
        fps: video frame rate the features were aligned to.
        sample_rate: rate of the waveform that was encoded (16000).
        num_samples: samples of real audio encoded (without the padding).
        start_seconds: where the encoded audio starts in its source (see :meth:`DecodedAudio.crop`).
    """

    features: torch.Tensor
    num_frames: int
    fps: Fps
    sample_rate: int
    num_samples: int
    start_seconds: float = 0.0

    @property
    def num_padded_frames(self) -> int:
        return int(self.features.shape[0])

    @property
    def end_seconds(self) -> float:
        """End of the encoded audio in its source; the video covers ``num_frames / fps`` >= this span."""
        return self.start_seconds + self.num_samples / self.sample_rate

    def __len__(self) -> int:
        return self.num_padded_frames

    def windows(self, start: int = 0, stop: Optional[int] = None, *, radius: int = DEFAULT_WINDOW_RADIUS) -> torch.Tensor:
        """(stop - start, 2 * radius + 1, L, C) context windows of frames [start, stop) (default: all
        T_pad frames); see :func:`window_indices` for frames past the end."""
        stop = self.num_padded_frames if stop is None else stop
        return self.features[window_indices(start, stop, self.num_padded_frames, radius, self.features.device)]


def window_indices(start: int, stop: int, num_frames: int, radius: int = DEFAULT_WINDOW_RADIUS,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Feature rows of the context windows of frames [start, stop): (stop - start, 2 * radius + 1).

    ``out[t, k] = clamp(min(t, T - 1) + k - radius, 0, T - 1)`` with ``T = num_frames``: neighbours are
    clamped to the (padded) sequence as upstream does, and frames past its end repeat the last window.
    """
    if num_frames < 1:
        raise ValueError("cannot build audio windows of an empty feature sequence")
    if not 0 <= start <= stop:
        raise ValueError(f"invalid frame range [{start}, {stop})")
    frames = torch.arange(start, stop, device=device).clamp(max=num_frames - 1)
    offsets = torch.arange(-radius, radius + 1, device=device)
    return (frames[:, None] + offsets[None, :]).clamp(0, num_frames - 1)


def audio_windows(features: torch.Tensor, radius: int = DEFAULT_WINDOW_RADIUS) -> torch.Tensor:
    """Stack each frame with its ``radius`` neighbours on both sides.

    Args:
        features: (T, L, C) per-frame features (the padded sequence, as upstream).
        radius: neighbours per side; 2 gives the 5-frame (200 ms at 25 fps) window of the audio projector.

    Returns:
        (T, 2 * radius + 1, L, C); ``out[t, k] = features[clamp(t + k - radius, 0, T - 1)]``.
    """
    num_frames = features.shape[0]
    return features[window_indices(0, num_frames, num_frames, radius, features.device)]


@dataclasses.dataclass(frozen=True)
class FrameGrid:
    """Where the video frames of a whole (padded) clip read wav2vec2's CNN output.

    Upstream interpolates the CNN output of the whole padded signal linearly (``align_corners=True``)
    onto ``num_frames`` frames, so frame ``i`` reads position ``i * (num_cnn_frames - 1) / (num_frames - 1)``.
    The positions are computed in float32 exactly as ``F.interpolate`` does, so a span of frames gives the
    same numbers as the whole sequence.
    """

    num_cnn_frames: int
    num_frames: int

    def _neighbours(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """CNN rows left/right of frames [start, stop) and the right row's weight, all (stop - start,)."""
        scale = torch.tensor(0.0)
        if self.num_frames > 1:
            scale = torch.tensor(float(self.num_cnn_frames - 1), dtype=torch.float32) / (self.num_frames - 1)
        positions = torch.arange(start, stop, dtype=torch.float32) * scale
        left = positions.long()
        right = torch.where(left < self.num_cnn_frames - 1, left + 1, left)
        return left, right, positions - left

    def cnn_range(self, start: int, stop: int) -> tuple[int, int]:
        """CNN rows [first, last) that frames [start, stop) interpolate between."""
        left, right, _ = self._neighbours(start, stop)
        return int(left[0]), int(right[-1]) + 1

    def interpolate(self, cnn_features: torch.Tensor, first_cnn: int, start: int, stop: int) -> torch.Tensor:
        """(B, C, n_cnn) CNN rows starting at row ``first_cnn`` -> (B, C, stop - start) frame features."""
        left, right, weight = (t.to(cnn_features.device) for t in self._neighbours(start, stop))
        weight = weight.to(cnn_features.dtype)
        return cnn_features[..., left - first_cnn] * (1 - weight) + cnn_features[..., right - first_cnn] * weight


@dataclasses.dataclass(frozen=True)
class ConvStatistics:
    """Per-channel mean and variance of the first CNN layer's output over the whole padded signal.

    wav2vec2-base normalises that layer with a GroupNorm of one channel per group, i.e. over the whole
    time axis; a chunk of the signal must be normalised with the whole signal's statistics.
    """

    mean: torch.Tensor  # (C,) float64
    var: torch.Tensor  # (C,) float64


@dataclasses.dataclass(frozen=True)
class FrameSpan:
    """What :class:`FrameRateFeatureEncoder` computes in one call: frames [start, stop) of ``grid``
    from a signal slice that starts at CNN row ``first_cnn``.

    Not ``chunked``: the slice is the whole padded signal, run through the CNN in one go (its GroupNorm
    computes its own statistics, as upstream). ``chunked``: the CNN runs on chunks of at most
    ``cnn_chunk`` rows and a GroupNorm first layer is normalised with the whole signal's
    ``conv_statistics``.
    """

    grid: FrameGrid
    start: int
    stop: int
    first_cnn: int = 0
    chunked: bool = False
    conv_statistics: Optional[ConvStatistics] = None
    cnn_chunk: int = 256


class FrameRateFeatureEncoder(nn.Module):
    """wav2vec2's CNN feature encoder followed by resampling of its output to the video frame rate.

    The CNN hops 320 samples (~50 vectors/s); linear interpolation with ``align_corners=True`` maps them
    onto exactly one vector per video frame (:class:`FrameGrid`), so the transformer runs at one token
    per video frame. ``span`` (a :class:`FrameSpan`) is set by :class:`AudioEncoder` for each call of
    the model.
    """

    def __init__(self, conv_encoder: nn.Module):
        super().__init__()
        self.conv_encoder = conv_encoder
        self.span: FrameSpan | None = None

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        """(B, num_samples) -> (B, conv_dim, span.stop - span.start)."""
        span = self.span
        if span is None:
            raise RuntimeError("FrameRateFeatureEncoder.span must be set before the forward pass")
        if span.chunked:
            cnn_features = self.chunked_cnn(input_values, span.conv_statistics, span.cnn_chunk)
        else:
            cnn_features = self.conv_encoder(input_values)
        return span.grid.interpolate(cnn_features, span.first_cnn, span.start, span.stop)

    @property
    def hop(self) -> int:
        """Samples between consecutive CNN rows (320 for wav2vec2)."""
        hop = 1
        for layer in self.conv_encoder.conv_layers:
            hop *= layer.conv.stride[0]
        return hop

    @property
    def receptive_field(self) -> int:
        """Samples one CNN row reads (400 for wav2vec2)."""
        field = 1
        for layer in reversed(self.conv_encoder.conv_layers):
            field = (field - 1) * layer.conv.stride[0] + layer.conv.kernel_size[0]
        return field

    def first_layer_statistics(self, read_samples: Callable[[int, int], np.ndarray], num_samples: int,
                               chunk: int = 16384) -> Optional[ConvStatistics]:
        """Whole-signal statistics of the first layer's GroupNorm, computed ``chunk`` rows at a time.

        Args:
            read_samples: ``(first, stop) -> float32 samples [first, stop)`` of the padded signal.
            num_samples: length of the padded signal.

        Returns:
            None when the first layer has no GroupNorm (``feat_extract_norm="layer"`` models normalise
            each time step on its own, which needs no whole-signal statistics).
        """
        layer = self.conv_encoder.conv_layers[0]
        if not isinstance(getattr(layer, "layer_norm", None), nn.GroupNorm):
            return None
        conv = layer.conv
        kernel, stride = conv.kernel_size[0], conv.stride[0]
        num_rows = max((num_samples - kernel) // stride + 1, 0)
        if num_rows < 1:
            raise ValueError(f"{num_samples} samples are too short for the wav2vec2 feature encoder")
        total = torch.zeros(conv.out_channels, dtype=torch.float64)
        total_squares = torch.zeros(conv.out_channels, dtype=torch.float64)
        with torch.no_grad():
            for row in range(0, num_rows, chunk):
                rows = min(chunk, num_rows - row)
                samples = read_samples(row * stride, (row + rows - 1) * stride + kernel)
                output = conv(self._as_input(samples)).to(torch.float64)[0]  # (C, rows)
                total += output.sum(dim=1).cpu()
                total_squares += output.square().sum(dim=1).cpu()
        mean = total / num_rows
        return ConvStatistics(mean=mean, var=(total_squares / num_rows - mean.square()).clamp(min=0))

    def chunked_cnn(self, input_values: torch.Tensor, statistics: Optional[ConvStatistics], chunk: int) -> torch.Tensor:
        """The CNN over (B, samples), ``chunk`` output rows at a time: (B, conv_dim, rows).

        A row reads ``receptive_field`` samples every ``hop`` samples, so the chunks are exact; the first
        layer's GroupNorm uses the whole signal's ``statistics`` instead of the chunk's own.
        """
        hop, field = self.hop, self.receptive_field
        num_rows = (input_values.shape[-1] - field) // hop + 1
        first_layer, *other_layers = self.conv_encoder.conv_layers
        if statistics is None and isinstance(getattr(first_layer, "layer_norm", None), nn.GroupNorm):
            raise ValueError("a GroupNorm feature encoder needs the whole signal's statistics to run in chunks")
        outputs = []
        for row in range(0, num_rows, chunk):
            rows = min(chunk, num_rows - row)
            hidden = input_values[:, None, row * hop: (row + rows - 1) * hop + field]
            if statistics is None:
                hidden = first_layer(hidden)
            else:
                norm = first_layer.layer_norm
                scale = norm.weight.double().cpu() / (statistics.var + norm.eps).sqrt()
                shift = norm.bias.double().cpu() - statistics.mean * scale
                hidden = first_layer.conv(hidden)
                hidden = hidden * scale.to(hidden)[:, None] + shift.to(hidden)[:, None]
                hidden = first_layer.activation(hidden)
            for layer in other_layers:
                hidden = layer(hidden)
            outputs.append(hidden)
        return torch.cat(outputs, dim=-1)

    def _as_input(self, samples: np.ndarray) -> torch.Tensor:
        weight = self.conv_encoder.conv_layers[0].conv.weight
        return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)).to(weight)[None, None]


class AudioEncoder:
    """wav2vec2 (e.g. wav2vec2-base-960h) turning 16 kHz audio into per-video-frame features.

    Build with :meth:`from_pretrained` from a local Hugging Face folder; nothing is downloaded.
    """

    def __init__(self, wav2vec2: nn.Module, normalizer):
        self.wav2vec2 = wav2vec2
        self.normalizer = normalizer

    # Read from the weights, so a host that moves the model (e.g. ComfyUI's memory manager) is
    # followed without telling this object.
    @property
    def device(self) -> torch.device:
        return next(self.wav2vec2.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.wav2vec2.parameters()).dtype

    # ------------------------------------------------------------------ loading
    @staticmethod
    def missing_files(folder: str | Path) -> list[Path]:
        """Files :meth:`from_pretrained` needs that are missing from ``folder`` (empty when complete)."""
        folder = Path(folder)
        missing = [folder / name for name in (_CONFIG_FILE, _PREPROCESSOR_FILE) if not (folder / name).is_file()]
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            missing.append(folder / " or ".join(_WEIGHT_FILES))
        return missing

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "AudioEncoder":
        """Load wav2vec2 from ``folder`` (config.json, model.safetensors or pytorch_model.bin,
        preprocessor_config.json), offline.

        The weights may be a bare ``Wav2Vec2Model`` or a ``Wav2Vec2ForCTC`` checkpoint (keys
        ``wav2vec2.*`` + ``lm_head.*``, as facebook/wav2vec2-base-960h ships); the head is dropped and
        every encoder tensor must be present with the right shape.
        """
        from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

        folder = Path(folder)
        missing = cls.missing_files(folder)
        if missing:
            listing = "\n  ".join(str(path) for path in missing)
            raise FileNotFoundError(f"wav2vec2 folder {folder} is incomplete; missing:\n  {listing}")

        config = Wav2Vec2Config.from_pretrained(folder, local_files_only=True)
        normalizer = Wav2Vec2FeatureExtractor.from_pretrained(folder, local_files_only=True)
        # Built without storage: random initialisation of wav2vec2-base takes seconds and every tensor
        # is replaced by the checkpoint anyway.
        with torch.device("meta"):
            wav2vec2 = Wav2Vec2Model(config)
        _load_encoder_weights(wav2vec2, _read_checkpoint(folder), folder)
        # Swapped in after loading so checkpoint key names stay those of the library model.
        wav2vec2.feature_extractor = FrameRateFeatureEncoder(wav2vec2.feature_extractor)
        wav2vec2.eval().requires_grad_(False)  # eval: no SpecAugment masking, no LayerDrop, no dropout
        wav2vec2.to(device=device, dtype=dtype)
        return cls(wav2vec2, normalizer)

    # ------------------------------------------------------------------ steps
    def normalize(self, waveform: np.ndarray) -> np.ndarray:
        """Zero-mean / unit-variance over the whole clip, as Wav2Vec2FeatureExtractor does: (T,) -> (T,)."""
        input_values = self.normalizer(
            np.asarray(waveform, dtype=np.float32), sampling_rate=WAV2VEC_SAMPLE_RATE, return_tensors="np"
        ).input_values
        return np.asarray(input_values, dtype=np.float32).reshape(-1)

    def normalization(self, waveform: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
        """``(mean, std)`` with which :meth:`normalize` maps the whole clip, computed chunk by chunk in
        float64 (the library computes them in float32; the two agree to ~1e-7 relative).
        ``(0, 1)`` when the preprocessor config turns normalisation off."""
        if not getattr(self.normalizer, "do_normalize", True):
            return 0.0, 1.0
        return zero_mean_unit_variance(waveform, chunk)

    @torch.no_grad()
    def cnn_features(self, input_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw CNN output before frame-rate alignment: (num_samples,) -> (1, T_cnn, conv_dim), ~50 Hz."""
        conv_encoder = self.wav2vec2.feature_extractor.conv_encoder
        return conv_encoder(self._as_batch(input_values)).transpose(1, 2)

    @torch.no_grad()
    def hidden_states(self, input_values: np.ndarray | torch.Tensor, num_frames: int) -> tuple[torch.Tensor, ...]:
        """All encoder hidden states with the CNN output aligned to ``num_frames`` tokens.

        Returns:
            ``num_hidden_layers + 1`` tensors (1, num_frames, hidden_size): the encoder input
            (after positional conv + layer norm) followed by the output of every transformer layer.
        """
        input_values = self._as_batch(input_values)
        grid = FrameGrid(self.cnn_output_length(input_values.shape[-1]), int(num_frames))
        return self.span_hidden_states(input_values, FrameSpan(grid, 0, grid.num_frames))

    @torch.no_grad()
    def span_hidden_states(self, input_values: np.ndarray | torch.Tensor, span: FrameSpan) -> tuple[torch.Tensor, ...]:
        """Like :meth:`hidden_states`, for the frames of ``span`` only, from the signal slice that
        starts at its CNN row ``span.first_cnn``: tensors (1, span.stop - span.start, hidden_size)."""
        frame_rate_encoder = self.wav2vec2.feature_extractor
        frame_rate_encoder.span = span
        try:
            outputs = self.wav2vec2(self._as_batch(input_values), output_hidden_states=True, return_dict=True)
        finally:
            frame_rate_encoder.span = None
        if outputs.hidden_states is None:
            raise RuntimeError("the wav2vec2 model returned no hidden states")
        return tuple(outputs.hidden_states)

    def cnn_output_length(self, num_samples: int) -> int:
        """Vectors the CNN yields for ``num_samples`` samples (0 when shorter than its 400-sample field)."""
        length = int(num_samples)
        for kernel, stride in zip(self.wav2vec2.config.conv_kernel, self.wav2vec2.config.conv_stride):
            length = max((length - kernel) // stride + 1, 0)
        return length

    def _as_batch(self, input_values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(num_samples,) array or tensor -> (1, num_samples) on this encoder's device and dtype."""
        if not isinstance(input_values, torch.Tensor):
            input_values = torch.from_numpy(np.asarray(input_values, dtype=np.float32))
        return input_values.reshape(1, -1).to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ all together
    def encode(self, audio: AudioSource | np.ndarray, *, fps: Fps = DEFAULT_FPS,
               clip_length: int = DEFAULT_CLIP_LENGTH, allow_silence: bool = False) -> AudioFeatures:
        """Per-video-frame features of a driving clip.

        Args:
            audio: a 16 kHz mono float32 array (T,), a :class:`DecodedAudio`, or anything
                :func:`load_audio` accepts (then decoded and resampled to 16 kHz first).
            fps: video frame rate; the features get ``ceil(duration * fps)`` real frames.
            clip_length: frames per generated clip; the features are zero-padded to a multiple of it
                (``clip_length <= 0``: no padding).
            allow_silence: encode silent audio anyway instead of raising.

        Returns:
            :class:`AudioFeatures` with ``features`` (T_pad, L, C) on this encoder's device/dtype.

        Raises:
            AudioDecodeError: the audio is silent (peak below ``SILENCE_PEAK_DBFS``) and
                ``allow_silence`` is false, or it is empty.
        """
        decoded = _checked_16k(audio, allow_silence)
        waveform = decoded.waveform
        num_frames = num_video_frames(waveform.shape[0], WAV2VEC_SAMPLE_RATE, fps)
        num_padded = padded_frame_count(num_frames, clip_length)
        input_values = self.normalize(waveform)
        # Padding comes after normalisation, as upstream: the pad is exact zeros of the normalised signal.
        input_values = np.pad(input_values, (0, padding_samples(num_frames, clip_length, fps)))
        self._check_long_enough(decoded, input_values.shape[0])
        layer_outputs = self.hidden_states(input_values, num_padded)[1:]
        features = torch.stack(layer_outputs, dim=2)[0]  # (1, T_pad, L, C) -> (T_pad, L, C)
        return AudioFeatures(
            features=features,
            num_frames=num_frames,
            fps=fps,
            sample_rate=WAV2VEC_SAMPLE_RATE,
            num_samples=int(waveform.shape[0]),
            start_seconds=decoded.start_seconds,
        )

    def stream(self, audio: AudioSource | np.ndarray, *, fps: Fps = DEFAULT_FPS,
               clip_length: int = DEFAULT_CLIP_LENGTH, allow_silence: bool = False,
               context_seconds: float = 10.0, segment_seconds: float = 40.0) -> "StreamedAudioFeatures":
        """The features of :meth:`encode`, computed a span of frames at a time when asked for.

        Memory does not grow with the audio's length beyond the 16 kHz waveform itself (64 kB per
        second). Up to ``segment_seconds + 2 * context_seconds`` of audio (60 s by default) the result
        equals :meth:`encode` within float tolerance; longer audio is run through the transformer in
        segments of ``segment_seconds`` that each see ``context_seconds`` more on both sides (see
        :mod:`.audio_stream` for what that changes and by how much).

        Args and Raises: as :meth:`encode`; the audio is checked (silence, length) here, before any
        feature is computed.
        """
        from .audio_stream import NormalizedSignal, StreamedAudioFeatures

        decoded = _checked_16k(audio, allow_silence)
        num_frames = num_video_frames(decoded.num_samples, WAV2VEC_SAMPLE_RATE, fps)
        num_padded = padded_frame_count(num_frames, clip_length)
        mean, std = self.normalization(decoded.waveform)
        signal = NormalizedSignal(decoded.waveform, mean, std,
                                  decoded.num_samples + padding_samples(num_frames, clip_length, fps))
        self._check_long_enough(decoded, signal.num_samples)
        frame_rate_encoder = self.wav2vec2.feature_extractor
        return StreamedAudioFeatures(
            self,
            signal,
            FrameGrid(self.cnn_output_length(signal.num_samples), num_padded),
            frame_rate_encoder.first_layer_statistics(signal.read, signal.num_samples),
            num_frames=num_frames,
            fps=fps,
            start_seconds=decoded.start_seconds,
            segment_frames=max(1, round(segment_seconds * float(fps))),
            context_frames=max(0, round(context_seconds * float(fps))),
        )

    def _check_long_enough(self, decoded: DecodedAudio, num_padded_samples: int) -> None:
        if self.cnn_output_length(num_padded_samples) < 1:
            raise AudioDecodeError(
                f"{decoded.source}: {decoded.num_samples} samples are too short for the wav2vec2 feature encoder")


def zero_mean_unit_variance(waveform: np.ndarray, chunk: int = 1 << 20) -> tuple[float, float]:
    """``(mean, std)`` of the whole clip as Wav2Vec2FeatureExtractor normalises it (population variance,
    epsilon 1e-7), computed chunk by chunk in float64."""
    count = max(int(waveform.shape[0]), 1)
    mean = sum(float(waveform[i:i + chunk].sum(dtype=np.float64)) for i in range(0, waveform.shape[0], chunk)) / count
    squares = sum(float(np.square(waveform[i:i + chunk] - mean, dtype=np.float64).sum())
                  for i in range(0, waveform.shape[0], chunk))
    return mean, float(np.sqrt(squares / count + 1e-7))  # the library's epsilon


def features_from_native_rate(
    hidden_states: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    audio: AudioSource | np.ndarray,
    *,
    fps: Fps = DEFAULT_FPS,
    clip_length: int = DEFAULT_CLIP_LENGTH,
    allow_silence: bool = False,
) -> AudioFeatures:
    """:meth:`AudioEncoder.encode`'s features from a wav2vec2 that runs at its own rate and returns
    every layer, such as ComfyUI's ``AUDIO_ENCODER``.

    hidden_states: (1, num_samples) zero-mean unit-variance 16 kHz signal -> the ``L + 1`` hidden states
        (1, T_native, C) at wav2vec2's ~50 Hz (the first layer's input, then every layer's output).

    The signal is normalised and padded to whole clips as upstream does, but the frames are interpolated
    (linearly, ``align_corners=True``) from the transformer's outputs; upstream interpolates the CNN
    features onto the frames *before* the transformer, which then sees one token per video frame. So the
    two differ by more than rounding (docs/comfyui.md gives the measured difference).
    """
    decoded = _checked_16k(audio, allow_silence)
    waveform = decoded.waveform
    num_frames = num_video_frames(waveform.shape[0], WAV2VEC_SAMPLE_RATE, fps)
    num_padded = padded_frame_count(num_frames, clip_length)
    mean, std = zero_mean_unit_variance(waveform)
    input_values = ((waveform - mean) / std).astype(np.float32)
    # Padding comes after normalisation, as upstream: the pad is exact zeros of the normalised signal.
    input_values = np.pad(input_values, (0, padding_samples(num_frames, clip_length, fps)))
    layer_outputs = torch.stack(tuple(hidden_states(torch.from_numpy(input_values)[None]))[1:], dim=1)[0]  # (L, T, C)
    grid = FrameGrid(layer_outputs.shape[1], num_padded)
    per_frame = grid.interpolate(layer_outputs.transpose(1, 2), 0, 0, num_padded)  # (L, C, T_pad)
    return AudioFeatures(
        features=per_frame.permute(2, 0, 1).contiguous(),
        num_frames=num_frames,
        fps=fps,
        sample_rate=WAV2VEC_SAMPLE_RATE,
        num_samples=int(waveform.shape[0]),
        start_seconds=decoded.start_seconds,
    )


def _checked_16k(audio, allow_silence: bool) -> DecodedAudio:
    """The audio at 16 kHz, refused when empty or (unless allowed) silent."""
    decoded = _as_decoded_16k(audio)
    if decoded.num_samples == 0:
        raise AudioDecodeError(f"{decoded.source}: the audio holds no samples")
    if not allow_silence and is_silent(decoded.waveform):
        raise AudioDecodeError(
            f"{decoded.source}: the audio is silent (peak below {SILENCE_PEAK_DBFS:.0f} dBFS); wav2vec2 "
            "features of silence are meaningless. Pass allow_silence=True to encode it anyway."
        )
    return decoded


def _as_decoded_16k(audio) -> DecodedAudio:
    if isinstance(audio, np.ndarray) and audio.ndim == 1:
        return DecodedAudio(audio.astype(np.float32, copy=False), WAV2VEC_SAMPLE_RATE)
    if isinstance(audio, torch.Tensor) and audio.ndim == 1:
        return DecodedAudio(audio.detach().cpu().float().numpy(), WAV2VEC_SAMPLE_RATE)
    return load_audio(audio, sample_rate=WAV2VEC_SAMPLE_RATE)


def _read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    safetensors_path = folder / "model.safetensors"
    if safetensors_path.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_path))
    return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)


def _load_encoder_weights(wav2vec2: nn.Module, checkpoint: dict[str, torch.Tensor], folder: Path) -> None:
    """Load a (possibly head-wrapped) checkpoint into a bare Wav2Vec2Model built on the meta device.

    Every key is checked; the tensors are assigned (not copied), so no meta tensor may remain.
    """
    expected = wav2vec2.state_dict()
    state = {}
    for key, tensor in checkpoint.items():
        key = key[len(_BASE_MODEL_PREFIX):] if key.startswith(_BASE_MODEL_PREFIX) else key
        if key.startswith(_UNUSED_KEY_PREFIXES):
            continue
        state[_match_weight_norm_name(key, expected)] = tensor
    missing = [k for k in expected if k not in state and not k.startswith(_TRAINING_ONLY_KEYS)]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k}: {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
                   for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"wav2vec2 weights in {folder} do not match config.json: missing={missing}, "
            f"unexpected={unexpected}, wrong shape={wrong_shape}"
        )
    for key in expected.keys() - state.keys():  # training-only vectors: unused in eval, zeros suffice
        state[key] = torch.zeros(expected[key].shape, dtype=expected[key].dtype)
    wav2vec2.load_state_dict(state, strict=True, assign=True)
    left_on_meta = [name for name, t in [*wav2vec2.named_parameters(), *wav2vec2.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"wav2vec2 tensors not filled from {folder}: {left_on_meta}")


def _match_weight_norm_name(key: str, expected: dict) -> str:
    """Rename a weight-norm tensor to the naming style the model uses (see _WEIGHT_NORM_ALIASES)."""
    if key in expected:
        return key
    for legacy, parametrized in _WEIGHT_NORM_ALIASES.items():
        for old, new in ((legacy, parametrized), (parametrized, legacy)):
            if key.endswith("." + old):
                candidate = key[: -len(old)] + new
                if candidate in expected:
                    return candidate
    return key


def load_audio_features(source: AudioSource, encoder: AudioEncoder, *, fps: Fps = DEFAULT_FPS,
                        clip_length: int = DEFAULT_CLIP_LENGTH, allow_silence: bool = False,
                        ) -> tuple[DecodedAudio, AudioFeatures]:
    """Decode ``source`` to 16 kHz and encode it; returns the exact audio used and its features."""
    decoded = load_audio(source, sample_rate=WAV2VEC_SAMPLE_RATE)
    return decoded, encoder.encode(decoded, fps=fps, clip_length=clip_length, allow_silence=allow_silence)


__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_CLIP_LENGTH",
    "AudioDecodeError",
    "AudioEncoder",
    "AudioFeatures",
    "ConvStatistics",
    "DecodedAudio",
    "FrameGrid",
    "FrameRateFeatureEncoder",
    "FrameSpan",
    "audio_windows",
    "load_audio",
    "load_audio_features",
    "num_video_frames",
    "padded_frame_count",
    "padding_samples",
    "window_indices",
]

