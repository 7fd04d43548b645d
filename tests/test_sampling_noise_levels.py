"""`scheduling.noise_levels`: the sigma table that ComfyUI's samplers run EmoCAST on is the one the
built-in diffusers solvers use."""
from __future__ import annotations

import torch

from emocast_core.scheduling import make_scheduler, noise_levels
from tolerances import ELEMENTWISE, assert_close_to_official


def test_noise_levels_are_the_builtin_euler_sigmas():
    levels = noise_levels()
    assert levels.shape == (1000,) and levels.dtype == torch.float32
    assert bool((levels[1:] > levels[:-1]).all())
    euler = make_scheduler("euler")
    euler.set_timesteps(10)
    # diffusers' Euler: sigmas at its (trailing) timesteps, then a final 0.
    expected = euler.sigmas[:-1].float()
    assert_close_to_official("sigmas", levels[euler.timesteps.long()], expected, ELEMENTWISE)


def test_zero_snr_level_is_capped_where_diffusers_caps_it():
    # alpha_cumprod(999) = 0 in theory; 2**-24 gives sigma = sqrt(2**24 - 1) ~ 4096.
    assert abs(float(noise_levels()[-1]) - (2.0 ** 24 - 1) ** 0.5) < 1e-2
    # t = 0 is the least noise the model saw: sqrt(beta_0 / (1 - beta_0)) for the linear schedule's first beta.
    beta_0 = 0.00085
    assert abs(float(noise_levels()[0]) - (beta_0 / (1 - beta_0)) ** 0.5) < 1e-4
