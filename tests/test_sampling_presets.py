"""Named sampling presets: what they cost in denoiser evaluations, and that they run."""
from __future__ import annotations

import pytest

from emocast_core.pipeline import SAMPLING_PRESETS, GenerationConfig, generation_config_from_preset
from emocast_core.scheduling import SCHEDULER_NAMES, make_scheduler


def _row_evaluations(config: GenerationConfig) -> int:
    """Denoiser rows per clip: a guided step runs [uncond; cond] (2), an unguided one the cond row (1)."""
    steps = config.num_inference_steps
    guided = sum(config.guidance.is_active(step, steps) for step in range(steps))
    return 2 * guided + (steps - guided)


def test_upstream_preset_is_the_default_generation():
    upstream, default = generation_config_from_preset("upstream"), GenerationConfig()
    assert (upstream.sampler, upstream.num_inference_steps, upstream.guidance) == (default.sampler, default.num_inference_steps, default.guidance)
    assert _row_evaluations(upstream) == 80


def test_fast_preset_costs_at_most_a_third_of_upstream():
    fast = generation_config_from_preset("fast", seed=7)
    assert fast.seed == 7
    assert 3 * _row_evaluations(fast) <= _row_evaluations(generation_config_from_preset("upstream"))


@pytest.mark.parametrize("name", list(SAMPLING_PRESETS))
def test_every_preset_names_a_known_solver(name):
    preset = SAMPLING_PRESETS[name]
    assert preset.sampler in SCHEDULER_NAMES
    scheduler = make_scheduler(preset.sampler)
    scheduler.set_timesteps(preset.num_inference_steps)
    assert len(scheduler.timesteps) == preset.num_inference_steps


def test_unknown_preset_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="upstream"):
        generation_config_from_preset("fastest")
