"""Region masks of a reference portrait, computed the way the official EmoCAST/Hallo front-end does.

Given the face-oval and lip landmarks of one face in an image of size ``(height, width)``:

1. the face rectangle is the bounding box of the oval points expanded by ``face_expand_ratio``
   (1.2 at inference), the lip rectangle the box of the lip points expanded by 2.0;
2. each rectangle is drawn as a full-resolution uint8 mask (255 inside), resized to a fixed 64x64
   canvas (cv2 bilinear), Gaussian-blurred (kernel 51 for the face, 31 for the lips) and min-max
   normalised back to 0..255;
3. pose ("full") = 255 - face, face = face - lip (saturating), lip = lip;
4. each soft mask is resized with Pillow bilinear (what torchvision ``Resize`` does on a PIL image)
   to the four UNet levels S/8, S/16, S/32, S/64 and flattened to ``(1, h*w)`` with values k/255.

Those levels assume SD's VAE (8 pixels per latent cell). A VAE that downsamples more (the demo
model's, 16) has a coarser latent grid; `masks_for_latent_grid` picks the levels that match it, so
the front-end stays independent of the model (one ComfyUI reference node serves every model).

The face-locator input ``face_region`` is the full-resolution face rectangle resized to ``S x S``
(Pillow bilinear, no threshold, as the official ``Resize`` + ``ToTensor``).

Every uint8 round trip of the official code (it writes PNG files between steps) is kept, so the
outputs are exact multiples of 1/255 and match the official masks bit for bit when the image
library semantics match (see tests/test_masks.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# MediaPipe face-landmarker (478-point) indices of the face oval (36 points) and of the outer and
# inner lip contour (20 points) that the official code uses for its rectangles.
MEDIAPIPE_SILHOUETTE_IDS = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288,
    397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136,
    172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
MEDIAPIPE_LIP_IDS = (
    61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
    146, 91, 181, 84, 17, 314, 405, 321, 375,
)

# Fixed by the official code, independent of the model size S.
SOFT_MASK_CANVAS = 64
FACE_BLUR_KERNEL = 51
LIP_BLUR_KERNEL = 31
LIP_EXPAND_RATIO = 2.0
NUM_MASK_LEVELS = 4


@dataclass(frozen=True)
class FaceLandmarks:
    """The landmark sets the region masks need, in pixel coordinates ``(x, y)`` of one image.

    Attributes:
        oval: ``(K, 2)`` float64 face-outline points (MediaPipe: the 36 silhouette points).
        lips: ``(L, 2)`` float64 lip-contour points (MediaPipe: the 20 lip points).
    """

    oval: np.ndarray
    lips: np.ndarray

    @classmethod
    def from_mediapipe(cls, points: np.ndarray) -> "FaceLandmarks":
        """Select the oval and lip points from a ``(478, 2)`` (or ``(468, 2)``) MediaPipe array."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] < 468 or points.shape[1] < 2:
            raise ValueError(f"expected MediaPipe landmarks of shape (478, 2), got {points.shape}")
        return cls(
            oval=points[list(MEDIAPIPE_SILHOUETTE_IDS), :2].copy(),
            lips=points[list(MEDIAPIPE_LIP_IDS), :2].copy(),
        )


@dataclass(frozen=True)
class RegionMasks:
    """Masks of one reference image for a model of size ``S``.

    Attributes:
        face_rect: face rectangle ``(min_x, max_x, min_y, max_y)`` in pixels of the landmark image.
        lip_rect: lip rectangle, same convention.
        face_region: ``(S, S)`` float32 in [0, 1], the face-locator condition (one channel); exactly
            {0, 1} for an ``S x S`` image, with soft k/255 edges after a resize.
        soft_face: ``(64, 64)`` uint8 blurred, normalised face rectangle.
        soft_full: ``(64, 64)`` uint8 pose/background mask ``255 - soft_face``.
        soft_face_only: ``(64, 64)`` uint8 ``soft_face - soft_lip`` (saturating).
        soft_lip: ``(64, 64)`` uint8 blurred, normalised lip rectangle.
        full, face, lip: 4 float32 arrays each, level i of shape ``(1, (S/8/2**i)**2)``, values k/255.
    """

    face_rect: tuple[int, int, int, int]
    lip_rect: tuple[int, int, int, int]
    face_region: np.ndarray
    soft_face: np.ndarray
    soft_full: np.ndarray
    soft_face_only: np.ndarray
    soft_lip: np.ndarray
    full: list[np.ndarray]
    face: list[np.ndarray]
    lip: list[np.ndarray]


def expand_region(
    region: tuple[float, float, float, float], image_width: int, image_height: int, expand_ratio: float
) -> tuple[int, int, int, int]:
    """Grow ``(min_x, max_x, min_y, max_y)`` about its centre and shift it back inside the image.

    Follows the official arithmetic exactly (floor divisions of the centre and half-size), because
    the rectangle edges decide which 64x64 canvas pixels light up.
    """
    min_x, max_x, min_y, max_y = (float(v) for v in region)
    mid_x = (max_x + min_x) // 2
    mid_y = (max_y + min_y) // 2
    half_x = ((max_x - min_x) * expand_ratio) // 2
    half_y = ((max_y - min_y) * expand_ratio) // 2
    min_x, max_x = mid_x - half_x, mid_x + half_x
    min_y, max_y = mid_y - half_y, mid_y + half_y
    if min_x < 0:
        max_x -= min_x
        min_x = 0
    if max_x > image_width:
        min_x -= max_x - image_width
        max_x = image_width
    if min_y < 0:
        max_y -= min_y
        min_y = 0
    if max_y > image_height:
        min_y -= max_y - image_height
        max_y = image_height
    return round(min_x), round(max_x), round(min_y), round(max_y)


def landmark_rect(
    points: np.ndarray, image_width: int, image_height: int, expand_ratio: float
) -> tuple[int, int, int, int]:
    """Expanded bounding rectangle ``(min_x, max_x, min_y, max_y)`` of ``(N, 2)`` points."""
    points = np.asarray(points, dtype=np.float64)
    min_xy = np.round(points.min(axis=0))
    max_xy = np.round(points.max(axis=0))
    return expand_region(
        (min_xy[0], max_xy[0], min_xy[1], max_xy[1]), image_width, image_height, expand_ratio
    )


def rect_mask(rect: tuple[int, int, int, int], image_height: int, image_width: int) -> np.ndarray:
    """``(H, W)`` uint8 mask, 255 on ``[min_y:max_y, min_x:max_x]``.

    A rectangle larger than the image can leave a negative start after the shift of
    ``expand_region``; it is clamped to 0 here (the official slicing would wrap around).
    """
    min_x, max_x, min_y, max_y = rect
    mask = np.zeros((image_height, image_width), dtype=np.uint8)
    mask[max(min_y, 0) : max(max_y, 0), max(min_x, 0) : max(max_x, 0)] = 255
    return mask


def soft_mask(mask: np.ndarray, kernel_size: int) -> np.ndarray:
    """Resize a uint8 mask to the 64x64 canvas, blur it and stretch it to 0..255 (uint8)."""
    canvas = cv2.resize(mask, (SOFT_MASK_CANVAS, SOFT_MASK_CANVAS), interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(canvas, (kernel_size, kernel_size), 0)
    return cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX)


def invert_mask(mask: np.ndarray) -> np.ndarray:
    """``255 - mask`` through the official float round trip (truncating cast, not rounding)."""
    return ((1.0 - (mask / 255.0)) * 255).astype(np.uint8)


def mask_level_sizes(size: int) -> list[int]:
    """Side of the square mask at each UNet level: ``[S/8, S/16, S/32, S/64]``."""
    if size % 64 != 0:
        raise ValueError(f"the model size must be a multiple of 64, got {size}")
    return [size // (8 * 2**level) for level in range(NUM_MASK_LEVELS)]


def masks_for_latent_grid(levels, latent_side: int) -> list[torch.Tensor]:
    """The front-end's mask levels (``(..., side_l**2)`` flattened squares, finest first) for a UNet whose
    latent grid is ``latent_side`` square.

    The levels are returned unchanged when the finest one already has the latent grid's side (SD's
    VAE, the official path). For a VAE that downsamples ``2**k`` times more, level ``l`` is the
    front-end's level ``l + k`` (the same Pillow resize of the same soft mask); levels beyond the
    coarsest one given are 2x2 means of the one before.
    """
    levels = list(levels)
    sides = [int(round(level.shape[-1] ** 0.5)) for level in levels]
    if sides[0] == latent_side:
        return levels
    if latent_side < 1 or sides[0] % latent_side or (sides[0] // latent_side) & (sides[0] // latent_side - 1):
        raise ValueError(
            f"the region masks start at {sides[0]}x{sides[0]} and cannot be fitted to a {latent_side}x{latent_side} "
            "latent: the model size must be the VAE's downsampling factor times a power of two"
        )
    skip = (sides[0] // latent_side).bit_length() - 1
    fitted = levels[skip:]
    while len(fitted) < len(levels):
        previous = fitted[-1]
        side = int(round(previous.shape[-1] ** 0.5))
        if side < 2:
            raise ValueError(f"a {latent_side}x{latent_side} latent is too small for {len(levels)} mask levels")
        square = previous.reshape(-1, 1, side, side)
        fitted.append(F.avg_pool2d(square, 2).reshape(*previous.shape[:-1], (side // 2) ** 2))
    return fitted


def pil_bilinear_resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow bilinear resize of a uint8 ``(H, W)`` or ``(H, W, 3)`` array (torchvision ``Resize``)."""
    image = Image.fromarray(array)
    if image.size == (width, height):
        return np.asarray(image).copy()
    return np.asarray(image.resize((width, height), Image.BILINEAR))


def mask_levels(mask: np.ndarray, size: int) -> list[np.ndarray]:
    """A uint8 soft mask at the four UNet levels, each flattened to ``(1, h*w)`` float32 in [0, 1]."""
    levels = []
    for side in mask_level_sizes(size):
        resized = pil_bilinear_resize(mask, side, side)
        levels.append((resized.astype(np.float32) / 255.0).reshape(1, side * side))
    return levels


def region_masks(
    landmarks: FaceLandmarks,
    image_height: int,
    image_width: int,
    size: int = 512,
    face_expand_ratio: float = 1.2,
    lip_expand_ratio: float = LIP_EXPAND_RATIO,
) -> RegionMasks:
    """All region masks of one face whose landmarks are given in an ``image_height x image_width`` image.

    Args:
        landmarks: face-oval and lip points in pixels of that image.
        image_height, image_width: size of the image the landmarks belong to (the rectangles are
            drawn at this resolution, as the official code does).
        size: model size ``S`` (multiple of 64); the output levels are ``S/8 .. S/64``.
        face_expand_ratio: growth of the face rectangle (official inference default 1.2).
        lip_expand_ratio: growth of the lip rectangle (official inference default 2.0).
    """
    face_rect = landmark_rect(landmarks.oval, image_width, image_height, face_expand_ratio)
    lip_rect = landmark_rect(landmarks.lips, image_width, image_height, lip_expand_ratio)
    face_full_res = rect_mask(face_rect, image_height, image_width)
    lip_full_res = rect_mask(lip_rect, image_height, image_width)

    soft_face = soft_mask(face_full_res, FACE_BLUR_KERNEL)
    soft_lip = soft_mask(lip_full_res, LIP_BLUR_KERNEL)
    soft_full = invert_mask(soft_face)
    soft_face_only = cv2.subtract(soft_face, soft_lip)

    # The official face-locator input is the full-resolution rectangle resized to S x S with a
    # bilinear filter and no threshold: binary for an S x S image, soft edges (k/255) otherwise.
    face_region = pil_bilinear_resize(face_full_res, size, size).astype(np.float32) / 255.0

    return RegionMasks(
        face_rect=face_rect,
        lip_rect=lip_rect,
        face_region=face_region,
        soft_face=soft_face,
        soft_full=soft_full,
        soft_face_only=soft_face_only,
        soft_lip=soft_lip,
        full=mask_levels(soft_full, size),
        face=mask_levels(soft_face_only, size),
        lip=mask_levels(soft_lip, size),
    )
