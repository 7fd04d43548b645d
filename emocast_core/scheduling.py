"""The samplers EmoCAST can run with, configured in one place.

EmoCAST was trained with v-prediction on a zero-terminal-SNR schedule (linear betas 0.00085..0.012
rescaled so that alpha_cumprod(T) = 0), and upstream samples with DDIM (eta 0) on "trailing"
timesteps, which start exactly at t = 999, the pure-noise step zero-SNR training gives a meaning
to. Every scheduler here shares that noise schedule; only the solver differs.

All of them follow the diffusers contract; a sampling loop must use it fully, because not every
scheduler is DDIM-like:

    scheduler.set_timesteps(num_steps, device=...)
    latents = noise * scheduler.init_noise_sigma          # about 4096 for "euler", 1 otherwise
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        v = model(model_input, t)
        latents = scheduler.step(v, t, latents).prev_sample

A scheduler is stateful (multistep solvers keep past predictions): make one per video, or call
`set_timesteps` again before each clip.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# ZERO_SNR_ALPHA_CUMPROD: diffusers caps the zero-SNR step at this alpha_cumprod in its sigma-based
# solvers (sigma_max ~ 4096).
from .matched_solver import ZERO_SNR_ALPHA_CUMPROD, DDIMMatchedScheduler

SCHEDULER_NAMES: tuple[str, ...] = ("ddim", "ddim_matched", "dpmpp_2m", "dpmpp_3m", "unipc", "unipc_3", "euler")

# configs/inference/default.yaml `noise_scheduler_kwargs` of the official code.
UPSTREAM_NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "prediction_type": "v_prediction",
    # Zero terminal SNR. diffusers then sets alpha_cumprod(T) to 2**-24 instead of exactly 0 in the
    # multistep / Euler schedulers, so their log-SNR and sigma stay finite (sigma_max ~ 4096).
    "rescale_betas_zero_snr": True,
    # Start at t = 999 (the zero-SNR step); "leading"/"linspace" would skip it and start from an
    # image-like signal level the model never sees at inference.
    "timestep_spacing": "trailing",
    "steps_offset": 1,
}

_DPMPP = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "solver_type": "midpoint",
    # Karras / exponential sigma spacings are built from sigma_min..sigma_max; with zero SNR
    # sigma_max is the artificial 4096 and the spacing would waste most steps near it.
    "use_karras_sigmas": False,
    # Finish on a clean sample (sigma 0) like DDIM, with a lower-order last step: the high-order
    # update is unstable over the few last, widely spaced steps.
    "final_sigmas_type": "zero",
    "lower_order_final": True,
}
_UNIPC = {
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "use_karras_sigmas": False,
    "final_sigmas_type": "zero",
    "lower_order_final": True,
}

_SOLVER_SETTINGS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    # Upstream's sampler. eta is an argument of `step` (default 0.0 = deterministic DDIM).
    "ddim": (DDIMScheduler, {"clip_sample": False, "set_alpha_to_one": True}),
    # DDIM-40's picture in fewer steps: second order, steered to DDIM-40's trajectory (matched_solver.py).
    "ddim_matched": (DDIMMatchedScheduler, {"target_steps": 40}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, _DPMPP),
    # Third order: each step extrapolates from the last three predictions (fewer steps, same cost per step).
    "dpmpp_3m": (DPMSolverMultistepScheduler, {**_DPMPP, "solver_order": 3}),
    "unipc": (UniPCMultistepScheduler, _UNIPC),
    "unipc_3": (UniPCMultistepScheduler, {**_UNIPC, "solver_order": 3}),
    # Euler works on sigma-scaled latents: the loop must multiply the first noise by
    # `init_noise_sigma` and feed `scale_model_input(...)` to the model (see the module docstring).
    "euler": (
        EulerDiscreteScheduler,
        {"use_karras_sigmas": False, "timestep_type": "discrete", "interpolation_type": "linear", "final_sigmas_type": "zero"},
    ),
}


def make_scheduler(name: str = "ddim", **overrides: Any) -> SchedulerMixin:
    """A new scheduler `name` (one of `SCHEDULER_NAMES`) on EmoCAST's noise schedule.

    `overrides` replace any constructor argument of the diffusers class (e.g.
    `timestep_spacing="linspace"` for experiments); unknown arguments are an error rather than a
    silently ignored setting.
    """
    key = name.lower()
    if key not in _SOLVER_SETTINGS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    scheduler_class, solver_settings = _SOLVER_SETTINGS[key]
    accepted = set(inspect.signature(scheduler_class.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"{scheduler_class.__name__} has no option(s) {unknown}")
    settings = {**UPSTREAM_NOISE_SCHEDULE, **solver_settings, **overrides}
    unsupported = sorted(set(settings) - accepted)
    if unsupported:
        # Dropping e.g. `rescale_betas_zero_snr` would silently sample on the wrong noise schedule.
        raise RuntimeError(f"this diffusers version's {scheduler_class.__name__} lacks {unsupported}; update diffusers")
    return scheduler_class(**settings)




def noise_levels() -> torch.Tensor:
    """sigma_t = sqrt((1 - alpha_cumprod_t) / alpha_cumprod_t) for t = 0..999 on EmoCAST's noise schedule,
    float32, increasing. The zero-SNR step's sigma, infinite in theory, is capped as diffusers' Euler
    and DPM-Solver cap it, so that samplers working in sigma (k-diffusion, ComfyUI's) share its range."""
    alphas_cumprod = make_scheduler("ddim").alphas_cumprod.double().clone()
    alphas_cumprod[-1] = ZERO_SNR_ALPHA_CUMPROD
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()
