"""ONNX face models: SCRFD decoding/NMS/letterbox, ArcFace alignment + embedding, 106-point landmarks."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from emocast_core.conditioning.face_align import ARCFACE_TEMPLATE_112, apply_affine, arcface_alignment, similarity_transform
from emocast_core.conditioning.face_models import (
    LANDMARK106_LIPS,
    ArcFaceRecognizer,
    DetectedFace,
    Landmark106,
    ScrfdDetector,
    anchor_centers,
    landmarks_from_106,
    landmarks_from_detection,
    letterbox,
    non_max_suppression,
)
from face_fixtures import arcface_reference, canonical_106_points, save_arcface, save_landmark106, save_scrfd

FACE_A = {
    "bbox": (300.0, 120.0, 420.0, 270.0),
    "keypoints": ((330, 180), (390, 180), (360, 210), (335, 240), (385, 240)),
    "score": 0.9,
}
FACE_B = {
    "bbox": (60.0, 300.0, 120.0, 380.0),
    "keypoints": ((75, 330), (105, 330), (90, 345), (78, 362), (102, 362)),
    "score": 0.75,
}


def test_letterbox_keeps_aspect_and_pads_bottom_right():
    image = np.full((300, 500, 3), 200, dtype=np.uint8)
    canvas, scale = letterbox(image, (640, 640))
    assert canvas.shape == (640, 640, 3)
    assert scale == pytest.approx(384 / 300)  # width 500 -> 640, height int(640 * 0.6) = 384
    assert canvas[383, 639].tolist() == [200] * 3 and canvas[384, 0].tolist() == [0] * 3

    tall = np.zeros((800, 400, 3), dtype=np.uint8)
    canvas, scale = letterbox(tall, (640, 640))
    assert scale == pytest.approx(640 / 800)


def test_anchor_centers_layout():
    centers = anchor_centers(2, 3, 16, 2)
    # row-major locations, two anchors per location, (x, y) order, no half-stride offset
    assert centers.shape == (12, 2)
    np.testing.assert_array_equal(centers[:6], [[0, 0], [0, 0], [16, 0], [16, 0], [32, 0], [32, 0]])
    np.testing.assert_array_equal(centers[6], [0, 16])


def test_nms_keeps_best_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.8, 0.9, 0.7], dtype=np.float32)
    assert non_max_suppression(boxes, scores, 0.4) == [1, 2]


@pytest.mark.parametrize("image_hw", [(480, 640), (640, 480), (512, 512)])
def test_scrfd_decodes_letterboxed_faces_back_to_source_pixels(tmp_path, image_hw):
    path = save_scrfd(tmp_path / "scrfd_10g_bnkps.onnx", [FACE_A, FACE_B], image_hw)
    detector = ScrfdDetector.from_file(path)
    assert detector.strides == (8, 16, 32) and detector.num_anchors == 2 and detector.has_keypoints
    faces = detector.detect(np.zeros((*image_hw, 3), dtype=np.uint8))
    # the shifted duplicates at stride 8 are suppressed by NMS; scores sorted
    assert len(faces) == 2
    assert [f.score for f in faces] == pytest.approx([0.9, 0.75])
    for face, truth in zip(faces, [FACE_A, FACE_B]):
        np.testing.assert_allclose(face.bbox, truth["bbox"], atol=1e-3)
        np.testing.assert_allclose(face.keypoints, truth["keypoints"], atol=1e-3)


def test_scrfd_threshold_and_empty(tmp_path):
    path = save_scrfd(tmp_path / "d.onnx", [dict(FACE_A, score=0.4)], (480, 640))
    assert ScrfdDetector.from_file(path).detect(np.zeros((480, 640, 3), np.uint8)) == []
    assert len(ScrfdDetector.from_file(path, score_threshold=0.3).detect(np.zeros((480, 640, 3), np.uint8))) == 1


def _skimage_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Reference estimate from scikit-image (what InsightFace's alignment calls)."""
    transform_module = pytest.importorskip("skimage.transform")
    cls = transform_module.SimilarityTransform
    if hasattr(cls, "from_estimate"):  # scikit-image >= 0.26
        return cls.from_estimate(source, target).params[:2]
    tform = cls()
    tform.estimate(source, target)
    return tform.params[:2]


def test_similarity_transform_matches_skimage():
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 300, (5, 2))
    np.testing.assert_allclose(
        similarity_transform(source, ARCFACE_TEMPLATE_112), _skimage_similarity(source, ARCFACE_TEMPLATE_112), atol=1e-9
    )


def test_alignment_maps_keypoints_onto_template():
    keypoints = ARCFACE_TEMPLATE_112 * 2.5 + [40.0, 17.0]
    matrix = arcface_alignment(keypoints)
    np.testing.assert_allclose(apply_affine(keypoints, matrix), ARCFACE_TEMPLATE_112, atol=1e-9)


def test_arcface_embedding_is_raw_network_output(tmp_path):
    recognizer = ArcFaceRecognizer.from_file(save_arcface(tmp_path / "glintr100.onnx"))
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)
    keypoints = np.array(FACE_A["keypoints"], dtype=np.float64) * 0.5
    embedding = recognizer.embed(image, keypoints)

    # independent path: skimage similarity + cv2 warp, (x - 127.5) / 127.5, RGB channel order
    aligned = cv2.warpAffine(image, _skimage_similarity(keypoints, ARCFACE_TEMPLATE_112), (112, 112), borderValue=0.0)
    blob = ((aligned.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    expected = arcface_reference(blob)
    assert embedding.shape == (512,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, expected, rtol=1e-4, atol=1e-4)
    assert abs(np.linalg.norm(embedding) - 1.0) > 0.1  # not L2-normalised


def test_landmark106_maps_crop_predictions_to_source(tmp_path):
    landmarker = Landmark106.from_file(save_landmark106(tmp_path / "2d106det.onnx"))
    face = DetectedFace(bbox=np.array([100, 50, 180, 170], np.float32), score=0.9, keypoints=None)
    points = landmarker.points(np.zeros((300, 400, 3), np.uint8), face)
    # the model sees a 192 crop of 1.5 x max(w, h) around the box centre: p_src = c + p * 0.75 * 120
    expected = np.array([140.0, 110.0]) + canonical_106_points() * 0.75 * 120
    np.testing.assert_allclose(points, expected, atol=1e-3)


def test_input_normalisation_follows_the_graph(tmp_path):
    # MXNet-style graphs (2d106det) take raw pixels; others get InsightFace's mean/std.
    assert Landmark106.from_file(save_landmark106(tmp_path / "a.onnx")).input_std == 1.0
    plain = Landmark106.from_file(save_landmark106(tmp_path / "b.onnx", mxnet_names=False))
    assert (plain.input_mean, plain.input_std) == (127.5, 128.0)
    recognizer = ArcFaceRecognizer.from_file(save_arcface(tmp_path / "c.onnx"))
    assert (recognizer.input_mean, recognizer.input_std) == (127.5, 127.5)


def test_106_mapping_to_oval_and_lips():
    points = np.array([140.0, 110.0]) + canonical_106_points() * 90
    landmarks = landmarks_from_106(points)
    np.testing.assert_array_equal(landmarks.lips, points[list(LANDMARK106_LIPS)])
    brow_top = points[43:52, 1].min()
    chin = points[0, 1]
    assert landmarks.oval[:, 1].max() == pytest.approx(chin)
    # forehead extrapolated above the brows by 0.4 x brow-to-chin
    assert landmarks.oval[:, 1].min() == pytest.approx(brow_top - 0.4 * (chin - brow_top), rel=0.05)


def test_detection_only_landmarks():
    face = DetectedFace(bbox=np.array(FACE_A["bbox"], np.float32), score=0.9, keypoints=np.array(FACE_A["keypoints"], np.float32))
    landmarks = landmarks_from_detection(face)
    np.testing.assert_allclose(landmarks.oval.min(0), [300, 120])
    np.testing.assert_allclose(landmarks.lips.mean(0), [360, 240])
