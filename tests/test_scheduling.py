"""Samplers: upstream's DDIM against the official pipeline oracle, and the alternatives over full loops."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from emocast_core.scheduling import SCHEDULER_NAMES, make_scheduler
from tolerances import ELEMENTWISE, assert_close_to_official


@pytest.fixture(scope="module")
def pipeline_expected(oracle_dir):
    return load_file(oracle_dir / "pipeline" / "expected.safetensors")


def _num_steps(expected, clip: int = 0) -> int:
    return sum(1 for key in expected if key.startswith(f"clip{clip}.step") and key.endswith(".timestep"))


def test_ddim_timesteps_match_upstream(pipeline_expected):
    num_steps = _num_steps(pipeline_expected)
    scheduler = make_scheduler("ddim")
    scheduler.set_timesteps(num_steps)
    expected = [int(pipeline_expected[f"clip0.step{i}.timestep"]) for i in range(num_steps)]
    assert scheduler.timesteps.tolist() == expected


def test_ddim_step_matches_upstream(pipeline_expected):
    num_steps = _num_steps(pipeline_expected)
    num_clips = sum(1 for key in pipeline_expected if key.endswith(".noise"))
    assert num_clips >= 1
    for clip in range(num_clips):
        scheduler = make_scheduler("ddim")
        scheduler.set_timesteps(num_steps)
        for i, t in enumerate(scheduler.timesteps):
            step = f"clip{clip}.step{i}"
            assert int(t) == int(pipeline_expected[f"{step}.timestep"])
            noise_pred, latents = pipeline_expected[f"{step}.noise_pred_guided"], pipeline_expected[f"{step}.latents"]
            prev = scheduler.step(noise_pred, t, latents).prev_sample
            # A few multiply-adds per element: the error scales with the operands, not with the result.
            scale = max(float(noise_pred.abs().max()), float(latents.abs().max()))
            assert_close_to_official(f"{step}.prev_latents", prev, pipeline_expected[f"{step}.prev_latents"], ELEMENTWISE, scale)


def test_ddim_configuration_is_upstreams():
    config = make_scheduler().config
    assert type(make_scheduler()).__name__ == "DDIMScheduler"
    for option, value in {
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "linear", "clip_sample": False, "steps_offset": 1,
        "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
    }.items():
        assert config[option] == value, option


def _alpha_cumprod(scheduler, timestep) -> torch.Tensor:
    return scheduler.alphas_cumprod[int(round(float(timestep)))]


def _sample(name: str, model, shape, num_steps: int = 10, seed: int = 0) -> torch.Tensor:
    """The diffusers sampling contract every EmoCAST loop follows (see emocast_core.scheduling)."""
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        latents = scheduler.step(model(model_input, t, scheduler, generator), t, latents).prev_sample
        assert torch.isfinite(latents).all(), f"{name}: non-finite latents at t={float(t)}"
    return latents


SHAPE = (1, 4, 3, 8, 8)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_loop_stays_finite_with_random_predictions(name):
    def random_v(model_input, t, scheduler, generator):
        return torch.randn(model_input.shape, generator=generator)

    latents = _sample(name, random_v, SHAPE)
    assert latents.abs().max() < 100


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_loop_reaches_the_data_with_the_exact_v(name):
    """A model that knows the clean sample x0 predicts v = (sqrt(a) x_t - x0) / sqrt(1 - a); every
    correctly configured v-prediction sampler must then end on x0, from the zero-SNR first step on."""
    clean = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))

    def exact_v(model_input, t, scheduler, generator):
        alpha = _alpha_cumprod(scheduler, t)
        return (alpha.sqrt() * model_input - clean) / (1 - alpha).sqrt()

    latents = _sample(name, exact_v, SHAPE)
    torch.testing.assert_close(latents, clean, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_all_samplers_share_the_noise_schedule(name):
    scheduler = make_scheduler(name)
    scheduler.set_timesteps(25)
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.rescale_betas_zero_snr
    assert int(scheduler.timesteps[0]) == 999  # trailing: starts at the zero-SNR step
    reference = make_scheduler("ddim").alphas_cumprod
    # Identical except the terminal value, which the multistep / Euler schedulers set to 2**-24.
    torch.testing.assert_close(scheduler.alphas_cumprod[:-1], reference[:-1])
    assert scheduler.alphas_cumprod[-1] <= 2**-24


def test_overrides_and_unknown_names():
    assert make_scheduler("ddim", timestep_spacing="leading").config.timestep_spacing == "leading"
    with pytest.raises(ValueError, match="dpmpp_2m"):
        make_scheduler("plms")
    with pytest.raises(ValueError, match="no option"):
        make_scheduler("euler", solver_order=3)


def test_each_call_makes_a_fresh_scheduler():
    assert make_scheduler("dpmpp_2m") is not make_scheduler("dpmpp_2m")
