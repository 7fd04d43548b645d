"""prepare_reference end to end with tiny ONNX stand-ins of the antelopev2 files."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from emocast_core.conditioning.face import (
    FaceAnalyzer,
    MissingFaceModelsError,
    NoFaceError,
    PreparedReference,
    prepare_reference,
)
from face_fixtures import ASTRONAUT_FACE, write_antelopev2

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # (512, 512, 3) uint8, a real portrait


@pytest.fixture(scope="module")
def astronaut_analyzer(tmp_path_factory, astronaut) -> FaceAnalyzer:
    root = tmp_path_factory.mktemp("comfyui")
    write_antelopev2(root, [ASTRONAUT_FACE], astronaut.shape[:2])
    return FaceAnalyzer.from_folder(root / "models" / "insightface" / "models" / "antelopev2")


def _check_fields(prepared: PreparedReference, size: int) -> None:
    assert prepared.pixel_values.shape == (1, 3, size, size) and prepared.pixel_values.dtype == torch.float32
    assert prepared.pixel_values.min() >= -1 and prepared.pixel_values.max() <= 1
    assert prepared.face_embedding.shape == (1, 512) and prepared.face_embedding.dtype == torch.float32
    assert prepared.face_region.shape == (1, 3, size, size) and prepared.face_region.dtype == torch.float32
    assert set(prepared.face_region.unique().tolist()) <= {0.0, 1.0}
    for levels in (prepared.full_mask, prepared.face_mask, prepared.lip_mask):
        assert [tuple(m.shape) for m in levels] == [(1, (size // 8 // 2**i) ** 2) for i in range(4)]
        assert all(m.dtype == torch.float32 and m.min() >= 0 and m.max() <= 1 for m in levels)
    assert prepared.source_image.dtype == np.float32 and prepared.source_image.ndim == 3


def test_astronaut_face_crop(astronaut, astronaut_analyzer):
    prepared = prepare_reference(astronaut, astronaut_analyzer)
    _check_fields(prepared, 512)
    assert prepared.face_found
    np.testing.assert_allclose(prepared.face_bbox, ASTRONAUT_FACE["bbox"], atol=1e-3)
    x0, y0, x1, y1 = prepared.crop.box
    assert x1 - x0 == y1 - y0 == round(120 * 1.7)
    assert x0 <= 175 and x1 >= 272 and y0 <= 62 and y1 >= 182
    # the face locator rectangle and the lip mask sit where the face and the mouth are in the crop
    mouth = prepared.crop.to_crop(np.array([[226.0, 150.0]]))[0]
    assert prepared.face_region[0, 0, int(mouth[1]), int(mouth[0])] == 1
    lip = prepared.lip_mask[0].reshape(64, 64)
    assert lip[int(mouth[1] / 8), int(mouth[0] / 8)] > 0.9
    assert prepared.full_mask[0].reshape(64, 64)[0, 0] > 0.95
    # the crop pixels are the source pixels of the box
    crop_rgb = (prepared.pixel_values[0].permute(1, 2, 0).numpy() + 1) / 2
    source_patch = np.asarray(Image.fromarray(astronaut).resize((512, 512), Image.BILINEAR, box=(x0, y0, x1, y1)))
    np.testing.assert_allclose(crop_rgb, source_patch / 255.0, atol=1e-6)


def test_other_size_and_whole_image_mode(astronaut, astronaut_analyzer):
    small = prepare_reference(astronaut, astronaut_analyzer, size=256)
    _check_fields(small, 256)
    whole = prepare_reference(astronaut, astronaut_analyzer, crop_to_face=False)
    _check_fields(whole, 512)
    assert whole.crop is None
    # same identity whatever the framing: the embedding comes from the full-resolution source
    assert torch.equal(small.face_embedding, whole.face_embedding)


@pytest.mark.parametrize("kind", ["rgba", "gray", "gray3d", "float", "torch", "pil"])
def test_input_types(astronaut, astronaut_analyzer, kind):
    if kind == "rgba":
        image = np.concatenate([astronaut, np.full((*astronaut.shape[:2], 1), 255, np.uint8)], axis=2)
    elif kind == "gray":
        image = astronaut.mean(axis=2).astype(np.uint8)
    elif kind == "gray3d":
        image = astronaut.mean(axis=2, keepdims=True).astype(np.uint8)
    elif kind == "float":
        image = astronaut.astype(np.float32) / 255.0
    elif kind == "torch":
        image = torch.from_numpy(astronaut).float()[None] / 255.0  # ComfyUI IMAGE [B, H, W, C]
    else:
        image = Image.fromarray(astronaut).convert("RGBA")
    prepared = prepare_reference(image, astronaut_analyzer)
    _check_fields(prepared, 512)
    assert prepared.source_image.shape == (512, 512, 3)
    if kind in ("rgba", "float", "torch", "pil"):
        reference = prepare_reference(astronaut, astronaut_analyzer)
        assert torch.allclose(prepared.pixel_values, reference.pixel_values, atol=1e-6)
    if kind.startswith("gray"):
        pixels = prepared.pixel_values[0]
        assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])


def test_rgba_transparency_composited_on_white(astronaut, astronaut_analyzer):
    rgba = np.concatenate([astronaut, np.full((512, 512, 1), 255, np.uint8)], axis=2)
    rgba[:, :40, 3] = 0
    prepared = prepare_reference(rgba, astronaut_analyzer, crop_to_face=False)
    assert torch.all(prepared.pixel_values[0, :, :, :30] == 1.0)


@pytest.fixture()
def two_faces(tmp_path):
    image_hw = (480, 640)
    big = {"bbox": (350.0, 100.0, 500.0, 290.0), "keypoints": ((390, 170), (460, 170), (425, 210), (395, 250), (455, 250)), "score": 0.8}
    small = {"bbox": (60.0, 150.0, 150.0, 260.0), "keypoints": ((85, 190), (125, 190), (105, 212), (88, 235), (122, 235)), "score": 0.95}
    folder = write_antelopev2(tmp_path, [small, big], image_hw)
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    return FaceAnalyzer.from_folder(folder), image, big, small


def test_several_faces_largest_by_default_or_by_index(two_faces):
    analyzer, image, big, small = two_faces
    largest = prepare_reference(image, analyzer)
    np.testing.assert_allclose(largest.face_bbox, big["bbox"], atol=1e-3)
    second = prepare_reference(image, analyzer, face_index=1)
    np.testing.assert_allclose(second.face_bbox, small["bbox"], atol=1e-3)
    assert not torch.equal(largest.face_embedding, second.face_embedding)
    with pytest.raises(IndexError, match="2 face"):
        prepare_reference(image, analyzer, face_index=2)


def test_whole_image_mode_warns_about_stretching(two_faces):
    analyzer, image, big, _ = two_faces
    with pytest.warns(UserWarning, match="stretches the 640x480"):
        prepared = prepare_reference(image, analyzer, crop_to_face=False, size=256)
    assert prepared.crop is None
    # landmarks are reported in model-input pixels: x scaled by 256/640, y by 256/480
    oval = prepared.landmarks.oval
    assert oval[:, 0].min() > big["bbox"][0] * 256 / 640 - 30 and oval[:, 1].max() < big["bbox"][3] * 256 / 480 + 30


def test_crop_of_face_near_border_stays_inside(two_faces):
    analyzer, image, _, _ = two_faces
    prepared = prepare_reference(image, analyzer, face_index=1, crop_scale=4.0)
    x0, y0, x1, y1 = prepared.crop.box
    assert x0 == 0 and 0 <= y0 and y1 <= 480 and x1 - x0 == y1 - y0 == 440  # 4 x 110, shifted right


@pytest.fixture()
def no_face_analyzer(tmp_path):
    return FaceAnalyzer.from_folder(write_antelopev2(tmp_path, [], (300, 400)))


def test_no_face_error_and_center(no_face_analyzer):
    image = np.full((300, 400, 3), 128, np.uint8)
    with pytest.raises(NoFaceError, match='on_no_face="center"'):
        prepare_reference(image, no_face_analyzer)
    with pytest.warns(UserWarning, match="No face found"):
        prepared = prepare_reference(image, no_face_analyzer, on_no_face="center", size=256)
    _check_fields(prepared, 256)
    assert not prepared.face_found
    assert torch.count_nonzero(prepared.face_embedding) == 0
    assert prepared.crop.box == (50, 0, 350, 300)
    assert prepared.face_region.sum() > 0 and prepared.lip_mask[0].max() > 0.9
    with pytest.raises(ValueError, match="on_no_face"):
        prepare_reference(image, no_face_analyzer, on_no_face="skip")


def test_missing_files_named_in_one_message(tmp_path):
    with pytest.raises(MissingFaceModelsError) as error:
        FaceAnalyzer.from_folder(tmp_path)
    message = str(error.value)
    for name in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "models/insightface/models/antelopev2"):
        assert name in message

    folder = write_antelopev2(tmp_path, [], (64, 64), with_landmarker=False)
    (folder / "glintr100.onnx").unlink()
    with pytest.raises(MissingFaceModelsError) as error:
        FaceAnalyzer.from_folder(tmp_path / "models" / "insightface")
    missing_part = str(error.value).split(". Put")[0]
    assert missing_part.endswith(": glintr100.onnx, 2d106det.onnx")

    with pytest.raises(MissingFaceModelsError, match="face recogniser.*face landmarker"):
        FaceAnalyzer.from_files(folder / "scrfd_10g_bnkps.onnx", folder / "glintr100.onnx", folder / "x.onnx")


def test_without_landmarker_uses_detector_boxes(tmp_path, astronaut):
    folder = write_antelopev2(tmp_path, [ASTRONAUT_FACE], astronaut.shape[:2], with_landmarker=False)
    analyzer = FaceAnalyzer.from_files(folder / "scrfd_10g_bnkps.onnx", folder / "glintr100.onnx")
    with pytest.warns(UserWarning, match="coarse boxes"):
        prepared = prepare_reference(astronaut, analyzer)
    _check_fields(prepared, 512)


def test_mediapipe_task_is_optional(tmp_path):
    # Without the mediapipe package a .task file next to the ONNX files is ignored (2d106det is used).
    folder = write_antelopev2(tmp_path, [], (64, 64))
    (folder / "face_landmarker_v2_with_blendshapes.task").write_bytes(b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            import mediapipe  # noqa: F401
        except ImportError:
            analyzer = FaceAnalyzer.from_folder(folder)
            assert type(analyzer.landmarker).__name__ == "Landmark106"
        else:
            pytest.skip("mediapipe is installed; the optional path is not exercised with an empty task file")


def test_prepared_crop_pastes_back_into_source(astronaut, astronaut_analyzer):
    from emocast_core.conditioning.crop import paste_back

    prepared = prepare_reference(torch.from_numpy(astronaut)[None].float() / 255.0, astronaut_analyzer)
    frames = ((prepared.pixel_values + 1) / 2).permute(0, 2, 3, 1).repeat(3, 1, 1, 1)  # [T, S, S, 3]
    full = paste_back(frames, prepared.crop, prepared.source_image)
    assert isinstance(full, torch.Tensor) and full.shape == (3, 512, 512, 3)
    x0, y0, x1, y1 = prepared.crop.box
    source = torch.from_numpy(prepared.source_image)
    assert torch.equal(full[:, :, x1:], source[None, :, x1:].expand(3, -1, -1, -1))
    assert (full[:, y0 + 40 : y1 - 40, x0 + 40 : x1 - 40] - source[y0 + 40 : y1 - 40, x0 + 40 : x1 - 40]).abs().mean() < 0.015
