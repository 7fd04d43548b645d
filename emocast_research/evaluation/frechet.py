"""FID (frames) and FVD (16-frame clips): feature networks from user-supplied files, the Fréchet
distance from torchmetrics.

* FID features: the 2048-d pool features of the TensorFlow Inception v3 as the TorchScript file
  ``inception-2015-12-05.pt`` (the network of StyleGAN2-ADA's metrics and clean-fid), called as
  ``network(images, return_features=True)`` on ``(N, 3, H, W)`` uint8 RGB, which resizes to
  299 x 299 inside.
* FVD features: the 400 Kinetics logits of I3D (``i3d_pretrained_400.pt``, the state dict cd-fvd
  loads into its ``InceptionI3d``) on clips resized to 224 x 224 and scaled to [-1, 1] by cd-fvd's own
  ``preprocess_i3d``.

Both feed ``torchmetrics.image.fid.FrechetInceptionDistance`` through its custom-feature input,
so the statistics (float64 means and covariances) and the distance are the library's.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

FVD_CLIP_FRAMES = 16
INCEPTION_FEATURES = 2048
I3D_CLASSES = 400
MISSING_LIBRARY = "pip install 'comfyui-emocast[evaluate]'"


def require_torchmetrics():
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as error:
        raise ImportError(f"FID/FVD need the 'torchmetrics' package: {MISSING_LIBRARY}") from error
    return FrechetInceptionDistance


def require_cdfvd_i3d():
    """cd-fvd's I3D network and preprocessing (its modules that need neither torchvision nor a download)."""
    try:
        from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d
        from cdfvd.third_party.i3d.utils import preprocess_i3d
    except ImportError as error:
        raise ImportError(f"FVD needs the 'cd-fvd' package: {MISSING_LIBRARY}") from error
    return InceptionI3d, preprocess_i3d


class FeatureAccumulator(nn.Module):
    """Hands precomputed ``(N, num_features)`` features to torchmetrics unchanged."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_metric(num_features: int):
    """A torchmetrics ``FrechetInceptionDistance`` that takes features: ``update(features, real)``."""
    return require_torchmetrics()(feature=FeatureAccumulator(num_features))


def frechet_distance(real_features: torch.Tensor, fake_features: torch.Tensor) -> float | None:
    """Fréchet distance between two ``(N, D)`` feature sets (None when either has under 2 rows)."""
    if len(real_features) < 2 or len(fake_features) < 2:
        return None
    metric = frechet_metric(real_features.shape[1])
    metric.update(real_features.double(), real=True)
    metric.update(fake_features.double(), real=False)
    return float(metric.compute())


class InceptionFeatures(nn.Module):
    """2048-d Inception features of ``(N, H, W, 3)`` uint8 RGB frames (see the module doc)."""

    num_features = INCEPTION_FEATURES

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> InceptionFeatures:
        try:
            network = torch.jit.load(str(path), map_location=device)
        except RuntimeError as error:
            raise ValueError(f"{path} is not a TorchScript Inception (expected inception-2015-12-05.pt): {error}") from error
        return cls(network.eval())

    @torch.no_grad()
    def forward(self, frames: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        device = next(iter(self.network.parameters())).device
        features = []
        for first in range(0, len(frames), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(frames[first:first + batch_size])).permute(0, 3, 1, 2)
            features.append(self.network(batch.to(device), return_features=True).float().flatten(1))
        return torch.cat(features).cpu()


class I3DFeatures(nn.Module):
    """400-d I3D logits of ``(N, 16, H, W, 3)`` uint8 RGB clips (see the module doc)."""

    num_features = I3D_CLASSES

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str = "cpu") -> I3DFeatures:
        inception_i3d, _ = require_cdfvd_i3d()
        network = inception_i3d(I3D_CLASSES, in_channels=3)
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise ValueError(f"{path} is not an I3D state dict (i3d_pretrained_400.pt layout): {error}") from error
        return cls(network.to(device).eval())

    @torch.no_grad()
    def forward(self, clips: np.ndarray, batch_size: int = 4) -> torch.Tensor:
        _, preprocess_i3d = require_cdfvd_i3d()
        device = next(iter(self.network.parameters())).device
        features = []
        for first in range(0, len(clips), batch_size):
            batch = preprocess_i3d(np.ascontiguousarray(clips[first:first + batch_size]))
            features.append(self.network(batch.to(device)).float().flatten(1))
        return torch.cat(features).cpu()


def video_clips(frames: np.ndarray, clip_frames: int = FVD_CLIP_FRAMES) -> np.ndarray:
    """``(K, clip_frames, H, W, 3)``: the video cut into consecutive non-overlapping clips (the tail
    shorter than a clip is left out)."""
    count = len(frames) // clip_frames
    return frames[: count * clip_frames].reshape(count, clip_frames, *frames.shape[1:])
