"""Faces in evaluated videos: the InsightFace detector + ArcFace recogniser the project already
runs (``conditioning.face_models``), loaded without the landmarker, which evaluation does not need."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emocast_core.conditioning.face import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    FaceAnalyzer,
    MissingFaceModelsError,
)


def face_models_folder(folder: str | Path) -> Path:
    """The folder holding the antelopev2 files: ``folder`` or its ``antelopev2`` / ``models/antelopev2`` child."""
    folder = Path(folder)
    for candidate in (folder, folder / "antelopev2", folder / "models" / "antelopev2",
                      folder / "insightface" / "models" / "antelopev2"):
        if (candidate / DETECTOR_FILE).is_file() and (candidate / RECOGNIZER_FILE).is_file():
            return candidate
    raise MissingFaceModelsError(
        f"{folder}: no {DETECTOR_FILE} + {RECOGNIZER_FILE} here or in antelopev2/ below it; point --face-models "
        "at the InsightFace antelopev2 folder (never downloaded automatically)"
    )


def load_face_analyzer(folder: str | Path, providers: Sequence[str] | None = None) -> FaceAnalyzer:
    found = face_models_folder(folder)
    return FaceAnalyzer.from_files(found / DETECTOR_FILE, found / RECOGNIZER_FILE, providers=providers)


def sampled_indices(num_frames: int, count: int) -> np.ndarray:
    """Up to ``count`` frame indices spread evenly over the video."""
    if num_frames <= count:
        return np.arange(num_frames)
    return np.unique(np.linspace(0, num_frames - 1, count).round().astype(np.int64))


def face_boxes(analyzer: FaceAnalyzer, frames: np.ndarray) -> tuple[np.ndarray | None, list]:
    """Largest face of every frame: ``(T, 4)`` boxes (frames without a face take the box of the
    nearest frame with one, as the reference tracker interpolates) and the detections (None where
    no face). Returns ``(None, detections)`` when no frame has a face."""
    detections = [next(iter(analyzer.detect(frame)), None) for frame in frames]
    found = [index for index, face in enumerate(detections) if face is not None]
    if not found:
        return None, detections
    boxes = np.zeros((len(frames), 4), dtype=np.float64)
    for index in range(len(frames)):
        nearest = min(found, key=lambda f: abs(f - index))
        boxes[index] = detections[nearest].bbox
    return boxes, detections


def identity_similarity(analyzer: FaceAnalyzer, reference_rgb: np.ndarray, frames: np.ndarray,
                        detections: list) -> tuple[float | None, str | None]:
    """Mean ArcFace cosine similarity between the reference portrait's face and the faces of the
    given frames (``detections`` from ``face_boxes``). Returns (value, note)."""
    reference_faces = analyzer.detect(reference_rgb)
    if not reference_faces:
        return None, "no face found in the reference portrait"
    reference = analyzer.embedding(reference_rgb, reference_faces[0]).astype(np.float64)
    reference /= np.linalg.norm(reference) + 1e-12
    similarities = []
    for frame, face in zip(frames, detections):
        if face is None:
            continue
        embedding = analyzer.embedding(frame, face).astype(np.float64)
        similarities.append(float(embedding @ reference / (np.linalg.norm(embedding) + 1e-12)))
    if not similarities:
        return None, "no face found in the sampled frames"
    missed = len(frames) - len(similarities)
    return float(np.mean(similarities)), (f"no face in {missed} of {len(frames)} sampled frames" if missed else None)
