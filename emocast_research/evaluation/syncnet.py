"""Sync-C / Sync-D (LSE-C / LSE-D) with the standard SyncNet (``syncnet_v2.model``).

What the reference evaluation (Chung & Zisserman's SyncNet, its ``run_pipeline`` + ``run_syncnet``)
does, and this module does the same way:

* face crop: the detected face box of each frame, its centre and half-size median-filtered over 13
  frames, is cut as a square of side ``2 * s * (1 + crop_scale)`` (``crop_scale`` 0.4) that starts
  ``s`` above the box centre, on a canvas padded with grey 110, resized to 224 x 224, in BGR order,
  raw 0..255 values;
* audio: 13 MFCCs (``python_speech_features.mfcc`` defaults: 25 ms windows every 10 ms) of the
  16 kHz track at int16 scale; 4 MFCC steps per video frame at 25 fps;
* features: the lip network sees 5 frames, the audio network 20 MFCC steps (0.2 s) from the same
  start, for every start up to ``min(frames, samples / 640) - 5``;
* offset search: for every shift in ``[-vshift, vshift]`` (``vshift`` 15) the mean distance
  between each lip feature and the audio feature ``shift`` frames away (zero-padded at the ends).
  Sync-D is the smallest mean distance, Sync-C the median of the mean distances minus the
  smallest, and the offset ``vshift - argmin``: ``k > 0`` means the audio runs k frames ahead of
  the lips.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

SYNCNET_FPS = 25.0
SYNCNET_CROP_SIZE = 224
SYNCNET_CROP_SCALE = 0.4
SYNCNET_PAD_VALUE = 110
SYNCNET_SMOOTHING_FRAMES = 13
SYNCNET_VSHIFT = 15
SYNCNET_LIP_FRAMES = 5
SYNCNET_MFCC_PER_FRAME = 4
SYNCNET_MFCC_WINDOW = 20
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
PAIRWISE_DISTANCE_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default, which the reference uses


class SyncNet(nn.Module):
    """The SyncNet v2 two-stream network; parameter names are those of ``syncnet_v2.model``.

    ``embed_lips``: ``(N, 3, 5, 224, 224)`` BGR 0..255 -> ``(N, embedding_dim)``;
    ``embed_audio``: ``(N, 1, 13, 20)`` MFCCs -> ``(N, embedding_dim)``.
    """

    def __init__(self, embedding_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)), nn.BatchNorm2d(192), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(384), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)), nn.BatchNorm2d(256), nn.ReLU(),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_dim),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_dim),
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0), nn.BatchNorm3d(96), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.ReLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), nn.BatchNorm3d(512), nn.ReLU(),
        )

    def embed_audio(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc_windows).flatten(1))

    def embed_lips(self, lip_windows: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(lip_windows).flatten(1))

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> SyncNet:
        """Load a ``syncnet_v2.model`` state dict (tensors only: nothing is unpickled as code)."""
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "netcnnlip.0.weight" not in state:
            raise ValueError(f"{path} is not a SyncNet state dict (syncnet_v2.model layout: netcnnaud/netcnnlip/...)")
        model = cls(embedding_dim=int(state["netfclip.3.weight"].shape[0]))
        model.load_state_dict(state)
        return model.to(device=device, dtype=dtype).eval()


@dataclass(frozen=True)
class SyncScores:
    """Result of one video: ``confidence`` is Sync-C, ``min_distance`` Sync-D, ``offset`` in frames."""

    offset: int
    confidence: float
    min_distance: float
    mean_distances: np.ndarray  # (2 * vshift + 1,) mean distance per tried shift


def mfcc(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """``(13, steps)`` MFCCs of mono float audio (full scale 1.0), taken at int16 scale like the
    reference, which reads the 16-bit WAV without normalising it."""
    try:
        import python_speech_features
    except ImportError as error:
        raise ImportError("Sync-C/Sync-D need the 'python_speech_features' package: pip install "
                          "'comfyui-emocast[evaluate]'") from error
    pcm = np.round(np.clip(np.asarray(audio, dtype=np.float64), -1.0, 32767 / 32768) * 32768.0)
    return python_speech_features.mfcc(pcm, sample_rate).T.astype(np.float32)


def smooth_face_track(boxes: np.ndarray) -> np.ndarray:
    """``(T, 3)`` (centre x, centre y, half-size) of ``(T, 4)`` face boxes, median-filtered over 13
    frames (``scipy.signal.medfilt``, zero-padded ends, as in the reference)."""
    # scipy is optional (the [evaluate] extra), needed only for Sync-C/Sync-D.
    from scipy.signal import medfilt

    boxes = np.asarray(boxes, dtype=np.float64)
    half_size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2.0
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2.0
    # Videos shorter than the filter (the reference only keeps tracks over 100 frames) get the
    # longest odd window that fits, so the zero padding never outvotes the real boxes.
    kernel = min(SYNCNET_SMOOTHING_FRAMES, len(boxes) - (1 - len(boxes) % 2))
    return np.stack([medfilt(v, kernel_size=kernel) for v in (centre_x, centre_y, half_size)], axis=1)


def syncnet_face_crops(frames_rgb: np.ndarray, face_boxes: np.ndarray | None,
                       crop_scale: float = SYNCNET_CROP_SCALE) -> np.ndarray:
    """``(T, 224, 224, 3)`` uint8 BGR SyncNet inputs.

    ``face_boxes``: ``(T, 4)`` (x0, y0, x1, y1) per frame, or None to take each whole frame as the
    crop (for face-centred videos such as the generator's output, and when no detector is given).
    """
    frames_bgr = np.ascontiguousarray(frames_rgb[..., ::-1])
    if face_boxes is None:
        return np.stack([cv2.resize(frame, (SYNCNET_CROP_SIZE, SYNCNET_CROP_SIZE)) for frame in frames_bgr])
    track = smooth_face_track(face_boxes)
    crops = []
    for frame, (centre_x, centre_y, half_size) in zip(frames_bgr, track):
        pad = int(half_size * (1 + 2 * crop_scale))
        canvas = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=SYNCNET_PAD_VALUE)
        my, mx = centre_y + pad, centre_x + pad
        face = canvas[int(my - half_size):int(my + half_size * (1 + 2 * crop_scale)),
                      int(mx - half_size * (1 + crop_scale)):int(mx + half_size * (1 + crop_scale))]
        crops.append(cv2.resize(face, (SYNCNET_CROP_SIZE, SYNCNET_CROP_SIZE)))
    return np.stack(crops)


def offset_search(lip_features: torch.Tensor, audio_features: torch.Tensor, vshift: int = SYNCNET_VSHIFT) -> SyncScores:
    """Sync scores from ``(N, D)`` lip and audio features of the same N windows (see the module doc)."""
    window = 2 * vshift + 1
    padded_audio = torch.nn.functional.pad(audio_features, (0, 0, vshift, vshift))
    # (N, window, D): for lip window i, the audio features of windows i - vshift .. i + vshift.
    shifted_audio = padded_audio.unfold(0, window, 1)[: len(lip_features)].transpose(1, 2)
    distances = (lip_features[:, None, :] - shifted_audio + PAIRWISE_DISTANCE_EPS).norm(dim=-1)
    mean_distances = distances.mean(dim=0).double().cpu().numpy()  # one transfer per video
    best = int(np.argmin(mean_distances))
    median = float(torch.from_numpy(mean_distances).median())  # torch's median (lower middle), as the reference
    return SyncScores(offset=vshift - best, confidence=median - float(mean_distances[best]),
                      min_distance=float(mean_distances[best]), mean_distances=mean_distances)


@torch.no_grad()
def sync_scores(model, face_crops_bgr: np.ndarray, audio: np.ndarray, vshift: int = SYNCNET_VSHIFT,
                batch_size: int = 20) -> SyncScores:
    """Sync-C / Sync-D / offset of a video.

    Args:
        model: a ``SyncNet`` (anything with ``embed_lips`` / ``embed_audio`` and parameters or a
            ``device``/``dtype``).
        face_crops_bgr: ``(T, 224, 224, 3)`` uint8 from ``syncnet_face_crops``, at 25 fps.
        audio: ``(S,)`` float32 mono speech at 16 kHz.
    """
    parameter = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    coefficients = torch.from_numpy(mfcc(audio))
    num_windows = min(len(face_crops_bgr), len(audio) // SAMPLES_PER_FRAME) - SYNCNET_LIP_FRAMES
    if num_windows < 1:
        raise ValueError(f"too short for SyncNet: needs more than {SYNCNET_LIP_FRAMES} frames of video with audio "
                         f"({len(face_crops_bgr)} frames, {len(audio) / 16000:.2f} s of audio)")
    video = torch.from_numpy(face_crops_bgr).permute(3, 0, 1, 2)  # (3, T, 224, 224) uint8
    lip_features, audio_features = [], []
    for first in range(0, num_windows, batch_size):
        starts = range(first, min(num_windows, first + batch_size))
        lips = torch.stack([video[:, s:s + SYNCNET_LIP_FRAMES] for s in starts])
        sound = torch.stack([coefficients[None, :, s * SYNCNET_MFCC_PER_FRAME:s * SYNCNET_MFCC_PER_FRAME + SYNCNET_MFCC_WINDOW]
                             for s in starts])
        lip_features.append(model.embed_lips(lips.to(device=device, dtype=dtype)).float())
        audio_features.append(model.embed_audio(sound.to(device=device, dtype=dtype)).float())
    return offset_search(torch.cat(lip_features), torch.cat(audio_features), vshift)
