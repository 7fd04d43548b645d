"""The InsightFace ONNX models (and the optional MediaPipe landmarker), run with onnxruntime directly.

* ``ScrfdDetector``: SCRFD face detector (antelopev2 ``scrfd_10g_bnkps.onnx``), 640x640 letterbox,
  anchor-free distance decoding over strides 8/16/32, NMS - the numbers InsightFace's
  ``FaceAnalysis(det_size=(640, 640))`` produces.
* ``ArcFaceRecognizer``: 512-d identity embedding (antelopev2 ``glintr100.onnx``) of the face aligned
  on its five keypoints; the raw network output, i.e. InsightFace's ``face.embedding`` (not
  L2-normalised), which is what the official EmoCAST front-end feeds to its image projection.
* ``Landmark106``: InsightFace ``2d106det.onnx``, mapped to the face-oval and lip point sets the region
  masks need (see ``landmarks_from_106``).
* ``MediaPipeLandmarker``: MediaPipe face landmarker ``.task`` (the official landmark source), used
  only when the file is present and the ``mediapipe`` package is importable.

All image inputs are ``(H, W, 3)`` uint8 RGB. InsightFace is handed BGR and swaps to RGB inside its
blobs, so feeding RGB here gives the same network inputs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from .face_align import align_face, apply_affine, box_centred_transform
from .masks import FaceLandmarks

# SCRFD output layouts by number of outputs: (strides, anchors per location, has keypoints).
_SCRFD_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


@dataclass(frozen=True)
class DetectedFace:
    """One detector hit in source pixels.

    Attributes:
        bbox: ``(4,)`` float32 ``(x0, y0, x1, y1)``.
        score: detector confidence in [0, 1].
        keypoints: ``(5, 2)`` float32 (left eye, right eye, nose, left mouth, right mouth), or None
            for detectors without keypoints.
    """

    bbox: np.ndarray
    score: float
    keypoints: np.ndarray | None

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


def create_session(model_path: str | Path, providers: Sequence[str] | None = None):
    """An onnxruntime session; ``providers=None`` means the CPU provider (device choice is the caller's)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(
        str(model_path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
    )


def normalises_in_graph(model_path: str | Path, bn_data_counts: bool = False) -> bool | None:
    """Whether an InsightFace ONNX file scales its input itself (MXNet exports), InsightFace's rule.

    Those graphs start with ``_minus*``/``Sub`` and ``_mul*``/``Mul`` nodes (or, for landmark models,
    a ``bn_data`` node) and take raw 0..255 pixels; others want ``(x - 127.5) / 127.5`` (recogniser) or
    ``/ 128`` (landmarker). Returns None when the ``onnx`` package is not installed to read the graph.
    """
    try:
        import onnx
    except ImportError:
        return None
    nodes = onnx.load(str(model_path), load_external_data=False).graph.node[:8]
    has_sub = any(n.name.startswith(("Sub", "_minus")) for n in nodes)
    has_mul = any(n.name.startswith(("Mul", "_mul")) for n in nodes)
    has_bn_data = bn_data_counts and any(n.name == "bn_data" for n in nodes[:3])
    return (has_sub and has_mul) or has_bn_data


def _to_blob(image: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, H, W)`` float32 ``(x - mean) / std``."""
    blob = (image.astype(np.float32) - np.float32(mean)) / np.float32(std)
    return np.ascontiguousarray(blob.transpose(2, 0, 1)[None])


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio and pad bottom/right with black to ``input_size`` (w, h).

    Returns the padded ``(h, w, 3)`` uint8 canvas and the scale (canvas pixels per source pixel).
    """
    input_width, input_height = input_size
    image_ratio = image.shape[0] / image.shape[1]
    if image_ratio > input_height / input_width:
        new_height = input_height
        new_width = int(new_height / image_ratio)
    else:
        new_width = input_width
        new_height = int(new_width * image_ratio)
    scale = new_height / image.shape[0]
    canvas = np.zeros((input_height, input_width, 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = cv2.resize(image, (new_width, new_height))
    return canvas, scale


def anchor_centers(height: int, width: int, stride: int, num_anchors: int) -> np.ndarray:
    """``(height*width*num_anchors, 2)`` float32 ``(x, y)`` anchor points, row-major, anchors innermost."""
    ys, xs = np.mgrid[:height, :width]
    centers = np.stack([xs, ys], axis=-1).astype(np.float32).reshape(-1, 2) * stride
    return np.repeat(centers, num_anchors, axis=0)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS (InsightFace convention: inclusive pixel areas, ``+1``); returns kept indices."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        inter_w = np.maximum(0.0, np.minimum(x1[best], x1[rest]) - np.maximum(x0[best], x0[rest]) + 1)
        inter_h = np.maximum(0.0, np.minimum(y1[best], y1[rest]) - np.maximum(y0[best], y0[rest]) + 1)
        inter = inter_w * inter_h
        overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return keep


class ScrfdDetector:
    """SCRFD face detector on an onnxruntime session.

    Args:
        session: onnxruntime session of e.g. ``scrfd_10g_bnkps.onnx`` (input ``(1, 3, H, W)``; outputs
            scores ``(N, 1)`` x strides, then boxes ``(N, 4)``, then keypoints ``(N, 10)``).
        input_size: letterbox canvas ``(w, h)``; InsightFace's ``det_size`` (640, 640). A model with a
            fixed input shape uses that shape instead.
        score_threshold: minimum score (InsightFace ``det_thresh`` 0.5).
        nms_threshold: IoU above which a lower-scoring box is dropped (InsightFace 0.4).
    """

    def __init__(self, session, input_size=(640, 640), score_threshold: float = 0.5, nms_threshold: float = 0.4):
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        fixed_hw = model_input.shape[2:4]
        if all(isinstance(v, int) and v > 0 for v in fixed_hw):
            input_size = (fixed_hw[1], fixed_hw[0])
        self.input_size = tuple(int(v) for v in input_size)
        self.output_names = [o.name for o in session.get_outputs()]
        if len(self.output_names) not in _SCRFD_LAYOUTS:
            raise ValueError(
                f"not a SCRFD detector: expected 6, 9, 10 or 15 outputs, got {len(self.output_names)}"
            )
        self.strides, self.num_anchors, self.has_keypoints = _SCRFD_LAYOUTS[len(self.output_names)]
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.input_mean, self.input_std = 127.5, 128.0

    @classmethod
    def from_file(cls, path: str | Path, providers: Sequence[str] | None = None, **kwargs) -> "ScrfdDetector":
        return cls(create_session(path, providers), **kwargs)

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Faces in an ``(H, W, 3)`` uint8 RGB image, highest score first, in source pixels."""
        canvas, scale = letterbox(image, self.input_size)
        outputs = self.session.run(self.output_names, {self.input_name: _to_blob(canvas, self.input_mean, self.input_std)})
        # Models exported with a batch axis give (1, N, k) outputs.
        outputs = [o[0] if o.ndim == 3 else o for o in outputs]
        num_levels = len(self.strides)
        input_width, input_height = self.input_size

        all_scores, all_boxes, all_keypoints = [], [], []
        for level, stride in enumerate(self.strides):
            scores = outputs[level].reshape(-1)
            distances = outputs[level + num_levels].reshape(-1, 4) * stride
            centers = anchor_centers(input_height // stride, input_width // stride, stride, self.num_anchors)
            keep = np.where(scores >= self.score_threshold)[0]
            boxes = np.concatenate([centers - distances[:, :2], centers + distances[:, 2:]], axis=1)
            all_scores.append(scores[keep])
            all_boxes.append(boxes[keep])
            if self.has_keypoints:
                offsets = outputs[level + 2 * num_levels].reshape(-1, 5, 2) * stride
                all_keypoints.append((centers[:, None, :] + offsets)[keep])

        scores = np.concatenate(all_scores)
        if scores.size == 0:
            return []
        boxes = np.concatenate(all_boxes) / scale
        keypoints = np.concatenate(all_keypoints) / scale if self.has_keypoints else None
        keep = non_max_suppression(boxes, scores, self.nms_threshold)
        return [
            DetectedFace(
                bbox=boxes[i].astype(np.float32),
                score=float(scores[i]),
                keypoints=None if keypoints is None else keypoints[i].astype(np.float32),
            )
            for i in keep
        ]


class ArcFaceRecognizer:
    """ArcFace identity embedding on an onnxruntime session (input ``(1, 3, 112, 112)`` -> ``(1, 512)``).

    ``input_mean``/``input_std`` default to 127.5/127.5, InsightFace's values for PyTorch-exported
    recognisers such as ``glintr100`` and ``w600k_r50``; ``from_file`` switches to 0/1 for graphs that
    normalise internally (see ``normalises_in_graph``).
    """

    def __init__(self, session, input_mean: float = 127.5, input_std: float = 127.5):
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[2]
        self.input_size = side if isinstance(side, int) and side > 0 else 112
        self.output_name = session.get_outputs()[0].name
        self.input_mean, self.input_std = input_mean, input_std

    @classmethod
    def from_file(cls, path: str | Path, providers: Sequence[str] | None = None, **kwargs) -> "ArcFaceRecognizer":
        if "input_mean" not in kwargs and normalises_in_graph(path):
            kwargs.update(input_mean=0.0, input_std=1.0)
        return cls(create_session(path, providers), **kwargs)

    def embed(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """``(512,)`` float32 raw (un-normalised) embedding of the face with these five keypoints."""
        aligned = align_face(image, keypoints, self.input_size)
        blob = _to_blob(aligned, self.input_mean, self.input_std)
        return self.session.run([self.output_name], {self.input_name: blob})[0].reshape(-1).astype(np.float32)


# 2d106det point groups (InsightFace 106-point markup): 0-32 jaw contour (0 = chin, one side 1-16,
# the other 17-32, ending near the ears), 33-42 / 87-96 eyes, 43-51 / 97-105 eyebrows, 52-71 lips
# (outer and inner contour, 20 points like MediaPipe's lip set), 72-86 nose.
LANDMARK106_JAW = tuple(range(0, 33))
LANDMARK106_BROWS = tuple(range(43, 52)) + tuple(range(97, 106))
LANDMARK106_LIPS = tuple(range(52, 72))
LANDMARK106_CHIN = 0
# The 106-point set stops at the eyebrows while the MediaPipe face oval reaches the upper
# forehead. The forehead top is placed this fraction of the brow-to-chin height above the brows
# (brow-to-chin is about two thirds of the hairline-to-chin height; MediaPipe's top point sits a
# little below the hairline).
FOREHEAD_FRACTION = 0.4


def landmarks_from_106(points: np.ndarray) -> FaceLandmarks:
    """Face-oval and lip point sets from ``(106, 2)`` InsightFace landmarks.

    Oval = jaw contour + eyebrows + two forehead points extrapolated above the brows along the
    chin-to-brow direction (so tilted heads stay consistent); lips = points 52-71.
    """
    points = np.asarray(points, dtype=np.float64)
    jaw = points[list(LANDMARK106_JAW)]
    brows = points[list(LANDMARK106_BROWS)]
    chin = points[LANDMARK106_CHIN]
    brow_center = brows.mean(axis=0)
    up = brow_center - chin
    forehead = brows[[brows[:, 0].argmin(), brows[:, 0].argmax()]] + FOREHEAD_FRACTION * up
    oval = np.concatenate([jaw, brows, forehead, (brow_center + FOREHEAD_FRACTION * up)[None]], axis=0)
    return FaceLandmarks(oval=oval, lips=points[list(LANDMARK106_LIPS)].copy())


class Landmark106:
    """InsightFace ``2d106det`` landmarker (input ``(1, 3, 192, 192)`` -> ``(1, 212)``).

    The face box is scaled so 1.5x its larger side fills the input; the network predicts points in
    [-1, 1] of that crop. ``input_mean``/``input_std`` default to 0/1, InsightFace's values for this
    MXNet-converted model (it normalises inside the graph); ``from_file`` switches to 127.5/128 for
    graphs that do not (see ``normalises_in_graph``).
    """

    def __init__(self, session, input_mean: float = 0.0, input_std: float = 1.0, num_points: int = 106):
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[2]
        self.input_size = side if isinstance(side, int) and side > 0 else 192
        self.output_name = session.get_outputs()[0].name
        self.input_mean, self.input_std = input_mean, input_std
        self.num_points = num_points

    @classmethod
    def from_file(cls, path: str | Path, providers: Sequence[str] | None = None, **kwargs) -> "Landmark106":
        if "input_mean" not in kwargs and normalises_in_graph(path, bn_data_counts=True) is False:
            kwargs.update(input_mean=127.5, input_std=128.0)
        return cls(create_session(path, providers), **kwargs)

    def points(self, image: np.ndarray, face: DetectedFace) -> np.ndarray:
        """``(106, 2)`` float64 landmark pixels in the source image."""
        x0, y0, x1, y1 = (float(v) for v in face.bbox)
        scale = self.input_size / (max(x1 - x0, y1 - y0) * 1.5)
        matrix = box_centred_transform((x0 + x1) / 2.0, (y0 + y1) / 2.0, self.input_size, scale)
        crop = cv2.warpAffine(image, matrix, (self.input_size, self.input_size), borderValue=0.0)
        blob = _to_blob(crop, self.input_mean, self.input_std)
        prediction = self.session.run([self.output_name], {self.input_name: blob})[0][0]
        prediction = prediction.reshape(-1, 3 if prediction.size >= 3000 else 2)[-self.num_points :, :2]
        crop_points = (prediction.astype(np.float64) + 1.0) * (self.input_size // 2)
        return apply_affine(crop_points, cv2.invertAffineTransform(matrix))

    def landmarks(self, image: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        return landmarks_from_106(self.points(image, face))


class MediaPipeLandmarker:
    """MediaPipe face landmarker (478 points), the landmark source of the official code. Optional.

    Needs the ``mediapipe`` package and a ``face_landmarker*.task`` file; check ``is_available()``
    first. Of several faces, the one whose landmarks are centred closest to the detector box is used.
    """

    def __init__(self, task_path: str | Path, max_faces: int = 5):
        import mediapipe  # optional dependency, imported only when this landmarker is chosen

        self._mediapipe = mediapipe
        vision = mediapipe.tasks.vision
        options = vision.FaceLandmarkerOptions(
            base_options=mediapipe.tasks.BaseOptions(model_asset_path=str(task_path)),
            running_mode=vision.RunningMode.IMAGE,
            num_faces=max_faces,
        )
        self._landmarker = vision.FaceLandmarker.create_from_options(options)

    @staticmethod
    def is_available() -> bool:
        try:
            import mediapipe  # noqa: F401
        except ImportError:
            return False
        return True

    def landmarks(self, image: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        height, width = image.shape[:2]
        mp_image = self._mediapipe.Image(image_format=self._mediapipe.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        result = self._landmarker.detect(mp_image)
        if not result.face_landmarks:
            raise RuntimeError("MediaPipe found no face landmarks in the chosen face")
        candidates = [np.array([[p.x * width, p.y * height] for p in face_points]) for face_points in result.face_landmarks]
        box_center = np.array([(face.bbox[0] + face.bbox[2]) / 2.0, (face.bbox[1] + face.bbox[3]) / 2.0])
        best = min(candidates, key=lambda pts: float(np.linalg.norm(pts.mean(axis=0) - box_center)))
        return FaceLandmarks.from_mediapipe(best)

    def close(self) -> None:
        self._landmarker.close()


def landmarks_from_detection(face: DetectedFace) -> FaceLandmarks:
    """Coarse oval and lip sets from the detector alone (used only when no landmark model is loaded).

    Oval = the detector box (SCRFD boxes span roughly forehead to chin); lips = the two mouth-corner
    keypoints widened to a mouth-sized box (corner distance x 0.3 above and below).
    """
    x0, y0, x1, y1 = (float(v) for v in face.bbox)
    oval = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    if face.keypoints is not None:
        left, right = face.keypoints[3].astype(np.float64), face.keypoints[4].astype(np.float64)
    else:
        height, width = y1 - y0, x1 - x0
        left = np.array([x0 + 0.33 * width, y0 + 0.78 * height])
        right = np.array([x0 + 0.67 * width, y0 + 0.78 * height])
    half_height = 0.3 * float(np.linalg.norm(right - left))
    lips = np.array(
        [left, right, (left + right) / 2 + [0, -half_height], (left + right) / 2 + [0, half_height]], dtype=np.float64
    )
    return FaceLandmarks(oval=oval, lips=lips)
