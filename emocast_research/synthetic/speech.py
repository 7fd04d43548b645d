"""Real synthetic speech from espeak-ng, and the mouth opening that follows it.

`speak(text, voice, speed)` runs the `espeak-ng` program (a system package) and returns 16 kHz
mono float32 audio. `mouth_openings(waveform, fps)` is the per-video-frame loudness envelope that
drives the drawn mouth and that the lip-sync metric compares generated mouths against.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import wave

import numpy as np
import soxr

SAMPLE_RATE = 16000
VOICES = ("en-us", "en", "en-us+f3", "en+m3", "en-us+f2", "en+m7")

TRAIN_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "I never thought we would see the ocean again.",
    "Please bring me the red book from the table.",
    "We walked along the river until the sun went down.",
    "Can you tell me where the station is?",
    "My brother bought a new bicycle last summer.",
    "It is going to rain all afternoon today.",
    "She opened the window and looked outside.",
    "Nobody knows what happened at the meeting.",
    "The children played football in the park.",
    "Turn left at the bakery and keep walking.",
    "I would like a cup of tea with milk.",
    "They moved to a small village by the sea.",
    "Our teacher told a very funny story.",
    "The music was much too loud last night.",
    "Do not forget to call your mother.",
    "He fixed the old clock in an hour.",
    "We are leaving early in the morning.",
    "The garden is full of yellow flowers.",
    "Why did you paint the door blue?",
    "Everyone laughed when the cat fell asleep.",
    "This coffee tastes a little bitter.",
    "The plane landed safely after the storm.",
    "I can hardly believe what you just said.",
)
HELD_OUT_SENTENCES = (
    "A gentle breeze moved through the tall grass.",
    "Remember to lock the gate when you leave.",
    "The museum opens at nine on Sundays.",
    "Maybe we should wait for the next train.",
    "Her voice echoed across the empty hall.",
    "Put the apples in the basket by the door.",
)


class EspeakMissingError(RuntimeError):
    """The espeak-ng program is not installed."""


def speak(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50) -> np.ndarray:
    """(T,) float32 16 kHz speech of `text` (leading/trailing silence trimmed to 0.1 s)."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise EspeakMissingError("the synthetic speech needs the espeak-ng program (apt-get install espeak-ng)")
    result = subprocess.run(
        [program, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        check=True, capture_output=True,
    )
    with wave.open(io.BytesIO(result.stdout)) as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    waveform = samples.astype(np.float32) / 32768.0
    if rate != SAMPLE_RATE:
        waveform = soxr.resample(waveform, rate, SAMPLE_RATE).astype(np.float32)
    return _trim_silence(waveform)


def frame_windows(waveform: np.ndarray, num_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """The samples of each video frame: frame i covers [i / fps, (i + 1) / fps) (empty past the end)."""
    hop = sample_rate / fps
    return [waveform[round(index * hop): round((index + 1) * hop)] for index in range(num_frames)]


def mouth_openings(waveform: np.ndarray, num_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(num_frames,) mouth opening in [0, 1]: RMS loudness per frame window, in dB above a floor.

    Frame i covers the samples of [i / fps, (i + 1) / fps), as the model's audio features do.
    """
    levels = np.array([np.sqrt(np.mean(window.astype(np.float64) ** 2)) if window.size else 0.0
                       for window in frame_windows(waveform, num_frames, fps, sample_rate)], dtype=np.float64)
    peak = max(levels.max(), 1e-6)
    decibels = 20 * np.log10(np.maximum(levels / peak, 1e-4))
    # -30 dB below the loudest frame counts as closed; loud vowels open fully.
    openings = np.clip((decibels + 30.0) / 27.0, 0.0, 1.0)
    # A light temporal smoothing: lips move slower than the loudness.
    kernel = np.array([0.25, 0.5, 0.25])
    return np.convolve(np.pad(openings, 1, mode="edge"), kernel, mode="valid").astype(np.float32)


def insert_silences(waveform: np.ndarray, lead: float = 0.0, tail: float = 0.0, pause: float = 0.0,
                    sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """`waveform` with `lead` / `tail` seconds of exact zeros before / after it and a `pause` of
    zeros at its quietest 40 ms between 25 % and 75 % of its length (a gap between two words)."""
    if pause > 0:
        hop = int(0.04 * sample_rate)
        starts = np.arange(len(waveform) // 4, 3 * len(waveform) // 4 - hop, hop // 2)
        if starts.size:
            quietest = int(starts[np.argmin([np.abs(waveform[s:s + hop]).mean() for s in starts])]) + hop // 2
            waveform = np.concatenate([waveform[:quietest], np.zeros(round(pause * sample_rate), np.float32),
                                       waveform[quietest:]])
    pieces = [np.zeros(round(lead * sample_rate), np.float32), waveform.astype(np.float32),
              np.zeros(round(tail * sample_rate), np.float32)]
    return np.concatenate(pieces)


def _trim_silence(waveform: np.ndarray, threshold: float = 0.01, keep_seconds: float = 0.1) -> np.ndarray:
    loud = np.nonzero(np.abs(waveform) > threshold)[0]
    if loud.size == 0:
        return waveform
    keep = int(keep_seconds * SAMPLE_RATE)
    return waveform[max(0, loud[0] - keep): loud[-1] + keep]
