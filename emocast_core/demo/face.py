"""Face finding for the demo model: drawn faces and real photographs, with no model files to fetch.

The demo's colour-based analysis (`demo.drawn_faces`) reads the skin colour at the image centre,
which is right for the procedurally drawn faces and wrong for everything else: in a photograph it
"finds" whatever lies in the middle (a coffee cup). So pictures are sorted first:

* a drawing (flat colours: most neighbouring pixels are identical) goes to the drawn-face analysis,
  exactly as the demo model was trained;
* anything else is searched with the frontal-face LBP cascade that ships inside scikit-image's wheel
  (`skimage.data.lbp_frontal_face_cascade_filename()`); a picture without a face gives no face.

Landmarks of a photographed face are placed at the usual fractions of the cascade's box, and the
identity embedding stays the synthetic one (the demo model knows no other identities).
"""
from __future__ import annotations

import numpy as np

from ..conditioning.face import FaceAnalyzer
from ..conditioning.face_models import DetectedFace, landmarks_from_detection
from ..conditioning.masks import FaceLandmarks
from .drawn_faces import SyntheticFaceDetector, SyntheticLandmarker, SyntheticRecognizer

# Share of horizontally neighbouring pixel pairs that are identical. Drawn faces: ~0.97; photographs,
# even flat studio shots, stay far below (astronaut 0.11, camera 0.24): sensor noise and JPEG.
DRAWING_FLAT_SHARE = 0.6
# The cascade's box spans brows to chin; these put the eyes, nose and mouth corners where the
# synthetic recogniser and the coarse landmarks expect them (fractions of the box width / height).
BOX_KEYPOINTS = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.78], [0.65, 0.78]], dtype=np.float32)
# Smallest face searched for, as a fraction of the shorter image side.
MIN_FACE_FRACTION = 0.1


class MissingCascadeError(ImportError):
    """scikit-image, which carries the face cascade, is not installed."""


def is_drawing(image_rgb: np.ndarray) -> bool:
    """Whether an ``(H, W, 3)`` uint8 image is made of flat colours, like the synthetic faces."""
    image = np.asarray(image_rgb)[..., :3].astype(np.int16)
    if image.shape[1] < 2:
        return False
    same = (np.abs(image[:, 1:] - image[:, :-1]).sum(axis=-1) == 0).mean()
    return bool(same >= DRAWING_FLAT_SHARE)


class CascadeFaceDetector:
    """Frontal faces in photographs with scikit-image's bundled LBP cascade; largest first."""

    def __init__(self, scale_factor: float = 1.2, min_face_fraction: float = MIN_FACE_FRACTION):
        # scikit-image is loaded on the first photograph only: drawn faces never need it.
        try:
            from skimage.data import lbp_frontal_face_cascade_filename
            from skimage.feature import Cascade
        except ImportError:
            raise MissingCascadeError(
                "finding faces in photographs with the demo model needs scikit-image "
                "(pip install scikit-image)"
            ) from None
        self.cascade = Cascade(lbp_frontal_face_cascade_filename())
        self.scale_factor = scale_factor
        self.min_face_fraction = min_face_fraction

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        image = np.asarray(image_rgb)[..., :3]
        gray = (image.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)) / 255.0
        shorter = min(gray.shape)
        smallest = max(24, int(shorter * self.min_face_fraction))
        if shorter < smallest:
            return []
        hits = self.cascade.detect_multi_scale(
            img=gray, scale_factor=self.scale_factor, step_ratio=1,
            min_size=(smallest, smallest), max_size=(shorter, shorter),
        )
        faces = []
        for hit in hits:
            x0, y0, width, height = float(hit["c"]), float(hit["r"]), float(hit["width"]), float(hit["height"])
            keypoints = np.array([x0, y0], dtype=np.float32) + BOX_KEYPOINTS * np.array([width, height], dtype=np.float32)
            faces.append(DetectedFace(np.array([x0, y0, x0 + width, y0 + height], dtype=np.float32), 1.0, keypoints))
        return sorted(faces, key=lambda face: face.area, reverse=True)


class DemoFaceDetector:
    """Drawings to the synthetic detector, photographs to the cascade."""

    def __init__(self):
        self.drawn = SyntheticFaceDetector()
        self._photographed: CascadeFaceDetector | None = None  # made on the first photograph

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        if is_drawing(image_rgb):
            return self.drawn.detect(image_rgb)
        if self._photographed is None:
            self._photographed = CascadeFaceDetector()
        return self._photographed.detect(image_rgb)


class DemoLandmarker:
    """The synthetic landmarker on drawings; the detector box's usual proportions on photographs."""

    def __init__(self):
        self.drawn = SyntheticLandmarker()

    def landmarks(self, image_rgb: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        if is_drawing(image_rgb):
            return self.drawn.landmarks(image_rgb, face)
        return landmarks_from_detection(face)


def demo_face_analyzer() -> FaceAnalyzer:
    """The `FaceAnalyzer` of the demo model (no model files)."""
    return FaceAnalyzer(DemoFaceDetector(), SyntheticRecognizer(), DemoLandmarker())
