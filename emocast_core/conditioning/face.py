"""Reference-face conditioning: everything the EmoCAST pipeline needs from the reference portrait.

``prepare_reference(image, analyzer)`` detects the face, cuts a face-centred square at the model
size ``S``, computes the ArcFace identity embedding and the region masks, and returns a
``PreparedReference``. ``prepare_reference_from_landmarks`` does the same for an image that is
already framed, with landmarks and embedding given (tests, training-data builders).

Model files (antelopev2 pack, e.g. ``ComfyUI/models/insightface/models/antelopev2/``):
``scrfd_10g_bnkps.onnx`` (detector), ``glintr100.onnx`` (recogniser), ``2d106det.onnx`` (landmarks),
optionally a MediaPipe ``face_landmarker*.task`` used when ``mediapipe`` is installed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .crop import DEFAULT_CROP_SCALE, CropTransform, center_crop_transform, crop_image, face_crop_transform
from .face_models import (
    ArcFaceRecognizer,
    DetectedFace,
    Landmark106,
    MediaPipeLandmarker,
    ScrfdDetector,
    landmarks_from_detection,
)
from .image_input import to_rgb_float, to_uint8
from .masks import FaceLandmarks, mask_level_sizes, pil_bilinear_resize, region_masks

EMBEDDING_DIM = 512
DETECTOR_FILE = "scrfd_10g_bnkps.onnx"
RECOGNIZER_FILE = "glintr100.onnx"
LANDMARKER_FILE = "2d106det.onnx"
MEDIAPIPE_TASK_FILES = ("face_landmarker_v2_with_blendshapes.task", "face_landmarker.task")
MODEL_FOLDER_HINT = "ComfyUI/models/insightface/models/antelopev2/"


class NoFaceError(ValueError):
    """No face was found in the reference image."""


class MissingFaceModelsError(FileNotFoundError):
    """One or more face model files are missing; the message names all of them."""


@dataclass
class PreparedReference:
    """Conditioning tensors of one reference portrait for a model of size ``S``.

    Attributes:
        pixel_values: ``(1, 3, S, S)`` float32 in [-1, 1], the reference image for the VAE/ReferenceNet.
        face_embedding: ``(1, 512)`` float32 raw ArcFace embedding (zeros when no face was found).
        face_region: ``(1, 3, S, S)`` float32 in [0, 1] (binary unless the image was resized), the
            face-locator condition.
        full_mask, face_mask, lip_mask: 4 tensors each, level i ``(1, (S/8/2**i)**2)`` float32 in [0, 1]
            (level 0 = latent resolution S/8 ... level 3 = S/64): pose/background, face without lips,
            lips.
        crop: transform of the face crop inside ``source_image``; None when the image was used as is.
        source_image: ``(H, W, 3)`` float32 [0, 1], the original image (for ``paste_back``).
        face_found: False when the embedding and masks are the no-face defaults.
        face_bbox: ``(4,)`` detector box in source pixels, None when not detected.
        landmarks: the oval/lip points the masks were made from, in ``S x S`` model-input pixels.
    """

    pixel_values: torch.Tensor
    face_embedding: torch.Tensor
    face_region: torch.Tensor
    full_mask: list[torch.Tensor]
    face_mask: list[torch.Tensor]
    lip_mask: list[torch.Tensor]
    crop: CropTransform | None
    source_image: np.ndarray
    face_found: bool = True
    face_bbox: np.ndarray | None = None
    landmarks: FaceLandmarks | None = field(default=None, repr=False)


class FaceAnalyzer:
    """Face detector + identity recogniser + (optional) landmarker.

    Args:
        detector: a ``ScrfdDetector`` (anything with ``detect(rgb_uint8) -> list[DetectedFace]``).
        recognizer: an ``ArcFaceRecognizer`` (``embed(rgb_uint8, keypoints) -> (512,)``).
        landmarker: ``Landmark106`` or ``MediaPipeLandmarker`` (``landmarks(rgb_uint8, face)``); None
            falls back to coarse boxes from the detector (a warning says so).
    """

    def __init__(self, detector, recognizer, landmarker=None):
        self.detector = detector
        self.recognizer = recognizer
        self.landmarker = landmarker

    @classmethod
    def from_files(
        cls,
        detector: str | Path,
        recognizer: str | Path,
        landmarker: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> "FaceAnalyzer":
        """Load from explicit paths. ``landmarker`` may be a ``2d106det.onnx`` or a MediaPipe ``.task``.

        ``providers``: onnxruntime execution providers (default CPU).
        """
        paths = {"face detector": detector, "face recogniser": recognizer}
        if landmarker is not None:
            paths["face landmarker"] = landmarker
        missing = [f"{role}: {path}" for role, path in paths.items() if not Path(path).is_file()]
        if missing:
            raise MissingFaceModelsError(
                "Missing face model files - " + "; ".join(missing) + f". They belong in {MODEL_FOLDER_HINT} "
                "(InsightFace antelopev2 pack); they are never downloaded automatically."
            )
        landmark_model = None
        if landmarker is not None:
            if str(landmarker).endswith(".task"):
                if not MediaPipeLandmarker.is_available():
                    raise ImportError(f"{landmarker} is a MediaPipe model but the 'mediapipe' package is not installed")
                landmark_model = MediaPipeLandmarker(landmarker)
            else:
                landmark_model = Landmark106.from_file(landmarker, providers)
        return cls(
            ScrfdDetector.from_file(detector, providers),
            ArcFaceRecognizer.from_file(recognizer, providers),
            landmark_model,
        )

    @classmethod
    def from_folder(cls, folder: str | Path, providers: Sequence[str] | None = None) -> "FaceAnalyzer":
        """Load the antelopev2 files from ``folder`` (or its ``antelopev2`` / ``models/antelopev2`` sub-folder).

        Landmarks: a MediaPipe ``face_landmarker*.task`` in the folder when ``mediapipe`` is importable
        (the official source), else ``2d106det.onnx``.
        """
        folder = Path(folder)
        for candidate in (folder, folder / "antelopev2", folder / "models" / "antelopev2"):
            if (candidate / DETECTOR_FILE).is_file() or (candidate / RECOGNIZER_FILE).is_file():
                folder = candidate
                break
        landmarker = None
        if MediaPipeLandmarker.is_available():
            landmarker = next((folder / n for n in MEDIAPIPE_TASK_FILES if (folder / n).is_file()), None)
        if landmarker is None:
            landmarker = folder / LANDMARKER_FILE
        required = [folder / DETECTOR_FILE, folder / RECOGNIZER_FILE, landmarker]
        missing = [path.name for path in required if not path.is_file()]
        if missing:
            raise MissingFaceModelsError(
                f"Missing face model files in {folder}: {', '.join(missing)}. Put the InsightFace antelopev2 "
                f"files ({DETECTOR_FILE}, {RECOGNIZER_FILE}, {LANDMARKER_FILE}) in {MODEL_FOLDER_HINT}; "
                "they are never downloaded automatically."
            )
        return cls.from_files(required[0], required[1], required[2], providers)

    def detect(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """Faces of an ``(H, W, 3)`` uint8 RGB image, largest box first."""
        return sorted(self.detector.detect(image_rgb), key=lambda face: face.area, reverse=True)

    def embedding(self, image_rgb: np.ndarray, face: DetectedFace) -> np.ndarray:
        """``(512,)`` float32 raw ArcFace embedding."""
        if face.keypoints is None:
            raise ValueError("the detector gives no keypoints, which ArcFace alignment needs")
        return self.recognizer.embed(image_rgb, face.keypoints)

    def landmarks(self, image_rgb: np.ndarray, face: DetectedFace) -> FaceLandmarks:
        """Oval and lip points of ``face`` in source pixels."""
        if self.landmarker is None:
            warnings.warn(
                "no landmark model loaded: region masks use coarse boxes from the face detector",
                stacklevel=3,
            )
            return landmarks_from_detection(face)
        return self.landmarker.landmarks(image_rgb, face)


def default_landmarks(size: int) -> FaceLandmarks:
    """Oval/lip points of a generic centred portrait in an ``size x size`` image (no-face fallback)."""
    angles = np.linspace(0.0, 2.0 * np.pi, 36, endpoint=False)
    center_x, center_y, radius_x, radius_y = 0.5 * size, 0.47 * size, 0.21 * size, 0.28 * size
    oval = np.stack([center_x + radius_x * np.cos(angles), center_y + radius_y * np.sin(angles)], axis=1)
    lip_y, lip_half_w, lip_half_h = center_y + 0.6 * radius_y, 0.35 * radius_x, 0.1 * radius_y
    lips = np.array(
        [[center_x - lip_half_w, lip_y], [center_x + lip_half_w, lip_y],
         [center_x, lip_y - lip_half_h], [center_x, lip_y + lip_half_h]]
    )
    return FaceLandmarks(oval=oval, lips=lips)


def _build(
    source_image: np.ndarray,
    model_input: np.ndarray,
    landmark_image_size: tuple[int, int],
    landmarks: FaceLandmarks,
    embedding: np.ndarray | None,
    size: int,
    face_expand_ratio: float,
    crop: CropTransform | None,
    face_bbox: np.ndarray | None,
    face_found: bool,
) -> PreparedReference:
    """Assemble the tensors; ``landmarks`` are in pixels of the ``landmark_image_size`` image."""
    height, width = landmark_image_size
    masks = region_masks(landmarks, height, width, size=size, face_expand_ratio=face_expand_ratio)
    pixel_values = torch.from_numpy(model_input.astype(np.float32) / 255.0).permute(2, 0, 1)[None] * 2.0 - 1.0
    face_region = torch.from_numpy(masks.face_region)[None, None].repeat(1, 3, 1, 1)
    if embedding is None:
        embedding = np.zeros(EMBEDDING_DIM, dtype=np.float32)
    embedding = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
    if embedding.shape[1] != EMBEDDING_DIM:
        raise ValueError(f"face embedding must have {EMBEDDING_DIM} values, got {embedding.shape[1]}")
    model_scale = np.array([size / width, size / height])
    model_landmarks = FaceLandmarks(oval=landmarks.oval * model_scale, lips=landmarks.lips * model_scale)
    return PreparedReference(
        pixel_values=pixel_values.contiguous(),
        face_embedding=torch.from_numpy(embedding.copy()),
        face_region=face_region.contiguous(),
        full_mask=[torch.from_numpy(m) for m in masks.full],
        face_mask=[torch.from_numpy(m) for m in masks.face],
        lip_mask=[torch.from_numpy(m) for m in masks.lip],
        crop=crop,
        source_image=source_image,
        face_found=face_found,
        face_bbox=face_bbox,
        landmarks=model_landmarks,
    )


def prepare_reference_from_landmarks(
    image: Any,
    landmarks: FaceLandmarks | np.ndarray,
    face_embedding: np.ndarray | torch.Tensor | None,
    *,
    size: int = 512,
    face_expand_ratio: float = 1.2,
) -> PreparedReference:
    """Conditioning of an already framed image with known landmarks and embedding (no models run).

    This is the official front-end exactly: the whole image is resized to ``S x S`` (Pillow bilinear)
    and the rectangles are drawn at the image's own resolution.

    Args:
        image: the portrait (numpy / PIL / torch IMAGE; see ``to_rgb_float``).
        landmarks: ``FaceLandmarks`` or a ``(478, 2)`` MediaPipe array, in pixels of ``image``.
        face_embedding: ``(512,)`` or ``(1, 512)``; None gives zeros (the official no-face value).
        size: model size ``S`` (multiple of 64).
        face_expand_ratio: face rectangle growth (1.2 at official inference).
    """
    mask_level_sizes(size)  # validates the size early
    source_image = to_rgb_float(image)
    if not isinstance(landmarks, FaceLandmarks):
        landmarks = FaceLandmarks.from_mediapipe(np.asarray(landmarks))
    if isinstance(face_embedding, torch.Tensor):
        face_embedding = face_embedding.detach().cpu().numpy()
    height, width = source_image.shape[:2]
    model_input = pil_bilinear_resize(to_uint8(source_image), size, size)
    return _build(
        source_image, model_input, (height, width), landmarks, face_embedding, size, face_expand_ratio,
        crop=None, face_bbox=None, face_found=face_embedding is not None,
    )


def prepare_reference(
    image: Any,
    analyzer: FaceAnalyzer,
    *,
    size: int = 512,
    face_index: int | None = None,
    face_expand_ratio: float = 1.2,
    on_no_face: str = "error",
    crop_to_face: bool = True,
    crop_scale: float = DEFAULT_CROP_SCALE,
) -> PreparedReference:
    """Detect, crop and condition a reference portrait of any size.

    Args:
        image: RGB/RGBA/grayscale numpy (uint8 or float 0..1), PIL image, or torch IMAGE ``[B, H, W, C]``
            (first image used).
        analyzer: the loaded face models.
        size: model size ``S`` (multiple of 64, default 512).
        face_index: which face, counted from the largest detected box (0 = largest, the default).
        face_expand_ratio: face rectangle growth for the face-locator/masks (official 1.2).
        on_no_face: ``"error"`` raises ``NoFaceError``; ``"center"`` warns and uses a centre crop, a zero
            embedding (the official no-face value) and masks of a generic centred face.
        crop_to_face: True cuts a square of ``crop_scale x`` the face box around the face (transform
            kept in ``.crop`` for ``paste_back``); False resizes the whole image to ``S x S`` like the
            official script (non-square images are stretched) and leaves ``.crop`` None.
        crop_scale: crop side as a multiple of the larger side of the detector box.
    """
    if on_no_face not in ("error", "center"):
        raise ValueError(f'on_no_face must be "error" or "center", got {on_no_face!r}')
    mask_level_sizes(size)
    source_image = to_rgb_float(image)
    source_uint8 = to_uint8(source_image)
    height, width = source_image.shape[:2]

    if not crop_to_face and height != width:
        warnings.warn(
            f"crop_to_face=False stretches the {width}x{height} image to {size}x{size}; "
            "use crop_to_face=True to keep proportions",
            stacklevel=2,
        )
    faces = analyzer.detect(source_uint8)
    if not faces:
        if on_no_face == "error":
            raise NoFaceError(
                "No face found in the reference image. Use a portrait with a clearly visible face, or "
                'set on_no_face="center" to continue with a centre crop and no identity embedding.'
            )
        warnings.warn(
            "No face found in the reference image: using a centre crop, a zero identity embedding and "
            "masks of a generic centred face.",
            stacklevel=2,
        )
        if crop_to_face:
            transform = center_crop_transform((height, width), size)
            return _build(
                source_image, crop_image(source_image, transform), (size, size), default_landmarks(size),
                None, size, face_expand_ratio, crop=transform, face_bbox=None, face_found=False,
            )
        model_input = pil_bilinear_resize(source_uint8, size, size)
        return _build(
            source_image, model_input, (size, size), default_landmarks(size), None, size, face_expand_ratio,
            crop=None, face_bbox=None, face_found=False,
        )

    chosen = 0 if face_index is None else face_index
    if not -len(faces) <= chosen < len(faces):
        raise IndexError(f"face_index {face_index} is out of range: {len(faces)} face(s) found")
    face = faces[chosen]
    embedding = analyzer.embedding(source_uint8, face)
    landmarks = analyzer.landmarks(source_uint8, face)

    if not crop_to_face:
        model_input = pil_bilinear_resize(source_uint8, size, size)
        return _build(
            source_image, model_input, (height, width), landmarks, embedding, size, face_expand_ratio,
            crop=None, face_bbox=face.bbox, face_found=True,
        )
    transform = face_crop_transform(face.bbox, (height, width), size, crop_scale)
    crop_landmarks = FaceLandmarks(oval=transform.to_crop(landmarks.oval), lips=transform.to_crop(landmarks.lips))
    return _build(
        source_image, crop_image(source_image, transform), (size, size), crop_landmarks, embedding, size,
        face_expand_ratio, crop=transform, face_bbox=face.bbox, face_found=True,
    )
