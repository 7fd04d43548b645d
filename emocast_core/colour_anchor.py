"""Colour anchoring: hold a generated video to the reference portrait's colours, frame by frame.

A talking-portrait video shows the reference's person in front of the reference's background, in
place, for its whole length. Every clip after the first continues from frames the network made (its
motion frames), so a colour error of one clip (a background turning a brighter green, a face paling)
is copied by the next and grows over the video. The anchor corrects each frame before it is shown
and before it becomes a motion frame, so the error is not handed on.

For each frame it fits the linear colour map (a 3 x 3 matrix, nine numbers) that best takes the
frame's colours to the reference's colours *at the same pixels*, and applies it to the whole frame.
The pixel correspondence is what makes a single global map enough: since the portrait stays in
place, most pixels (background, skin, hair) have their true colour at the same place in the
reference, and a green that should be teal and a skin tone that should stay are different input
colours, which a full 3 x 3 map can send to different places (a per-channel gain cannot). The map is
linear, without an offset, as a white balance is: black stays black, so dark features the reference
does not show (an open mouth) keep their colour instead of taking on the tint that moved the
background (with an offset, open mouths turned purple on the demo model).

Two things keep the map from flattening the picture:

* pixels that differ by design (an open mouth where the portrait's is closed, raised brows) are
  down-weighted: the fit is repeated with each pixel weighted by how well the previous map explained
  it (iteratively reweighted least squares with a Cauchy weight), so the map follows the pixels that
  should match and leaves expression alone;
* the fit is pulled toward the identity map (ridge), so colours the frame and the reference share
  are left as they are instead of being regressed toward the reference's averages.

The map is global and smooth (no masks, no spatial edits), so it draws no edges, and it is fitted per
frame, so it needs no state across clips. Cost: a few (F, P, 3) products and F 3 x 3 solves per clip.
"""
from __future__ import annotations

import torch

# How strongly the fit is pulled toward the identity map, relative to the pixels' second moments
# (colours in [0, 1]; a flat mid-grey frame has moments of about 0.25). Without it the fitted map
# shrinks the frame's contrast toward the reference's wherever the two differ (measured on the demo
# model: eyes and mouths fade); much stronger and a real colour cast is left half corrected.
IDENTITY_PULL = 0.01
# Colour distance (RGB in [0, 1]) at which a pixel's weight in the refit halves: a colour cast left
# over after the first fit is well under it, an open mouth against a closed one is well over it.
OUTLIER_SCALE = 0.1
# Refits after the plain least-squares fit: the weights settle after two.
REFITS = 2


def fit_colour_maps(frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Linear colour maps from each frame to `target`, (F, 3, 3): a frame's colours (as rows) times its
    map are the anchored colours.

    frames: (F, H, W, 3) in [0, 1]; target: (H, W, 3) in [0, 1], the same size. Computed on the
    frames' device in their dtype (at least float32), without host synchronisation.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (F, H, W, 3), got {tuple(frames.shape)}")
    if target.shape != frames.shape[1:]:
        raise ValueError(f"the target must be one frame of the video's size {tuple(frames.shape[1:])}, "
                         f"got {tuple(target.shape)}")
    dtype = torch.promote_types(frames.dtype, torch.float32)
    num_frames, pixels = frames.shape[0], frames.shape[1] * frames.shape[2]
    colours = frames.reshape(num_frames, pixels, 3).to(dtype)
    wanted = target.reshape(1, pixels, 3).to(frames.device, dtype)
    identity_map = torch.eye(3, device=frames.device, dtype=dtype)
    weights = torch.ones(num_frames, pixels, 1, device=frames.device, dtype=dtype)
    for refit in range(REFITS + 1):
        total = weights.sum(dim=1, keepdim=True)
        moments = colours.transpose(1, 2) @ (weights * colours) / total + IDENTITY_PULL * identity_map
        cross = colours.transpose(1, 2) @ (weights * wanted) / total + IDENTITY_PULL * identity_map
        maps = torch.linalg.solve(moments, cross)  # (F, 3, 3)
        if refit < REFITS:
            residual = (colours @ maps - wanted).norm(dim=2, keepdim=True)
            weights = 1.0 / (1.0 + (residual / OUTLIER_SCALE) ** 2)
    return maps


def anchor_colours(frames: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`frames` (F, H, W, 3) in [0, 1] with each frame's colours mapped toward `target`'s (H, W, 3)
    (see the module docstring); same shape, device and dtype, clamped to [0, 1]."""
    maps = fit_colour_maps(frames, target)
    colours = frames.reshape(frames.shape[0], -1, 3).to(maps.dtype)
    return (colours @ maps).reshape(frames.shape).clamp(0.0, 1.0).to(frames.dtype)
