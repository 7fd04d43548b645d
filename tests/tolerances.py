"""How close to the official numbers is close enough, and why. The one place tests take tolerances from.

Float32 addition is not associative. The official code and this project compute the same maths, but
the order of the additions is not fixed: vectorised kernels (scalar, AVX2, AVX-512) split a dot product
into different numbers of partial sums, a second thread splits it into chunks, and a fused multiply-add
skips one rounding. Each rounding moves a result by at most half a unit in the last place, i.e. by
``EPS / 2`` relative to the values being combined, with ``EPS = 2**-23`` (float32 machine epsilon,
1.19e-7). Results that go through the same operations in another order therefore agree to a few ``EPS``
*relative to the magnitude of the values combined*, not relative to the result and not to zero: a value
near 0 computed from operands near 5 may move by several ``EPS * 5``.

Every comparison with official float numbers is therefore ``|ours - official| <= atol + rtol * scale``
where ``scale`` is the largest magnitude involved and ``rtol`` is ``EPS`` times a rounding budget:

* ``ELEMENTWISE`` — a handful of arithmetic operations, no reduction (a scheduler step, a
  normalisation): each of ~10 roundings contributes at most ``EPS/2``; budget 32 ``EPS`` (3.8e-6).
* ``FORWARD`` — one network forward: long reductions (matmuls, softmax, group norm) whose error grows
  like ``sqrt(n) * EPS``. The fixture README measured 1.1e-6 relative against a float64 run and
  recommends 1e-5 (about 84 ``EPS``): the same number here.
* ``PIPELINE`` — several denoising steps, two clips and a VAE decode, each compounding the forward's
  error; the fixture README recommends 1e-4 absolute on videos in [0, 1].
* ``FLOAT16_BANK`` — outputs that went through upstream's float16 cast of the reference features: a
  1e-6 difference before the cast can flip one float16 rounding (a relative step of 2**-11 ≈ 4.9e-4),
  which moves outputs by ~1e-4 to 1e-3; the fixture README recommends 2e-3.

Integer or uint8 results (mask PNGs, rectangles, 1/255 multiples) stay exact only where both sides run
the same integer code (the same OpenCV / Pillow routine on uint8); they are compared as integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * scale``; ``scale`` defaults to ``max|expected|``."""

    rtol: float
    atol: float
    why: str


ELEMENTWISE = Tolerance(rtol=32 * EPS, atol=0.0, why="a few roundings of values of this magnitude")
FORWARD = Tolerance(rtol=1e-5, atol=1e-5, why="one float32 forward, re-associated reductions (fixture README)")
PIPELINE = Tolerance(rtol=0.0, atol=1e-4, why="steps x clips x VAE compound the forward's error (fixture README)")
FLOAT16_BANK = Tolerance(rtol=0.0, atol=2e-3, why="one flipped float16 rounding of the reference bank (fixture README)")
# Block activations reach ~20: the float16-bank slack also relative to their size.
FLOAT16_BANK_BLOCKS = Tolerance(rtol=1e-4, atol=2e-3, why="float16-bank flips, relative to activations of ~20")
# Latents between steps reach ~7 and carry every earlier step's flips: 2e-3 relative to max(1, |latents|).
FLOAT16_BANK_LATENTS = Tolerance(rtol=2e-3, atol=0.0, why="float16-bank flips carried through the steps")


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    return torch.as_tensor(value).detach().to(torch.float64)


def assert_close_to_official(name: str, actual, expected, tolerance: Tolerance, scale: float | None = None) -> None:
    """Shapes equal and ``max|actual - expected| <= atol + rtol * scale`` (see the module docstring)."""
    actual, expected = _as_tensor(actual), _as_tensor(expected)
    assert tuple(actual.shape) == tuple(expected.shape), f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 0.0
    difference = float((actual - expected).abs().max()) if expected.numel() else 0.0
    bound = tolerance.atol + tolerance.rtol * scale
    assert difference <= bound, (
        f"{name}: max|diff| {difference:.3e} > {bound:.3e} ({tolerance.why}; scale {scale:.3g})"
    )


def assert_same_uint8_steps(name: str, actual, expected) -> None:
    """Values that are ``k / 255`` on both sides: compared as the integers ``k``, exactly."""
    actual_steps = torch.round(_as_tensor(actual) * 255).to(torch.int64)
    expected_steps = torch.round(_as_tensor(expected) * 255).to(torch.int64)
    assert actual_steps.shape == expected_steps.shape, f"{name}: shape {tuple(actual_steps.shape)} != {tuple(expected_steps.shape)}"
    differing = int((actual_steps != expected_steps).sum())
    assert differing == 0, f"{name}: {differing} values differ by at least one 1/255 step"
