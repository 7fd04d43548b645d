"""Optional vocal isolation with an MDX-Net ONNX model (e.g. UVR's Kim_Vocal_2.onnx), before wav2vec2.

Upstream EmoCAST runs Kim_Vocal_2 through the ``audio-separator`` package when a separator model is
configured. This module runs the same kind of model with onnxruntime alone, following the MDX-Net
inference scheme:

* audio at the model's rate (44.1 kHz), two channels (mono input is duplicated);
* the signal is cut into overlapping chunks of ``hop * (dim_t - 1)`` samples, Hann-weighted and
  overlap-added; ``n_fft // 2`` zeros before the signal keep the first samples away from a chunk edge;
* each chunk -> centred STFT (periodic Hann window) -> the lowest ``dim_f`` bins, real and imaginary
  parts of both channels stacked as 4 input planes (B, 4, dim_f, dim_t), the lowest 3 bins zeroed ->
  model -> inverse STFT of the predicted spectrum (upper bins zero);
* the summed estimate is scaled by the model's ``compensate`` factor.

Nothing is downloaded: the caller supplies the ``.onnx`` file and, for models other than Kim_Vocal_2,
its :class:`MDXParameters`. Typical use, before feature extraction::

    separator = VocalSeparator(model_file)                       # off unless a model file is given
    mix = load_audio(source, sample_rate=KIM_VOCAL_2.sample_rate)
    features = encoder.encode(separator.separate(mix))           # encode() resamples to 16 kHz

Difference from upstream: the separator sees the mono mix-down (duplicated to two channels) rather
than the original stereo channels; the result is mixed to mono for wav2vec2 either way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from .audio_decode import DecodedAudio, resample


@dataclasses.dataclass(frozen=True)
class MDXParameters:
    """STFT layout and scaling an MDX-Net model was trained with.

    Attributes:
        n_fft: STFT size; the model sees bins ``[0, dim_f)`` of ``n_fft // 2 + 1``.
        hop_length: STFT hop in samples.
        dim_f: frequency bins given to the model.
        dim_t: STFT frames per chunk (the model's time axis).
        compensate: gain applied to the estimated stem (the model's level calibration).
        sample_rate: rate the model works at.
        overlap: fraction of a chunk shared with the next one.
        zeroed_low_bins: lowest bins cleared before the model (DC and rumble).
        max_input_peak: the input is scaled down when its peak exceeds this.
    """

    n_fft: int = 7680
    hop_length: int = 1024
    dim_f: int = 3072
    dim_t: int = 256
    compensate: float = 1.009
    sample_rate: int = 44100
    overlap: float = 0.25
    zeroed_low_bins: int = 3
    max_input_peak: float = 0.9

    @property
    def chunk_size(self) -> int:
        """Samples per chunk: a centred STFT of this many samples has exactly ``dim_t`` frames."""
        return self.hop_length * (self.dim_t - 1)

    @property
    def edge_trim(self) -> int:
        return self.n_fft // 2


# Published settings of UVR's Kim_Vocal_2 (MDX-Net vocals model used by EmoCAST/Hallo).
KIM_VOCAL_2 = MDXParameters()


class VocalSeparator:
    """Isolates the vocal stem of mono audio with an MDX-Net ONNX model.

    Args:
        model_path: the ``.onnx`` file (input (B, 4, dim_f, dim_t) spectrum planes, output alike).
        parameters: the model's STFT layout; Kim_Vocal_2's by default.
        providers: onnxruntime execution providers; CPU when not given.
    """

    def __init__(self, model_path: str | Path, parameters: MDXParameters = KIM_VOCAL_2,
                 providers: list[str] | None = None):
        import onnxruntime

        model_path = Path(model_path)
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path}: vocal separation model not found")
        self.parameters = parameters
        self.session = onnxruntime.InferenceSession(
            str(model_path), providers=providers or ["CPUExecutionProvider"])
        model_input = self.session.get_inputs()[0]
        self._input_name = model_input.name
        expected = (4, parameters.dim_f, parameters.dim_t)
        declared = tuple(model_input.shape[1:])
        if any(isinstance(d, int) and d != e for d, e in zip(declared, expected)) or len(declared) != 3:
            raise ValueError(
                f"{model_path}: model input shape {model_input.shape} does not fit the STFT layout "
                f"(batch, {expected[0]}, {expected[1]}, {expected[2]}); pass the model's MDXParameters")
        self._window = torch.hann_window(parameters.n_fft, periodic=True, dtype=torch.float64)

    def separate(self, audio: DecodedAudio) -> DecodedAudio:
        """Vocals of ``audio``, at its sample rate and with its length (a :class:`DecodedAudio`)."""
        p = self.parameters
        mix = resample(np.asarray(audio.waveform, dtype=np.float32), audio.sample_rate, p.sample_rate)
        peak = float(np.max(np.abs(mix))) if mix.size else 0.0
        if peak > p.max_input_peak:
            mix = mix * (p.max_input_peak / peak)
        stereo = np.stack([mix, mix]).astype(np.float32)  # the models are trained on stereo
        vocals = self.demix(stereo).mean(axis=0).astype(np.float32)
        vocals = resample(vocals, p.sample_rate, audio.sample_rate)
        vocals = _fit_length(vocals, audio.num_samples)
        return dataclasses.replace(audio, waveform=vocals, source=f"{audio.source} (vocals)")

    def demix(self, stereo: np.ndarray) -> np.ndarray:
        """(2, T) mixture at the model rate -> (2, T) estimated stem, scaled by ``compensate``."""
        p = self.parameters
        num_samples = stereo.shape[1]
        chunk, trim = p.chunk_size, p.edge_trim
        usable = chunk - 2 * trim
        if usable <= 0:
            raise ValueError(f"chunk of {chunk} samples is too short for n_fft {p.n_fft}")
        tail = usable + trim - num_samples % usable
        padded = np.concatenate(
            [np.zeros((2, trim), np.float32), stereo, np.zeros((2, tail), np.float32)], axis=1)
        total = padded.shape[1]
        step = max(1, int((1.0 - p.overlap) * chunk))
        estimate = np.zeros((2, total), np.float64)
        weight = np.zeros((2, total), np.float64)
        for start in range(0, total, step):
            end = min(start + chunk, total)
            segment = np.zeros((2, chunk), np.float32)
            segment[:, : end - start] = padded[:, start:end]
            stem = self._run_chunk(segment)[:, : end - start]
            window = np.hanning(end - start) if p.overlap > 0 else np.ones(end - start)
            estimate[:, start:end] += stem * window
            weight[:, start:end] += window
        estimate = np.divide(estimate, weight, out=np.zeros_like(estimate), where=weight > 0)
        return (estimate[:, trim: trim + num_samples] * p.compensate).astype(np.float32)

    def _run_chunk(self, segment: np.ndarray) -> np.ndarray:
        """(2, chunk_size) samples -> model -> (2, chunk_size) samples."""
        planes = self._spectrum_planes(torch.from_numpy(segment).double())
        predicted = self.session.run(None, {self._input_name: planes.float().numpy()})[0]
        return self._waveform_from_planes(torch.from_numpy(np.asarray(predicted)).double(), segment.shape[1])

    def _spectrum_planes(self, segment: torch.Tensor) -> torch.Tensor:
        """(2, chunk) -> (1, 4, dim_f, dim_t): [re ch0, im ch0, re ch1, im ch1], low bins zeroed."""
        p = self.parameters
        spectrum = torch.stft(segment, n_fft=p.n_fft, hop_length=p.hop_length, window=self._window,
                              center=True, return_complex=True)  # (2, n_fft // 2 + 1, dim_t)
        planes = torch.stack([spectrum.real, spectrum.imag], dim=1).reshape(1, 4, -1, spectrum.shape[-1])
        planes = planes[:, :, : p.dim_f].clone()
        planes[:, :, : p.zeroed_low_bins] = 0
        return planes

    def _waveform_from_planes(self, planes: torch.Tensor, length: int) -> np.ndarray:
        """(1, 4, dim_f, dim_t) predicted planes -> (2, length) samples; bins above dim_f are zero."""
        p = self.parameters
        num_bins = p.n_fft // 2 + 1
        full = torch.zeros((1, 4, num_bins, planes.shape[-1]), dtype=planes.dtype)
        full[:, :, : planes.shape[2]] = planes
        full = full.reshape(2, 2, num_bins, -1)
        spectrum = torch.complex(full[:, 0], full[:, 1])
        samples = torch.istft(spectrum, n_fft=p.n_fft, hop_length=p.hop_length, window=self._window,
                              center=True, length=length)
        return samples.numpy()


def _fit_length(waveform: np.ndarray, length: int) -> np.ndarray:
    if waveform.shape[0] >= length:
        return waveform[:length]
    return np.pad(waveform, (0, length - waveform.shape[0]))


__all__ = ["KIM_VOCAL_2", "MDXParameters", "VocalSeparator"]
