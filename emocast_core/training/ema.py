"""Exponential moving average of the trainable weights (float32 shadow copies, keyed by net.pth name)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class EMAWeights:
    """shadow <- decay * shadow + (1 - decay) * weight, after every optimizer step.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) so early averages are not
    dominated by the initial weights. `state_dict` / `load_state_dict` make it part of a resumable
    checkpoint (accelerate's `register_for_checkpointing`).
    """

    def __init__(self, named_parameters: Iterable[tuple[str, nn.Parameter]], decay: float = 0.9999):
        self.decay = float(decay)
        self.num_updates = 0
        self.parameters = dict(named_parameters)
        self.shadow = {name: p.detach().float().clone() for name, p in self.parameters.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.current_decay()
        for name, parameter in self.parameters.items():
            shadow = self.shadow[name]
            shadow.mul_(decay).add_(parameter.detach().to(shadow.device, torch.float32), alpha=1.0 - decay)
        self.num_updates += 1

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """name -> averaged tensor (float32)."""
        return dict(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"the EMA state lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")
        for name in self.shadow:
            self.shadow[name] = state["shadow"][name].to(self.shadow[name].device, torch.float32).clone()
