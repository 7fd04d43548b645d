"""Region masks against the official oracle (masks/ of the tiny fixture set) and their shapes.

The model size, the image size and the expand ratio come from the oracle folder (``meta.json``, the
reference PNG, ``inputs.safetensors``), so an oracle made the same way at another size is checked the
same way (``EMOCAST_ORACLE_DIR``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from emocast_core.conditioning.face import prepare_reference_from_landmarks
from tolerances import ELEMENTWISE, assert_close_to_official, assert_same_uint8_steps
from emocast_core.conditioning.masks import (
    FaceLandmarks,
    expand_region,
    invert_mask,
    mask_level_sizes,
    mask_levels,
    masks_for_latent_grid,
    rect_mask,
    region_masks,
)


@pytest.fixture(scope="module")
def mask_oracle(oracle_dir):
    from PIL import Image

    folder = oracle_dir / "masks"
    if not (folder / "expected.safetensors").is_file():
        pytest.skip(f"no masks oracle in {folder}")
    meta = json.loads((folder / "meta.json").read_text())
    inputs, expected = load_file(str(folder / "inputs.safetensors")), load_file(str(folder / "expected.safetensors"))
    with Image.open(folder / "reference.png") as image:
        image_size = image.size  # (width, height)
    size = int(meta["variant"]["size"])
    assert expected["pixel_values_ref_img"].shape[-1] == size  # the folder agrees with itself
    return folder, inputs, expected, size, image_size


def test_rectangles_and_soft_masks_match_oracle_exactly(mask_oracle):
    _, inputs, expected, size, (width, height) = mask_oracle
    landmarks = FaceLandmarks.from_mediapipe(inputs["landmarks"])
    masks = region_masks(landmarks, height, width, size=size, face_expand_ratio=float(inputs["face_expand_ratio"]))

    # Integer results of the same integer (OpenCV / Pillow uint8) code on both sides: exact.
    assert masks.face_rect == tuple(expected["face_rect_minx_maxx_miny_maxy"].tolist())
    assert masks.lip_rect == tuple(expected["lip_rect_minx_maxx_miny_maxy"].tolist())
    np.testing.assert_array_equal(masks.soft_face, expected["png.face_mask_blur"])
    np.testing.assert_array_equal(masks.soft_full, expected["png.sep_background"])
    np.testing.assert_array_equal(masks.soft_face_only, expected["png.sep_face"])
    np.testing.assert_array_equal(masks.soft_lip, expected["png.sep_lip"])


def test_prepared_reference_matches_oracle(mask_oracle):
    folder, inputs, expected, size, _ = mask_oracle
    from PIL import Image

    image = Image.open(folder / "reference.png")
    prepared = prepare_reference_from_landmarks(
        image, inputs["landmarks"], inputs["face_emb"], size=size, face_expand_ratio=float(inputs["face_expand_ratio"])
    )
    assert prepared.crop is None
    for name in ("full", "face", "lip"):
        levels = getattr(prepared, f"{name}_mask")
        assert len(levels) == len(mask_level_sizes(size))
        for level, tensor in enumerate(levels):
            reference = torch.from_numpy(expected[f"{name}_mask.{level}"])
            assert tensor.dtype == torch.float32 and tensor.shape == reference.shape
            # uint8 PNG values / 255 on both sides: the same integers.
            assert_same_uint8_steps(f"{name}_mask.{level}", tensor, reference)
    assert_same_uint8_steps("face_region_mask", prepared.face_region[0], expected["face_region_mask"])
    # ToTensor + Normalize of the same uint8 pixels: two roundings of values in [-1, 1].
    assert_close_to_official("pixel_values_ref_img", prepared.pixel_values[0], expected["pixel_values_ref_img"], ELEMENTWISE)
    assert torch.equal(prepared.face_embedding[0], torch.from_numpy(expected["face_emb"]))  # passed through untouched


@pytest.mark.parametrize("size, sides", [(512, [64, 32, 16, 8]), (256, [32, 16, 8, 4]), (768, [96, 48, 24, 12])])
def test_mask_level_sizes(size, sides):
    assert mask_level_sizes(size) == sides
    rng = np.random.default_rng(0)
    oval = rng.uniform(0.3 * size, 0.7 * size, (36, 2))
    lips = rng.uniform(0.55 * size, 0.65 * size, (20, 2))
    masks = region_masks(FaceLandmarks(oval, lips), size, size, size=size)
    for levels in (masks.full, masks.face, masks.lip):
        assert [m.shape for m in levels] == [(1, s * s) for s in sides]
        for m in levels:
            assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
            # Values come from uint8 images: multiples of 1/255.
            np.testing.assert_allclose(m * 255, np.round(m * 255), atol=1e-4)
    assert masks.face_region.shape == (size, size)
    assert set(np.unique(masks.face_region)) <= {0.0, 1.0}


def _soft_face_mask(size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.clip(255 - 4 * np.hypot(xx - 0.45 * size, yy - 0.55 * size), 0, 255).astype(np.uint8)


def test_masks_for_sds_latent_grid_are_the_front_ends_levels():
    levels = [torch.from_numpy(level) for level in mask_levels(_soft_face_mask(), 128)]
    fitted = masks_for_latent_grid(levels, 16)  # 128 px through SD's factor-8 VAE
    assert all(a is b for a, b in zip(fitted, levels)) and len(fitted) == len(levels)


@pytest.mark.parametrize("size, latent_side", [(128, 8), (256, 16), (256, 8)])
def test_masks_for_a_coarser_vae_are_the_levels_that_vae_would_have(size, latent_side):
    """A VAE with 2**k x SD's downsampling (the demo's: factor 16) reads the front-end's levels k, k+1, ...:
    the same Pillow resizes of the same soft mask; levels beyond the last one are 2x2 means."""
    soft = _soft_face_mask()
    levels = [torch.from_numpy(level) for level in mask_levels(soft, size)]
    fitted = masks_for_latent_grid(levels, latent_side)
    sides = [latent_side // 2**level for level in range(len(levels))]
    assert [tuple(level.shape) for level in fitted] == [(1, side * side) for side in sides]
    skip = len(levels) - sum(1 for level in levels if level.shape[-1] <= latent_side**2)
    for level in range(len(levels) - skip):
        assert torch.equal(fitted[level], levels[level + skip])
    last = len(levels) - skip - 1
    coarser = fitted[last].reshape(1, 1, sides[last], sides[last])
    expected = torch.nn.functional.avg_pool2d(coarser, 2).reshape(1, -1)
    torch.testing.assert_close(fitted[last + 1], expected)  # fp32 mean of 4 values: a few ulps at most


def test_masks_that_do_not_fit_the_latent_grid_are_refused():
    levels = [torch.from_numpy(level) for level in mask_levels(_soft_face_mask(), 128)]
    for latent_side in (6, 32):
        with pytest.raises(ValueError, match="cannot be fitted"):
            masks_for_latent_grid(levels, latent_side)


def test_mask_semantics():
    size = 512
    oval = np.array([[150, 120], [360, 120], [360, 400], [150, 400]], dtype=np.float64)
    lips = np.array([[220, 320], [290, 320], [255, 300], [255, 345]], dtype=np.float64)
    masks = region_masks(FaceLandmarks(oval, lips), size, size, size=size)
    full, face, lip = masks.full[0].reshape(64, 64), masks.face[0].reshape(64, 64), masks.lip[0].reshape(64, 64)
    # pose mask is the complement of the face, the lip mask peaks on the mouth, face excludes the lips
    assert full[0, 0] > 0.95 and full[32, 32] < 0.05
    mouth = (int(320 / 8), int(255 / 8))
    assert lip[mouth] == pytest.approx(1.0) and face[mouth] < 0.2
    assert face[int(200 / 8), 32] > 0.9


def test_expand_region_shifts_inside_image():
    # centre (100, 50), 1.2 x (200, 100) -> 240 x 120 would leave the top-left corner: shifted in
    # centre (450, 450), 2 x 100 -> 350..550 passes the border by 38: shifted to 312..512
    assert expand_region((0, 200, 0, 100), 512, 512, 1.2) == (0, 240, 0, 120)
    assert expand_region((400, 500, 400, 500), 512, 512, 2.0) == (312, 512, 312, 512)
    assert expand_region((10, 20, 30, 40), 64, 64, 1.0) == (10, 20, 30, 40)


def test_rect_mask_and_invert():
    mask = rect_mask((2, 5, 1, 3), 6, 8)
    assert mask.sum() == 255 * 3 * 2 and mask[1, 2] == 255 and mask[3, 5] == 0
    values = np.arange(256, dtype=np.uint8)
    inverted = invert_mask(values)
    # the float round trip truncates: never above 255 - v, at most one step below
    assert np.all(inverted.astype(int) <= 255 - values.astype(int))
    assert np.all(inverted.astype(int) >= 254 - values.astype(int))


def test_from_mediapipe_validates_shape():
    with pytest.raises(ValueError, match="478"):
        FaceLandmarks.from_mediapipe(np.zeros((68, 2)))


def test_size_must_be_multiple_of_64():
    with pytest.raises(ValueError, match="multiple of 64"):
        mask_level_sizes(500)


@pytest.mark.parametrize("size, crop", [
    (384, (0, 480, 60, 420)),   # 360 wide x 480 high, face near the top edge: the face rectangle is shifted
    (256, (32, 352, 0, 512)),   # 512 wide x 320 high, downscaled to a smaller model size
])
def test_non_square_images_match_the_official_procedure(tmp_path, size, crop):
    """The official front-end re-derived step by step (`upstream_masks`) is the oracle where the fixture has
    none: a non-square image at a size other than 512, so the resize and the rectangle shift really run."""
    from PIL import Image
    from skimage import data as skimage_data
    from upstream_masks import official_style_reference

    from emocast_core.conditioning.masks import MEDIAPIPE_LIP_IDS, MEDIAPIPE_SILHOUETTE_IDS

    top, bottom, left, right = crop
    image = skimage_data.astronaut()[top:bottom, left:right]
    height, width = image.shape[:2]
    path = tmp_path / "portrait.png"
    Image.fromarray(image).save(path)
    rng = np.random.default_rng(size)
    landmarks = np.tile([[0.45 * width, 0.3 * height]], (478, 1)) + rng.normal(0, 2, (478, 2))
    angles = np.linspace(0, 2 * np.pi, len(MEDIAPIPE_SILHOUETTE_IDS), endpoint=False)
    landmarks[list(MEDIAPIPE_SILHOUETTE_IDS)] = np.stack(
        [0.45 * width + 0.22 * width * np.cos(angles), 0.22 * height + 0.21 * height * np.sin(angles)], 1)
    angles = np.linspace(0, 2 * np.pi, len(MEDIAPIPE_LIP_IDS), endpoint=False)
    landmarks[list(MEDIAPIPE_LIP_IDS)] = np.stack(
        [0.45 * width + 0.06 * width * np.cos(angles), 0.33 * height + 0.02 * height * np.sin(angles)], 1)

    expected = official_style_reference(path, landmarks, MEDIAPIPE_SILHOUETTE_IDS, MEDIAPIPE_LIP_IDS, size, 1.2, tmp_path)
    masks = region_masks(FaceLandmarks.from_mediapipe(landmarks), height, width, size=size, face_expand_ratio=1.2)
    assert masks.face_rect == tuple(expected["face_rect"]) and masks.lip_rect == tuple(expected["lip_rect"])
    assert masks.face_rect[2] == 0  # the expanded face left the image at the top and was shifted back in

    prepared = prepare_reference_from_landmarks(Image.open(path), landmarks, None, size=size, face_expand_ratio=1.2)
    for name in ("full", "face", "lip"):
        for level, tensor in enumerate(getattr(prepared, f"{name}_mask")):
            assert_same_uint8_steps(f"{name}_mask.{level}", tensor, expected[f"{name}_mask.{level}"])
    assert_same_uint8_steps("face_region", prepared.face_region[0], expected["face_region"])
    assert_close_to_official("pixel_values", prepared.pixel_values[0], expected["pixel_values"], ELEMENTWISE)
