"""Face analysis for the drawn (synthetic) faces: the stand-ins for InsightFace's detector, recogniser
and landmarker, assembled into a regular `FaceAnalyzer` by `synthetic_face_analyzer()`.

It lives in the runtime because the demo model reads faces with it when it generates (`demo.face`);
the research package (`emocast_research.synthetic`) draws the faces and builds its training set
with the same analysis.

The drawn faces are flat colours on a flat background, so colour is enough:

* the skin colour is read at the image centre (the faces are framed there) and the face box is the
  largest skin-coloured region;
* the lips are the non-skin pixels in the lower middle of the face box (the drawn mouth);
* the "identity embedding" is a fixed linear map of the skin, hair and background colours to 512
  values — a deterministic function, like ArcFace's, that is the same for every frame of a person.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..conditioning.face import FaceAnalyzer
from ..conditioning.face_models import DetectedFace
from ..conditioning.masks import FaceLandmarks

EMBEDDING_DIM = 512
SKIN_TOLERANCE = 45  # summed |RGB| difference still counted as skin
EMBEDDING_SEED = 20240601  # fixes the colour -> embedding map; changing it changes every embedding


def _as_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.round(image.astype(np.float32) * (255.0 if image.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return image[..., :3]


def _patch_colour(image: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    height, width = image.shape[:2]
    x0, x1 = int(max(0, x - radius)), int(min(width, x + radius + 1))
    y0, y1 = int(max(0, y - radius)), int(min(height, y + radius + 1))
    return np.median(image[y0:y1, x0:x1].reshape(-1, 3), axis=0)


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixel ring (the background of a synthetic frame)."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(ring.reshape(-1, 3), axis=0)


def skin_colour(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return _patch_colour(image, width / 2, height * 0.53, max(1, min(height, width) // 40))


class SyntheticFaceDetector:
    """Largest region of the centre's colour; no face when the centre shows the background."""

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        image = _as_uint8(image_rgb)
        skin = skin_colour(image)
        if np.abs(skin - border_colour(image)).sum() < 2 * SKIN_TOLERANCE:
            return []
        mask = (np.abs(image.astype(np.int16) - skin.astype(np.int16)).sum(axis=-1) < SKIN_TOLERANCE).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        if count < 2:
            return []
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h, area = stats[largest]
        if area < 0.01 * mask.size:
            return []
        x0, y0, x1, y1 = float(x), float(y), float(x + w), float(y + h)
        keypoints = np.array(
            [[x0 + 0.3 * w, y0 + 0.4 * h], [x0 + 0.7 * w, y0 + 0.4 * h], [x0 + 0.5 * w, y0 + 0.6 * h],
             [x0 + 0.35 * w, y0 + 0.78 * h], [x0 + 0.65 * w, y0 + 0.78 * h]], dtype=np.float32)
        return [DetectedFace(np.array([x0, y0, x1, y1], dtype=np.float32), 0.99, keypoints)]


class SyntheticLandmarker:
    """Oval: the ellipse in the face box. Lips: the box of the drawn mouth (non-skin pixels in the
    lower middle of the face), or where the mouth usually is when none is visible."""

    def landmarks(self, image_rgb: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        image = _as_uint8(image_rgb)
        x0, y0, x1, y1 = (float(v) for v in face.bbox)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        angles = np.linspace(0, 2 * np.pi, 36, endpoint=False)
        oval = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)

        skin = skin_colour(image)
        height, width = image.shape[:2]
        sx0, sx1 = int(max(0, cx - 0.5 * rx)), int(min(width, cx + 0.5 * rx + 1))
        sy0, sy1 = int(max(0, cy + 0.2 * ry)), int(min(height, y1 - 0.05 * ry))
        region = image[sy0:sy1, sx0:sx1].astype(np.int16)
        other = np.abs(region - skin.astype(np.int16)).sum(axis=-1) > 2 * SKIN_TOLERANCE
        if other.sum() >= 2:
            ys, xs = np.nonzero(other)
            mx0, mx1, my0, my1 = sx0 + xs.min(), sx0 + xs.max() + 1, sy0 + ys.min(), sy0 + ys.max() + 1
        else:
            mx0, mx1, my0, my1 = cx - 0.3 * rx, cx + 0.3 * rx, cy + 0.45 * ry, cy + 0.55 * ry
        lip_angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        lips = np.stack([(mx0 + mx1) / 2 + (mx1 - mx0) / 2 * np.cos(lip_angles),
                         (my0 + my1) / 2 + (my1 - my0) / 2 * np.sin(lip_angles)], axis=1)
        return FaceLandmarks(oval=oval.astype(np.float64), lips=lips.astype(np.float64))


class SyntheticRecognizer:
    """(512,) embedding: a fixed random linear map of the skin, hair and background colours."""

    def __init__(self, seed: int = EMBEDDING_SEED):
        self.projection = np.random.default_rng(seed).standard_normal((9, EMBEDDING_DIM)).astype(np.float32)

    def attributes(self, image_rgb: np.ndarray, face_bbox: np.ndarray | None = None) -> np.ndarray:
        """(9,) skin, hair, background colours in [0, 1] read from the frame."""
        image = _as_uint8(image_rgb)
        skin, background = skin_colour(image), border_colour(image)
        hair = skin
        if face_bbox is not None:
            x0, y0, x1, _ = face_bbox
            # Just above the skin region's top: the hair cap (or the background on bald heads).
            above = _patch_colour(image, (x0 + x1) / 2, max(0.0, y0 - 2), 1)
            if np.abs(above - background).sum() > SKIN_TOLERANCE:
                hair = above
        return np.concatenate([skin, hair, background]).astype(np.float32) / 255.0

    def embed(self, image_rgb: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        bbox = None
        if keypoints is not None:
            # Keypoints sit at fixed fractions of the detector box; recover its top and centre.
            eyes_y = float(np.mean(keypoints[:2, 1]))
            mouth_y = float(np.mean(keypoints[3:, 1]))
            height = (mouth_y - eyes_y) / 0.38
            top = eyes_y - 0.4 * height
            center_x = float(keypoints[2, 0])
            bbox = (center_x, top, center_x, top)
        return (self.attributes(image_rgb, bbox) - 0.5) @ self.projection


def synthetic_face_analyzer() -> FaceAnalyzer:
    """A `FaceAnalyzer` for the procedural faces of `emocast_research.synthetic` (no model files)."""
    return FaceAnalyzer(SyntheticFaceDetector(), SyntheticRecognizer(), SyntheticLandmarker())
