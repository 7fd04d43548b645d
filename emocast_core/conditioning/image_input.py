"""Turn the image types users hand us into one RGB layout.

Accepted: numpy ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` arrays (uint8, uint16 or
float in 0..1), PIL images of any mode, and torch tensors in the ComfyUI IMAGE layout
``[B, H, W, C]`` (0..1; the first image of the batch is used) or ``[H, W, C]``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image


def _composite_alpha(rgba: np.ndarray, background: float) -> np.ndarray:
    # A transparent background would otherwise expose whatever colour the encoder left under the
    # alpha channel; a flat backdrop is what a portrait model expects.
    rgb, alpha = rgba[..., :3], rgba[..., 3:4]
    return rgb * alpha + background * (1.0 - alpha)


def to_rgb_float(image: Any, background: float = 1.0) -> np.ndarray:
    """Return the image as an ``(H, W, 3)`` float32 array in [0, 1].

    Grayscale is repeated to three channels; an alpha channel is composited over a flat
    ``background`` grey level (1.0 = white).
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            array = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        elif image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(image, dtype=np.float32) / 65535.0
        else:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().to("cpu", torch.float32)
        if tensor.ndim == 4:
            tensor = tensor[0]
        array = tensor.numpy()
    elif isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            array = image.astype(np.float32) / 255.0
        elif image.dtype == np.uint16:
            array = image.astype(np.float32) / 65535.0
        elif image.dtype == np.bool_:
            array = image.astype(np.float32)
        else:
            array = image.astype(np.float32)
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}: use a numpy array, a PIL image or a "
            "torch tensor [B, H, W, C]"
        )

    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(
            f"expected an image of shape (H, W), (H, W, C) or [B, H, W, C] with C in 1..4, got {array.shape}"
        )
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 2:  # grey + alpha
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=-1), array[..., 1:]], axis=-1)
    if array.shape[-1] == 4:
        array = _composite_alpha(array, background)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def to_uint8(image_float: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` float in [0, 1] -> uint8 with rounding."""
    return np.clip(np.rint(image_float * 255.0), 0, 255).astype(np.uint8)
