"""Geometric helpers of the InsightFace models: ArcFace 5-point alignment and box-centred crops."""
from __future__ import annotations

import cv2
import numpy as np

# Standard ArcFace 112x112 positions of (left eye, right eye, nose tip, left mouth corner,
# right mouth corner), the layout SCRFD's five keypoints come in.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` to ``target``.

    Umeyama's closed form (IEEE PAMI 1991), the estimator InsightFace uses for its alignment.

    Args:
        source, target: ``(N, 2)`` corresponding points.

    Returns:
        ``(2, 3)`` float64 affine matrix ``M`` with ``target ~= M @ [x, y, 1]``.
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centered, target_centered = source - source_mean, target - target_mean
    covariance = target_centered.T @ source_centered / source.shape[0]

    reflection_fix = np.ones(2)
    if np.linalg.det(covariance) < 0:
        reflection_fix[-1] = -1.0
    u, singular_values, vt = np.linalg.svd(covariance)
    rank = np.linalg.matrix_rank(covariance)
    if rank == 0:
        raise ValueError("degenerate keypoints: cannot estimate an alignment")
    if rank == 1 and np.linalg.det(u) * np.linalg.det(vt) > 0:
        rotation = u @ vt
    elif rank == 1:
        rotation = u @ np.diag([1.0, -1.0]) @ vt
    else:
        rotation = u @ np.diag(reflection_fix) @ vt
    scale = float(singular_values @ reflection_fix) / source_centered.var(axis=0).sum()

    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - scale * rotation @ source_mean
    return matrix


def arcface_alignment(keypoints: np.ndarray, image_size: int = 112) -> np.ndarray:
    """``(2, 3)`` matrix taking five face keypoints to the ArcFace template at ``image_size``.

    Multiples of 112 scale the template; other sizes (128-style crops) scale it by ``size / 128`` and
    centre it horizontally, as InsightFace does.
    """
    template = ARCFACE_TEMPLATE_112.copy()
    if image_size % 112 == 0:
        template *= image_size / 112.0
    else:
        ratio = image_size / 128.0
        template *= ratio
        template[:, 0] += 8.0 * ratio
    return similarity_transform(keypoints, template)


def align_face(image: np.ndarray, keypoints: np.ndarray, image_size: int = 112) -> np.ndarray:
    """The ``(image_size, image_size, C)`` aligned face crop ArcFace models expect (black border)."""
    matrix = arcface_alignment(keypoints, image_size)
    return cv2.warpAffine(image, matrix, (image_size, image_size), borderValue=0.0)


def box_centred_transform(center_x: float, center_y: float, output_size: int, scale: float) -> np.ndarray:
    """``(2, 3)`` matrix that scales by ``scale`` and puts ``(center_x, center_y)`` at the output centre."""
    return np.array(
        [
            [scale, 0.0, output_size / 2.0 - center_x * scale],
            [0.0, scale, output_size / 2.0 - center_y * scale],
        ],
        dtype=np.float64,
    )


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points under a ``(2, 3)`` affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]
