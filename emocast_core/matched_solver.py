"""A second-order multistep solver aimed at DDIM-40's picture rather than the exact ODE solution.

Upstream samples with DDIM (first order) on 40 trailing steps, and its videos are what "the EmoCAST
look" means. DDIM-40 is itself ~40 dB away from the exact solution of the sampling ODE (measured on
the official tiny model: DPM-Solver++ at 80 steps and DDIM at 160 agree with each other to 43 dB and
with DDIM-40 to 40.5 dB), so an accurate solver cannot get much closer to DDIM-40 than that, however
many steps it takes. This one reproduces DDIM-40's own discretisation error instead:

* its timesteps are a subset of DDIM-`target_steps`'s grid (intervals as equal as possible, the
  longer ones first, the last step exactly DDIM's last: from its final timestep to the clean image);
* each step is DPM-Solver++(2M) in data prediction, whose second-order term is exactly what a single
  first-order (DDIM) step over the same interval leaves out. The step keeps the part of that term
  that DDIM's k finer steps over the interval would *not* have left out: weight
  c = 1 - (sum of the k sub-steps' missing terms, carried to the interval's end) / (the whole
  interval's missing term); c = 1 - 1/k for equal sub-steps in log-SNR;
* the first step has no earlier prediction to form the second-order term from; its share is added
  at the second step, carried forward, from the difference the second step sees.

With as many steps as the target it is DDIM (every c is 0); beyond the target it is DDIM on that many
steps. docs/benchmarks.md has the PSNR against DDIM-40 by step count.

Follows the diffusers scheduler contract the pipeline uses (`set_timesteps`, `timesteps`,
`init_noise_sigma`, `scale_model_input`, `step`, `add_noise`). The coefficients are Python floats
computed in `set_timesteps`; `step` does tensor arithmetic on the latents only, so it never waits on
the device.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from diffusers import DDIMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin

# As diffusers' sigma-based solvers cap the zero-SNR step: its alpha_cumprod 0 makes log-SNR infinite.
ZERO_SNR_ALPHA_CUMPROD = 2.0 ** -24


def matched_intervals(num_steps: int, target_steps: int) -> list[int]:
    """How many of DDIM-`target_steps`'s steps each of the `num_steps` steps spans (the last spans 1:
    DDIM's own final step). Intervals as equal as possible, the longer ones first."""
    if num_steps >= target_steps:
        return [1] * num_steps
    if num_steps == 1:
        return [target_steps]
    spans, extra = divmod(target_steps - 1, num_steps - 1)
    return [spans + 1] * extra + [spans] * (num_steps - 1 - extra) + [1]


class DDIMMatchedScheduler(SchedulerMixin, ConfigMixin):
    """DPM-Solver++(2M) with its second-order term weighted to land on DDIM-`target_steps`'s
    trajectory (module docstring). Accepts the noise-schedule arguments of `DDIMScheduler`; only
    v-prediction and trailing timesteps (EmoCAST's) are supported."""

    order = 1
    init_noise_sigma = 1.0

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "linear",
        prediction_type: str = "v_prediction",
        rescale_betas_zero_snr: bool = True,
        timestep_spacing: str = "trailing",
        steps_offset: int = 1,
        target_steps: int = 40,
    ):
        if prediction_type != "v_prediction":
            raise ValueError(f"DDIMMatchedScheduler supports v_prediction only, got {prediction_type!r}")
        if timestep_spacing != "trailing":
            raise ValueError(f"DDIMMatchedScheduler follows DDIM's trailing grid, got timestep_spacing={timestep_spacing!r}")
        if target_steps < 1:
            raise ValueError(f"target_steps must be at least 1, got {target_steps}")
        # The DDIM it aims at, on the same noise schedule: its alpha_cumprod table and timestep grid.
        self._ddim = DDIMScheduler(
            num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end,
            beta_schedule=beta_schedule, prediction_type=prediction_type, rescale_betas_zero_snr=rescale_betas_zero_snr,
            timestep_spacing=timestep_spacing, steps_offset=steps_offset, clip_sample=False, set_alpha_to_one=True,
        )
        self.alphas_cumprod = self._ddim.alphas_cumprod  # the same table (float32), as every solver here
        # Coefficients are computed in float64 from it. Log-SNR needs a finite value at the zero-SNR
        # step; the updates themselves use the true 0.
        self._alphas_cumprod = self.alphas_cumprod.double()
        self._log_snr_alphas_cumprod = self._alphas_cumprod.clamp(min=ZERO_SNR_ALPHA_CUMPROD)
        self.timesteps = torch.tensor([], dtype=torch.long)
        self.num_inference_steps: Optional[int] = None
        self._reset()

    # --- schedule -------------------------------------------------------------------------------

    def _alpha_sigma(self, timestep: int) -> tuple[float, float]:
        """(alpha, sigma) at a timestep; timestep -1 is the clean image (alpha 1, sigma 0)."""
        if timestep < 0:
            return 1.0, 0.0
        alpha_cumprod = float(self._alphas_cumprod[timestep])
        return math.sqrt(alpha_cumprod), math.sqrt(1.0 - alpha_cumprod)

    def _log_snr(self, timestep: int) -> float:
        alpha_cumprod = float(self._log_snr_alphas_cumprod[timestep])
        return 0.5 * math.log(alpha_cumprod / (1.0 - alpha_cumprod))

    def _gain(self, start: int, stop: int) -> float:
        """The clean-image weight of a first-order step start -> stop: alpha_stop * (1 - e^-h), written
        without h so that it is exact from the zero-SNR step (where h is infinite)."""
        start_alpha, start_sigma = self._alpha_sigma(start)
        stop_alpha, stop_sigma = self._alpha_sigma(stop)
        return stop_alpha - start_alpha * stop_sigma / start_sigma

    def _ddim_grid(self, num_steps: int) -> list[int]:
        self._ddim.set_timesteps(num_steps)
        return [int(t) for t in self._ddim.timesteps]

    def set_timesteps(self, num_inference_steps: int, device: Union[str, torch.device, None] = None):
        target = self.config.target_steps
        if num_inference_steps >= target:
            grid, spans = self._ddim_grid(num_inference_steps), [1] * num_inference_steps
        else:
            grid, spans = self._ddim_grid(target), matched_intervals(num_inference_steps, target)
        starts = [sum(spans[:i]) for i in range(len(spans))]
        timesteps = [grid[i] for i in starts]
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.tensor(timesteps, dtype=torch.long, device=device)
        self._timestep_values = timesteps
        # Per step: the weight of the second-order term (0 for the clean-image step, which is DDIM's own).
        self._weights = [
            self._second_order_weight(grid[start:start + span + 1]) if start + span < len(grid) else 0.0
            for start, span in zip(starts, spans)
        ]
        self._reset()

    def _second_order_weight(self, sub_grid: list[int]) -> float:
        """c for the interval sub_grid[0] -> sub_grid[-1] that DDIM covers in len(sub_grid) - 1 steps."""
        # A first-order step over log-SNR h misses 1/2 * gain * h * (d clean / d log-SNR); the fine steps'
        # misses reach the interval's end scaled by sigma_end / sigma (the steps' factor on the sample).
        _, end_sigma = self._alpha_sigma(sub_grid[-1])
        whole = self._log_snr(sub_grid[-1]) - self._log_snr(sub_grid[0])
        missing_whole = self._gain(sub_grid[0], sub_grid[-1]) * whole
        missing_fine = 0.0
        for start, stop in zip(sub_grid[:-1], sub_grid[1:]):
            h = self._log_snr(stop) - self._log_snr(start)
            missing_fine += self._gain(start, stop) * h * (end_sigma / self._alpha_sigma(stop)[1])
        return 1.0 - missing_fine / missing_whole

    def _reset(self) -> None:
        self._step_index: Optional[int] = None
        # (step index, clean-image prediction, log-SNR step) of the last step taken.
        self._previous: Optional[tuple[int, torch.Tensor, float]] = None
        self._first_step_index: Optional[int] = None

    # --- diffusers contract ---------------------------------------------------------------------

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self._ddim.add_noise(original_samples, noise, timesteps)

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True):
        if self.num_inference_steps is None:
            raise RuntimeError("call set_timesteps before step")
        if self._step_index is None:
            # Once per clip (a run may start part-way through the schedule, e.g. denoise < 1).
            self._step_index = self._timestep_values.index(int(timestep))
            self._first_step_index = self._step_index
        index = self._step_index
        current = self._timestep_values[index]
        following = self._timestep_values[index + 1] if index + 1 < len(self._timestep_values) else -1
        alpha, sigma = self._alpha_sigma(current)
        clean = alpha * sample - sigma * model_output  # v-prediction -> clean-image prediction
        if following < 0:
            previous_sample = clean  # DDIM's last step: straight to its clean-image prediction
        else:
            next_sigma = self._alpha_sigma(following)[1]
            h = self._log_snr(following) - self._log_snr(current)
            gain = self._gain(current, following)
            previous_sample = (next_sigma / sigma) * sample + gain * clean  # the first-order (DDIM) step
            if self._previous is not None:
                _, previous_clean, previous_h = self._previous
                change = clean - previous_clean
                previous_sample = previous_sample + (0.5 * gain * self._weights[index] * h / previous_h) * change
                if index - 1 == self._first_step_index:
                    # The first step's second-order share, seen only now, carried over this step.
                    first_gain = self._gain(self._timestep_values[index - 1], current)
                    weight = self._weights[index - 1]
                    previous_sample = previous_sample + (next_sigma / sigma) * (0.5 * first_gain * weight) * change
            self._previous = (index, clean, h)
        self._step_index = index + 1
        if not return_dict:
            return (previous_sample,)
        return DDIMSchedulerOutput(prev_sample=previous_sample, pred_original_sample=clean)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
