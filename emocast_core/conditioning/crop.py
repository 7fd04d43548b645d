"""Face-centred square crop of a reference image, and pasting generated frames back into it.

The model works on ``S x S`` images (512 by default). A portrait of any size is cut to a square
around the chosen face, resized to ``S``, animated, and the generated frames are resized back and
blended into the untouched full-size original with a feathered edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from .image_input import to_rgb_float, to_uint8

# Side of the square crop as a multiple of the larger side of the detector box. The official
# recipe asks for portraits where the face fills roughly 50-70 % of the frame; 1.7 puts it at ~60 %.
DEFAULT_CROP_SCALE = 1.7


@dataclass(frozen=True)
class CropTransform:
    """Where a square model-size crop came from.

    Attributes:
        box: ``(x0, y0, x1, y1)`` integer square in source pixels (``x1 - x0 == y1 - y0``), inside
            the source image.
        output_size: side ``S`` of the crop given to the model.
        source_size: ``(height, width)`` of the source image.
    """

    box: tuple[int, int, int, int]
    output_size: int
    source_size: tuple[int, int]

    @property
    def side(self) -> int:
        """Side of the square in source pixels."""
        return self.box[2] - self.box[0]

    @property
    def scale(self) -> float:
        """Crop pixels per source pixel (``S / side``)."""
        return self.output_size / self.side

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` source ``(x, y)`` pixel coordinates into crop coordinates."""
        return (np.asarray(points, dtype=np.float64) - np.array(self.box[:2], dtype=np.float64)) * self.scale

    def to_source(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` crop coordinates back into source pixel coordinates."""
        return np.asarray(points, dtype=np.float64) / self.scale + np.array(self.box[:2], dtype=np.float64)


def _square_box(center_x: float, center_y: float, side: int, height: int, width: int) -> tuple[int, int, int, int]:
    side = int(max(1, min(side, height, width)))
    x0 = int(round(center_x - side / 2.0))
    y0 = int(round(center_y - side / 2.0))
    # Shift (never shrink further) so the square stays inside the image: paste-back then only
    # touches real pixels and needs no padding.
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return x0, y0, x0 + side, y0 + side


def face_crop_transform(
    face_bbox: np.ndarray,
    source_size: tuple[int, int],
    output_size: int = 512,
    crop_scale: float = DEFAULT_CROP_SCALE,
) -> CropTransform:
    """Square crop centred on a detector box ``(x0, y0, x1, y1)``, side ``crop_scale x max(w, h)``.

    The side is capped by the shorter image side; the square is shifted to stay inside the image.
    """
    height, width = source_size
    x0, y0, x1, y1 = (float(v) for v in np.asarray(face_bbox)[:4])
    side = int(round(max(x1 - x0, y1 - y0) * crop_scale))
    box = _square_box((x0 + x1) / 2.0, (y0 + y1) / 2.0, side, height, width)
    return CropTransform(box=box, output_size=output_size, source_size=(height, width))


def center_crop_transform(source_size: tuple[int, int], output_size: int = 512) -> CropTransform:
    """The largest centred square of the image."""
    height, width = source_size
    box = _square_box(width / 2.0, height / 2.0, min(height, width), height, width)
    return CropTransform(box=box, output_size=output_size, source_size=(height, width))


def crop_image(image_rgb: np.ndarray, transform: CropTransform) -> np.ndarray:
    """Cut and resize ``(H, W, 3)`` float [0, 1] to the ``(S, S, 3)`` uint8 model input.

    Pillow bilinear with its area-aware filter support, the resize the official front-end applies
    to the whole image (torchvision ``Resize`` on a PIL image).
    """
    pil_image = Image.fromarray(to_uint8(image_rgb))
    size = transform.output_size
    return np.asarray(pil_image.resize((size, size), Image.BILINEAR, box=transform.box))


def feather_weights(transform: CropTransform, feather: float) -> np.ndarray:
    """``(side, side)`` float32 blend weights: 1 inside, smooth ramp to 0 at the crop edges.

    Edges lying on the image border get no ramp, since nothing outside them needs blending.
    ``feather`` is the ramp width as a fraction of the crop side.
    """
    side = transform.side
    height, width = transform.source_size
    x0, y0, x1, y1 = transform.box
    ramp = max(feather * side, 0.0)
    coords = np.arange(side, dtype=np.float32) + 0.5

    def axis_weight(touches_low: bool, touches_high: bool) -> np.ndarray:
        if ramp <= 0:
            return np.ones(side, dtype=np.float32)
        low = np.full(side, np.inf, dtype=np.float32) if touches_low else coords
        high = np.full(side, np.inf, dtype=np.float32) if touches_high else side - coords
        t = np.clip(np.minimum(low, high) / ramp, 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)  # smoothstep: no visible crease at the ramp ends

    weight_x = axis_weight(x0 == 0, x1 == width)
    weight_y = axis_weight(y0 == 0, y1 == height)
    return np.outer(weight_y, weight_x).astype(np.float32)


def _frames_to_numpy(frames: Any) -> tuple[np.ndarray, bool]:
    """``(T, h, w, 3)`` float32 frames and whether the caller used torch."""
    if isinstance(frames, torch.Tensor):
        array = frames.detach().to("cpu", torch.float32).numpy()
        from_torch = True
    else:
        array = np.asarray(frames)
        array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
        from_torch = False
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] < 3:
        raise ValueError(f"expected frames [T, H, W, C] with C >= 3, got {tuple(array.shape)}")
    return array[..., :3], from_torch


def paste_back(
    frames: Any,
    transform: CropTransform,
    original_image: Any,
    feather: float = 0.1,
) -> Any:
    """Blend generated crops into the full-size original image.

    Args:
        frames: ``[T, h, w, C]`` frames in [0, 1] (torch, ComfyUI IMAGE layout, or numpy; uint8 numpy
            accepted); usually ``h == w == transform.output_size``, any square size works.
        transform: the crop the frames were generated from.
        original_image: the full-size source image (any type ``to_rgb_float`` accepts) of size
            ``transform.source_size``.
        feather: width of the blend ramp at the crop edges, as a fraction of the crop side.

    Returns:
        ``[T, H, W, 3]`` float32 in [0, 1], a torch tensor if ``frames`` was one, else numpy. Pixels
        outside the crop box equal the original.
    """
    crops, from_torch = _frames_to_numpy(frames)
    background = to_rgb_float(original_image)
    if background.shape[:2] != tuple(transform.source_size):
        raise ValueError(
            f"original image is {background.shape[:2]}, the crop was taken from {transform.source_size}"
        )
    x0, y0, x1, y1 = transform.box
    side = transform.side
    weights = feather_weights(transform, feather)[..., None]
    patch_background = background[y0:y1, x0:x1]

    result = np.repeat(background[None], crops.shape[0], axis=0)
    for index, crop in enumerate(crops):
        shrinking = crop.shape[0] > side
        resized = cv2.resize(
            crop, (side, side), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        )
        resized = np.clip(resized, 0.0, 1.0)
        result[index, y0:y1, x0:x1] = resized * weights + patch_background * (1.0 - weights)
    if from_torch:
        return torch.from_numpy(result)
    return result
