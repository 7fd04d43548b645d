"""The demo model's face finder: drawn faces as before, real photographs through scikit-image's
bundled face cascade, and pictures without a face refused."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from emocast_core.conditioning.face import NoFaceError, prepare_reference
from emocast_core.demo.bundle import DemoBundle
from emocast_core.demo.drawn_faces import synthetic_face_analyzer
from emocast_core.demo.face import demo_face_analyzer, is_drawing
from emocast_research.synthetic.corpus import sample_identities
from emocast_research.synthetic.faces import portrait_of

# Where the astronaut's face is in skimage.data.astronaut() (512 x 512), read off the picture with
# a margin: x from the left cheek to the right ear, y from the hairline to the chin.
ASTRONAUT_FACE = (160, 50, 290, 200)  # x0, y0, x1, y1


def _demo_portrait() -> np.ndarray:
    return np.asarray(Image.open(DemoBundle().portrait).convert("RGB"))


def test_drawings_and_photographs_are_told_apart():
    drawn = [portrait_of(identity, size) for identity in
             sample_identities([f"person {i}" for i in range(6)], np.random.default_rng(0)).values() for size in (64, 256)]
    assert all(is_drawing(image) for image in [*drawn, _demo_portrait()])
    for photograph in (skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea()):
        assert not is_drawing(photograph)


def test_drawn_faces_are_found_exactly_as_the_synthetic_finder_does():
    portrait = _demo_portrait()
    ours, theirs = demo_face_analyzer().detect(portrait), synthetic_face_analyzer().detect(portrait)
    assert len(ours) == len(theirs) == 1
    np.testing.assert_array_equal(ours[0].bbox, theirs[0].bbox)
    prepared = prepare_reference(portrait, demo_face_analyzer(), size=64)
    expected = prepare_reference(portrait, synthetic_face_analyzer(), size=64)
    assert prepared.crop == expected.crop
    np.testing.assert_array_equal(prepared.face_embedding.numpy(), expected.face_embedding.numpy())


def test_a_photographed_face_is_found_and_cropped_around_it():
    photo = skimage_data.astronaut()
    faces = demo_face_analyzer().detect(photo)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].bbox
    left, top, right, bottom = ASTRONAUT_FACE
    assert left <= x0 < x1 <= right and top <= y0 < y1 <= bottom
    prepared = prepare_reference(photo, demo_face_analyzer(), size=64)
    assert prepared.face_found and prepared.pixel_values.shape == (1, 3, 64, 64)
    box = prepared.crop.box  # the square crop holds the whole face box
    assert box[0] <= x0 and box[1] <= y0 and box[2] >= x1 and box[3] >= y1
    assert prepared.crop.side < min(photo.shape[:2])  # a crop, not the whole picture


def test_a_picture_without_a_face_is_refused():
    with pytest.raises(NoFaceError):
        prepare_reference(skimage_data.coffee(), demo_face_analyzer(), size=64)
    # The colour-based finder alone would have taken the cup for a face: the reason for the cascade.
    assert synthetic_face_analyzer().detect(skimage_data.coffee())
