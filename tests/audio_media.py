"""Test media for the audio tests: tones, encoded files and a tiny random wav2vec2 folder.

Files are written with the ffmpeg binary that imageio-ffmpeg ships (a project dependency), so the
decoder under test (PyAV) never writes its own inputs.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch


def tone(frequency: float, seconds: float, sample_rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """(channels, samples) float32 sine; channel k is scaled by 1 / (k + 1) so channels differ."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = amplitude * np.sin(2 * np.pi * frequency * t)
    return np.stack([wave / (k + 1) for k in range(channels)]).astype(np.float32)


def dominant_frequency(waveform: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest magnitude bin of a Hann-windowed FFT of (T,) audio."""
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(waveform.shape[0])))
    return float(np.argmax(spectrum) * sample_rate / waveform.shape[0])


def ffmpeg_exe() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg writes the test media")
    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def write_tone_file(path: Path, *, codec_args: tuple[str, ...], frequency: float = 440.0, seconds: float = 1.0,
                    sample_rate: int = 44100, channels: int = 2) -> Path:
    """Encode a sine of ``seconds`` into ``path`` (container from the suffix)."""
    run_ffmpeg("-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate={sample_rate}",
               "-ac", str(channels), *codec_args, str(path))
    return path


def write_video(path: Path, *, with_audio: bool, seconds: float = 1.0, frequency: float = 440.0) -> Path:
    """A small mpeg4 video, optionally with an AAC sine track."""
    inputs = ["-f", "lavfi", "-i", f"testsrc=size=32x32:rate=25:duration={seconds}"]
    if with_audio:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={frequency}:duration={seconds}:sample_rate=48000"]
    codecs = ["-c:v", "mpeg4", "-pix_fmt", "yuv420p"] + (["-c:a", "aac", "-shortest"] if with_audio else [])
    run_ffmpeg(*inputs, *codecs, str(path))
    return path


def write_wav(path: Path, channels_by_samples: np.ndarray, sample_rate: int) -> Path:
    """PCM16 WAV of a float (C, T) array, through ffmpeg's raw float input."""
    raw = path.with_suffix(".f32")
    np.ascontiguousarray(channels_by_samples.T, dtype="<f4").tofile(raw)
    run_ffmpeg("-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels_by_samples.shape[0]),
               "-i", str(raw), "-c:a", "pcm_s16le", str(path))
    raw.unlink()
    return path


def espeak_speech(path: Path, text: str) -> Path:
    """Speech made with espeak-ng (skips the test when the binary is absent)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng) - no synthetic speech")
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)
    return path


def save_tiny_wav2vec2(folder: Path, *, weight_file: str = "model.safetensors", seed: int = 0) -> Path:
    """A random Wav2Vec2ForCTC in the layout of facebook/wav2vec2-base-960h, tiny widths.

    The checkpoint uses the legacy weight-norm names (``weight_g``/``weight_v``) of the real file.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

    from emocast_research.synthetic.models import save_wav2vec2_folder

    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, vocab_size=12,
        architectures=["Wav2Vec2ForCTC"],
    )
    return save_wav2vec2_folder(Wav2Vec2ForCTC(config).eval(), folder, weight_file)
