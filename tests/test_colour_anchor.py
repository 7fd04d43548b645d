"""Colour anchoring (emocast_core/colour_anchor.py): a frame's colour error is corrected toward the
reference portrait without flattening what differs by design. (In the pipeline: tests/test_pipeline.py.)"""
from __future__ import annotations

import pytest
import torch

from emocast_core.colour_anchor import anchor_colours, fit_colour_maps

TEAL, GREEN, SKIN, LIPS, MOUTH = (0.13, 0.31, 0.37), (0.20, 0.62, 0.38), (0.80, 0.55, 0.40), (0.75, 0.35, 0.40), (0.25, 0.05, 0.10)
SIZE = 64


def _ellipse(cx, cy, rx, ry) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij")
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1


def _portrait(background=TEAL, mouth_open=False) -> torch.Tensor:
    """(SIZE, SIZE, 3): a flat face on a flat background, the mouth closed (lips) or open (dark)."""
    image = torch.empty(SIZE, SIZE, 3)
    image[:] = torch.tensor(background)
    image[_ellipse(32, 30, 16, 21)] = torch.tensor(SKIN)
    mouth = _ellipse(32, 40, 7, 5 if mouth_open else 1.5)
    image[mouth] = torch.tensor(MOUTH if mouth_open else LIPS)
    return image


def _region_colour(image, mask) -> torch.Tensor:
    return image[mask].mean(dim=0)


def test_a_frame_that_is_the_portrait_is_left_alone():
    portrait = _portrait()
    assert torch.allclose(anchor_colours(portrait[None], portrait)[0], portrait, atol=1e-4)


def test_a_colour_error_in_one_region_is_corrected_and_the_rest_kept():
    """The demo's failure: the background turns green while the face stays; a per-channel gain cannot
    undo that without tinting the face, the fitted 3 x 3 map can. The open mouth differs from the
    portrait's closed one by design and must stay dark."""
    portrait, frame = _portrait(), _portrait(background=GREEN, mouth_open=True)
    anchored = anchor_colours(frame[None], portrait)[0]
    background = ~_ellipse(32, 30, 18, 23)
    face = _ellipse(32, 30, 14, 19) & ~_ellipse(32, 40, 9, 7)
    inside_mouth = _ellipse(32, 40, 5, 3)
    # The background's error (0.31 in green) falls within 0.03 (8 of 255 levels, just visible on a flat
    # area); the face, right before, moves by less than 0.05, the price of one map for all colours.
    assert torch.allclose(_region_colour(anchored, background), torch.tensor(TEAL), atol=0.03)
    assert torch.allclose(_region_colour(anchored, face), torch.tensor(SKIN), atol=0.05)
    # The open mouth keeps its colour (within 0.06) and is nowhere near the portrait's lips: expression
    # is not regressed toward the portrait's closed mouth.
    mouth = _region_colour(anchored, inside_mouth)
    assert torch.allclose(mouth, torch.tensor(MOUTH), atol=0.06)
    assert (mouth - torch.tensor(LIPS)).abs().max() > 0.3


def test_black_stays_black():
    """The map has no offset, as a white balance: a dark feature the portrait does not show takes no
    share of the tint that moves the background (with an offset, open mouths turned purple)."""
    portrait, frame = _portrait(), _portrait(background=GREEN)
    frame[_ellipse(32, 40, 5, 3)] = 0.0
    anchored = anchor_colours(frame[None], portrait)[0]
    assert anchored[_ellipse(32, 40, 5, 3)].abs().max() < 1e-6


def test_a_global_colour_cast_is_removed():
    """A cast that mixes the channels (what a white balance undoes): removed, not just reduced."""
    portrait = _portrait()
    mixing = torch.tensor([[0.85, 0.05, 0.0], [0.10, 1.0, 0.05], [0.0, 0.08, 0.9]])
    cast = (portrait @ mixing).clamp(0, 1)
    before = (cast - portrait).abs().mean()
    after = (anchor_colours(cast[None], portrait)[0] - portrait).abs().mean()
    assert after < 0.25 * before


def test_each_frame_gets_its_own_map_and_the_frames_keep_their_format():
    portrait = _portrait()
    frames = torch.stack([portrait, _portrait(background=GREEN)]).half()
    anchored = anchor_colours(frames, portrait)
    assert anchored.shape == frames.shape and anchored.dtype == torch.float16
    assert anchored.min() >= 0 and anchored.max() <= 1
    maps = fit_colour_maps(frames, portrait)
    assert maps.shape == (2, 3, 3)
    identity = torch.eye(3)
    assert torch.allclose(maps[0], identity, atol=5e-3)
    assert not torch.allclose(maps[1], identity, atol=5e-2)


@pytest.mark.parametrize("frames, target, message", [
    (torch.zeros(2, 8, 8), torch.zeros(8, 8, 3), "frames must be"),
    (torch.zeros(2, 8, 8, 3), torch.zeros(16, 16, 3), "the target must be"),
])
def test_shapes_that_do_not_fit_are_refused(frames, target, message):
    with pytest.raises(ValueError, match=message):
        anchor_colours(frames, target)
