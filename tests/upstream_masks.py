"""The official reference front-end re-derived step by step, as a second oracle for other image shapes.

The official oracle (``masks/`` of the fixture folder) was made at one size from a square image. The
official code itself does not care: ``ImageProcessor((S, S)).preprocess`` draws the rectangles at the
image's own resolution, writes every intermediate mask as a PNG, and resizes with torchvision's
``Resize((S, S))`` (Pillow bilinear on a PIL image) followed by ``ToTensor``. This module follows those
steps literally — its own files, OpenCV's and Pillow's own calls, no code of ``emocast_core`` — so that
`tests/test_masks.py` can check the project's front-end on non-square images at sizes other than 512,
where the resize and the rectangle clamping take other paths.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _expanded_rect(points: np.ndarray, width: int, height: int, ratio: float) -> tuple[int, int, int, int]:
    low, high = np.round(points.min(0)), np.round(points.max(0))
    min_x, max_x, min_y, max_y = float(low[0]), float(high[0]), float(low[1]), float(high[1])
    centre_x, centre_y = (max_x + min_x) // 2, (max_y + min_y) // 2
    side_x, side_y = (max_x - min_x) * ratio, (max_y - min_y) * ratio
    min_x, max_x = centre_x - side_x // 2, centre_x + side_x // 2
    min_y, max_y = centre_y - side_y // 2, centre_y + side_y // 2
    if min_x < 0:
        max_x, min_x = max_x - min_x, 0
    if max_x > width:
        min_x, max_x = min_x - (max_x - width), width
    if min_y < 0:
        max_y, min_y = max_y - min_y, 0
    if max_y > height:
        min_y, max_y = min_y - (max_y - height), height
    return round(min_x), round(max_x), round(min_y), round(max_y)


def _write_rect_png(path: Path, rect, width: int, height: int) -> None:
    min_x, max_x, min_y, max_y = rect
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[min_y:max_y, min_x:max_x] = 255
    cv2.imwrite(str(path), mask)


def _write_blurred_png(source: Path, target: Path, kernel: int) -> None:
    mask = cv2.imread(str(source), cv2.IMREAD_GRAYSCALE)
    blurred = cv2.GaussianBlur(cv2.resize(mask, (64, 64)), (kernel, kernel), 0)
    cv2.imwrite(str(target), cv2.normalize(blurred, None, 0, 255, cv2.NORM_MINMAX))


def _resize_to_tensor(image: Image.Image, side: int) -> np.ndarray:
    """torchvision ``Resize((side, side))`` + ``ToTensor`` on a PIL image: ``(C, side, side)`` in [0, 1]."""
    resized = np.asarray(image.resize((side, side), Image.BILINEAR), dtype=np.float32) / 255.0
    return resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)


def official_style_reference(image_path: Path, landmarks: np.ndarray, oval_ids, lip_ids, size: int,
                             face_expand_ratio: float, workdir: Path) -> dict[str, np.ndarray]:
    """What the official ``ImageProcessor((size, size)).preprocess`` returns for this image and landmarks."""
    image = Image.open(image_path).convert("RGB")
    width, height = image.size
    face_rect = _expanded_rect(landmarks[list(oval_ids)], width, height, face_expand_ratio)
    lip_rect = _expanded_rect(landmarks[list(lip_ids)], width, height, 2.0)
    _write_rect_png(workdir / "face_mask.png", face_rect, width, height)
    _write_rect_png(workdir / "lip_mask.png", lip_rect, width, height)
    _write_blurred_png(workdir / "face_mask.png", workdir / "face_mask_blur.png", 51)
    _write_blurred_png(workdir / "lip_mask.png", workdir / "sep_lip.png", 31)
    blurred_face = cv2.imread(str(workdir / "face_mask_blur.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(workdir / "sep_background.png"), ((1.0 - blurred_face / 255.0) * 255).astype(np.uint8))
    lip = cv2.imread(str(workdir / "sep_lip.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(workdir / "sep_face.png"), cv2.subtract(blurred_face, lip))

    result = {
        "face_rect": np.array(face_rect), "lip_rect": np.array(lip_rect),
        "pixel_values": (_resize_to_tensor(image, size) - 0.5) / 0.5,
        "face_region": _resize_to_tensor(Image.open(workdir / "face_mask.png").convert("RGB"), size),
    }
    for name, png in (("full", "sep_background"), ("face", "sep_face"), ("lip", "sep_lip")):
        soft = Image.open(workdir / f"{png}.png")
        for level in range(4):
            side = size // (8 * 2**level)
            result[f"{name}_mask.{level}"] = _resize_to_tensor(soft, side).reshape(1, -1)
    return result
