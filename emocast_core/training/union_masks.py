"""Per-clip union region masks, computed the way upstream's training-data preparation does.

Hallo's `ImageProcessorForDataProcessing` (used for EmoCAST's training data) takes every frame's
face-oval and lip rectangles with expand ratio 1.0, unites them (the union is then filled to its
bounding box), and blurs the two union masks on the 64x64 canvas:

    soft_face = blur(union face, 51);   soft_lip = blur(union lip, 31)
    full ("pose") = 255 - soft_face;    face = soft_face - soft_lip (saturating);   lip = soft_lip

The hard union face rectangle at crop resolution is the face locator's input. Unlike inference
(expand 1.2 / 2.0 around one frame's points), the union already covers the motion of the clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..conditioning.masks import FACE_BLUR_KERNEL, LIP_BLUR_KERNEL, FaceLandmarks, landmark_rect, rect_mask, soft_mask

TRAINING_EXPAND_RATIO = 1.0


@dataclass(frozen=True)
class UnionMasks:
    """face_region (S, S) uint8 0/1; soft_full / soft_face / soft_lip (64, 64) uint8."""

    face_region: np.ndarray
    soft_full: np.ndarray
    soft_face: np.ndarray
    soft_lip: np.ndarray


def union_rect(rects: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Bounding rectangle (min_x, max_x, min_y, max_y) of rectangles in the same convention."""
    array = np.asarray(rects)
    return int(array[:, 0].min()), int(array[:, 1].max()), int(array[:, 2].min()), int(array[:, 3].max())


def union_region_masks(landmarks: Sequence[FaceLandmarks], size: int, expand_ratio: float = TRAINING_EXPAND_RATIO) -> UnionMasks:
    """Union masks of a clip from the landmarks of its frames (in pixels of the S x S crops)."""
    if not landmarks:
        raise ValueError("union masks need the landmarks of at least one frame")
    face_rect = union_rect([landmark_rect(points.oval, size, size, expand_ratio) for points in landmarks])
    lip_rect = union_rect([landmark_rect(points.lips, size, size, expand_ratio) for points in landmarks])
    face_full_res = rect_mask(face_rect, size, size)
    lip_full_res = rect_mask(lip_rect, size, size)
    soft_face = soft_mask(face_full_res, FACE_BLUR_KERNEL)
    soft_lip = soft_mask(lip_full_res, LIP_BLUR_KERNEL)
    return UnionMasks(
        face_region=(face_full_res > 0).astype(np.uint8),
        # Upstream computes `255.0 - mask` and stores it as PNG: the exact integer complement.
        soft_full=(255 - soft_face.astype(np.int16)).astype(np.uint8),
        soft_face=cv2.subtract(soft_face, soft_lip),
        soft_lip=soft_lip,
    )
