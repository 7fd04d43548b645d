"""Synthetic talking-head media and tiny models for the training tests (plus tests of the helpers).

* `talking_face_frames` draws a cartoon face whose mouth opens with the audio envelope and whose
  mouth/brow shape depends on the emotion; `write_talking_video` encodes it with its audio.
* `BlobFaceDetector` / `BlobLandmarker` / `ColourRecognizer` stand in for the InsightFace models: they
  find the drawn face by colour, so "no face" videos really have no face.
* `tiny_net_config`, `write_tiny_vae`, `write_tiny_models` give a network and frozen encoders small
  enough to train on two CPU cores.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from emocast_core.conditioning.face import FaceAnalyzer
from emocast_core.conditioning.face_models import DetectedFace
from emocast_core.conditioning.masks import FaceLandmarks
from emocast_core.models.config import AudioModuleConfig, EmoCASTConfig, MotionModuleConfig, UNetConfig

SKIN = (225, 180, 140)
BACKGROUND = (60, 80, 120)
AUDIO_RATE = 16000
EMOTION_SHAPES = {  # mouth half-width (fraction of face width), corner lift (fraction of face height), brow tilt
    "neutral": (0.18, 0.0, 0.0),
    "happy": (0.26, 0.06, 0.0),
    "sad": (0.16, -0.05, 0.08),
    "angry": (0.2, -0.02, -0.1),
    "surprised": (0.12, 0.0, 0.0),
}


def speech_like_audio(seconds: float, seed: int = 0, rate: int = AUDIO_RATE) -> tuple[np.ndarray, np.ndarray]:
    """(waveform, envelope per sample): a voiced tone with a ~4 Hz syllable envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (3.5 + rng.random()) * t + rng.random() * 6)
    waveform = 0.4 * envelope * np.sin(2 * np.pi * (140 + 40 * rng.random()) * t) * (1 + 0.3 * np.sin(2 * np.pi * 7 * t))
    return waveform.astype(np.float32), envelope.astype(np.float32)


def talking_face_frames(num_frames: int, height: int, width: int, fps: float, envelope: np.ndarray,
                        emotion: str = "neutral", with_face: bool = True, rate: int = AUDIO_RATE) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a face that talks with `envelope` (per audio sample)."""
    half_mouth, lift, brow = EMOTION_SHAPES[emotion]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    face_h = 0.5 * height
    face_w = 0.7 * face_h
    for index in range(num_frames):
        frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
        if with_face:
            opening = float(envelope[min(int(index / fps * rate), len(envelope) - 1)])
            cx = width / 2 + 0.03 * width * np.sin(index / 9.0)
            cy = height / 2 + 0.02 * height * np.cos(index / 11.0)
            cv2.ellipse(frame, (int(cx), int(cy)), (int(face_w / 2), int(face_h / 2)), 0, 0, 360, SKIN, -1)
            for side in (-1, 1):
                eye = (int(cx + side * 0.2 * face_w), int(cy - 0.12 * face_h))
                cv2.circle(frame, eye, max(1, int(0.05 * face_w)), (30, 30, 30), -1)
                brow_y = cy - 0.24 * face_h
                cv2.line(frame, (int(cx + side * 0.1 * face_w), int(brow_y + side * brow * face_h)),
                         (int(cx + side * 0.3 * face_w), int(brow_y - side * brow * face_h)), (40, 20, 10), 2)
            mouth_y = cy + 0.22 * face_h - lift * face_h
            mouth = (int(cx), int(mouth_y))
            axes = (max(2, int(half_mouth * face_w)), max(1, int((0.02 + 0.1 * opening) * face_h)))
            cv2.ellipse(frame, mouth, axes, 0, 0, 360, (120, 20, 30), -1)
        frames[index] = frame
    return frames


def write_talking_video(path: Path, *, seconds: float = 2.0, fps: float = 30.0, size=(96, 128), emotion: str = "neutral",
                        with_audio: bool = True, with_face: bool = True, seed: int = 0) -> Path:
    """An H.264 (+AAC) video of the synthetic face; size is (height, width)."""
    from emocast_core.video import write_video

    waveform, envelope = speech_like_audio(seconds, seed)
    frames = talking_face_frames(int(round(seconds * fps)), size[0], size[1], fps, envelope, emotion, with_face)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps, audio=(waveform, AUDIO_RATE) if with_audio else None, preset="ultrafast")
    return path


# --- face-model stand-ins ------------------------------------------------------------------------


def _skin_mask(image: np.ndarray) -> np.ndarray:
    diff = np.abs(image.astype(np.int16) - np.array(SKIN, dtype=np.int16)).sum(axis=-1)
    return diff < 60


class BlobFaceDetector:
    """Finds the synthetic face by its skin colour."""

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        mask = _skin_mask(image)
        if mask.sum() < 0.01 * mask.size:
            return []
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
        w, h = x1 - x0, y1 - y0
        keypoints = np.array([[x0 + 0.3 * w, y0 + 0.38 * h], [x0 + 0.7 * w, y0 + 0.38 * h], [x0 + 0.5 * w, y0 + 0.55 * h],
                              [x0 + 0.35 * w, y0 + 0.75 * h], [x0 + 0.65 * w, y0 + 0.75 * h]], dtype=np.float32)
        return [DetectedFace(np.array([x0, y0, x1, y1], dtype=np.float32), 0.99, keypoints)]


class BlobLandmarker:
    """Oval points on the face ellipse, lip points around the drawn mouth."""

    def landmarks(self, image: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        x0, y0, x1, y1 = face.bbox
        angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        oval = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)
        mouth = (np.abs(image.astype(np.int16) - np.array([120, 20, 30])).sum(axis=-1) < 60)
        mouth[: int(cy)] = False
        if mouth.any():
            ys, xs = np.nonzero(mouth)
            mx0, mx1, my0, my1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        else:
            mx0, mx1, my0, my1 = cx - 0.2 * rx, cx + 0.2 * rx, cy + 0.4 * ry, cy + 0.45 * ry
        lip_angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        lips = np.stack(
            [(mx0 + mx1) / 2 + (mx1 - mx0) / 2 * np.cos(lip_angles), (my0 + my1) / 2 + (my1 - my0) / 2 * np.sin(lip_angles)], axis=1
        )
        return FaceLandmarks(oval=oval.astype(np.float64), lips=lips.astype(np.float64))


class ColourRecognizer:
    """A 512-d 'identity' from the face crop's mean colours (stable for one synthetic person)."""

    def __init__(self, seed: int = 0):
        self.projection = np.random.default_rng(seed).standard_normal((3, 512)).astype(np.float32)

    def embed(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        return (image.reshape(-1, 3).mean(axis=0) / 255.0) @ self.projection


def blob_face_analyzer() -> FaceAnalyzer:
    return FaceAnalyzer(BlobFaceDetector(), ColourRecognizer(), BlobLandmarker())


# --- tiny models ---------------------------------------------------------------------------------

TINY_TEXT_DIM = 32  # tests/tiny_clip.py hidden size
TINY_W2V_LAYERS, TINY_W2V_DIM = 2, 16  # tests/audio_media.save_tiny_wav2vec2


def tiny_net_config() -> EmoCASTConfig:
    """A 2-level EmoCAST network (2.3 M parameters) that trains in seconds on a CPU."""
    return EmoCASTConfig(
        unet=UNetConfig(
            block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=2, cross_attention_dim=TINY_TEXT_DIM, norm_num_groups=8, sample_size=8,
        ),
        motion=MotionModuleConfig(num_attention_heads=2, resolutions=(1, 2), norm_num_groups=8),
        audio=AudioModuleConfig(audio_token_dim=TINY_TEXT_DIM, emotion_token_dim=TINY_TEXT_DIM, emotive_head_dim=8),
        face_locator_block_out_channels=(4, 8, 8, 16),  # three stride-2 convs: the VAE's factor 8
        num_face_tokens=2,
        audio_layers=TINY_W2V_LAYERS,
        audio_channels=TINY_W2V_DIM,
        audio_intermediate_dim=16,
        num_audio_tokens=4,
    )


def write_tiny_vae(folder: Path) -> Path:
    """A random 4-level AutoencoderKL (scale factor 8, like SD's VAE) saved as a diffusers folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=4, sample_size=64,
    )
    vae.save_pretrained(folder)
    return folder


def write_tiny_models(root: Path) -> dict[str, Path]:
    """VAE, CLIP text encoder (+ tokenizer) and wav2vec2 folders under `root`."""
    from audio_media import save_tiny_wav2vec2
    from tiny_clip import write_tiny_encoder_files

    clip = write_tiny_encoder_files(root / "clip")
    return {
        "vae": write_tiny_vae(root / "vae"),
        "text_encoder": clip["hf_folder"],
        "wav2vec": save_tiny_wav2vec2(root / "wav2vec2"),
    }


# --- tests of the helpers ------------------------------------------------------------------------


def test_blob_detector_finds_the_drawn_face_and_only_it():
    _, envelope = speech_like_audio(1.0)
    with_face = talking_face_frames(3, 96, 128, 25, envelope, "happy")
    without = talking_face_frames(3, 96, 128, 25, envelope, with_face=False)
    faces = BlobFaceDetector().detect(with_face[0])
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].bbox
    assert 30 < (x0 + x1) / 2 < 98 and 20 < (y0 + y1) / 2 < 76
    assert BlobFaceDetector().detect(without[0]) == []


def test_mouth_landmarks_follow_the_audio_envelope():
    envelope = np.concatenate([np.zeros(AUDIO_RATE // 5), np.ones(AUDIO_RATE // 5)]).astype(np.float32)
    frames = talking_face_frames(10, 96, 96, 25, envelope)
    analyzer = blob_face_analyzer()
    closed = analyzer.landmarks(frames[1], analyzer.detect(frames[1])[0]).lips
    opened = np.asarray(analyzer.landmarks(frames[8], analyzer.detect(frames[8])[0]).lips)
    assert np.ptp(opened[:, 1]) > 2 * np.ptp(closed[:, 1])


@pytest.mark.parametrize("with_audio", [True, False])
def test_synthetic_video_has_the_requested_streams(tmp_path, with_audio):
    from emocast_core.video import probe_video

    info = probe_video(write_talking_video(tmp_path / "v.mp4", seconds=1.0, fps=30, with_audio=with_audio))
    assert info.num_frames == 30 and abs(info.fps - 30) < 1e-6
    assert info.has_audio == with_audio


@contextlib.contextmanager
def one_thread():
    """Tiny models run single-threaded: on a loaded 2-core machine, two OpenMP threads made the tiny
    network's step ~100x slower (thread spin-waits), and one thread loses nothing at this size."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture
def single_thread():
    with one_thread():
        yield
