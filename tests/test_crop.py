"""Face crop transform and paste-back of generated frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from emocast_core.conditioning.crop import (
    CropTransform,
    center_crop_transform,
    crop_image,
    face_crop_transform,
    feather_weights,
    paste_back,
)
from emocast_core.conditioning.image_input import to_rgb_float
from face_fixtures import ASTRONAUT_FACE

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return to_rgb_float(skimage_data.astronaut())


def test_transform_geometry():
    transform = face_crop_transform(np.array([100, 80, 200, 230]), (480, 640), output_size=256, crop_scale=2.0)
    assert transform.side == 300 and transform.box == (0, 5, 300, 305)  # centre (150, 155), shifted to x=0
    assert transform.scale == pytest.approx(256 / 300)
    points = np.array([[150.0, 155.0], [10.0, 300.0]])
    np.testing.assert_allclose(transform.to_source(transform.to_crop(points)), points)
    # larger than the image: capped by the short side
    assert face_crop_transform(np.array([0, 0, 600, 470]), (480, 640), crop_scale=2.0).side == 480
    assert center_crop_transform((300, 400), 512).box == (50, 0, 350, 300)


@pytest.mark.parametrize("as_torch", [True, False])
def test_paste_back_round_trip(astronaut, as_torch):
    transform = face_crop_transform(np.array(ASTRONAUT_FACE["bbox"]), astronaut.shape[:2], 512)
    crop = crop_image(astronaut, transform).astype(np.float32) / 255.0
    frames = np.stack([crop, crop])
    pasted = paste_back(torch.from_numpy(frames) if as_torch else frames, transform, astronaut, feather=0.1)
    assert isinstance(pasted, torch.Tensor) == as_torch
    pasted = pasted.numpy() if as_torch else pasted
    assert pasted.shape == (2, 512, 512, 3) and pasted.dtype == np.float32

    x0, y0, x1, y1 = transform.box
    outside = np.ones((512, 512), dtype=bool)
    outside[y0:y1, x0:x1] = False
    for frame in pasted:
        np.testing.assert_array_equal(frame[outside], astronaut[outside])  # untouched
        face = (slice(62, 182), slice(175, 272))
        difference = np.abs(frame[face] - astronaut[face])
        # what is left is the blur of resizing up (crop) and back down (paste): small on average,
        # larger only on a few sharp highlights
        assert difference.mean() < 0.012 and np.quantile(difference, 0.99) < 0.1


def test_paste_back_replaces_the_crop_inside_and_blends_at_edges(astronaut):
    transform = CropTransform(box=(100, 100, 300, 300), output_size=64, source_size=(512, 512))
    white = np.ones((1, 64, 64, 3), dtype=np.float32)
    pasted = paste_back(white, transform, astronaut, feather=0.1)[0]
    np.testing.assert_allclose(pasted[150:250, 150:250], 1.0, atol=1e-6)  # centre fully replaced
    edge = pasted[200, 101]
    assert np.all(edge < 1.0) and np.all(edge >= astronaut[200, 101] - 1e-6)  # ramp at the edge
    np.testing.assert_array_equal(pasted[:100], astronaut[:100])


def test_feather_skips_edges_on_the_image_border():
    transform = CropTransform(box=(0, 20, 100, 120), output_size=512, source_size=(200, 100))
    weights = feather_weights(transform, 0.2)
    assert weights.shape == (100, 100)
    assert weights[50, 0] == 1.0 and weights[50, 99] == 1.0  # left/right edges lie on the border
    assert weights[0, 50] < 0.05 and weights[99, 50] < 0.05  # top/bottom are blended
    assert np.all(feather_weights(transform, 0.0) == 1.0)


def test_paste_back_validates_inputs(astronaut):
    transform = CropTransform(box=(0, 0, 100, 100), output_size=64, source_size=(300, 300))
    with pytest.raises(ValueError, match="crop was taken from"):
        paste_back(np.zeros((1, 64, 64, 3), np.float32), transform, astronaut)
    with pytest.raises(ValueError, match="frames"):
        paste_back(np.zeros((1, 2, 64, 64, 3), np.float32), transform, np.zeros((300, 300, 3), np.float32))


def test_image_conversion_variants():
    gray16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    converted = to_rgb_float(gray16)
    assert converted.shape == (3, 4, 3)
    # 16-bit grey spans 0..65535, repeated to three channels (float32 rounding: ~1e-7).
    np.testing.assert_allclose(converted, np.repeat(gray16[..., None] / 65535.0, 3, axis=-1), rtol=0, atol=1e-6)
    rgba = np.zeros((2, 2, 4), dtype=np.float32)
    rgba[..., 3] = 0.0
    np.testing.assert_allclose(to_rgb_float(rgba), 1.0)  # transparent -> white backdrop
    rgba[..., 3] = 0.25  # a quarter black over the white backdrop
    np.testing.assert_allclose(to_rgb_float(rgba), 0.75, rtol=0, atol=1e-6)
    batch = torch.rand(2, 5, 6, 3)
    np.testing.assert_array_equal(to_rgb_float(batch), batch[0].numpy())  # the first image of a batch
    with pytest.raises(TypeError):
        to_rgb_float("image.png")
    with pytest.raises(ValueError):
        to_rgb_float(np.zeros((2, 2, 5)))
