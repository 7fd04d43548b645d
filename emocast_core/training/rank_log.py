"""What each process of a training run trained on, and the weights it ended with.

`log.jsonl` is written by the main process alone. In data-parallel training (`accelerate launch`,
`torchrun`) the processes must read disjoint parts of the sample stream (`sampler.py`) and must still
hold the same weights after every step; a mistake in either goes unnoticed in the loss curve. Each
process therefore appends to its own `ranks/rank-N.jsonl` (N = process index):

    {"step": 1, "samples": [[clip_index, sample_seed], ...]}      one line per optimizer step
    {"final_step": 2, "weight_sums": {"parameter name": sum, ...}}  once, when the run ends

A sample is identified by its clip and its sample seed (which fixes its frames, reference and
caption). The weight sums are per trainable tensor, as this process holds it; comparing the files of
two processes names the first tensor that went out of sync. They cost one device sync per run.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch


class RankLog:
    """Appends this process's samples per step and its final weight sums to `ranks/rank-N.jsonl`."""

    def __init__(self, output_dir: Path, process_index: int):
        self.path = Path(output_dir) / "ranks" / f"rank-{process_index}.jsonl"
        self._step_samples: list[list[int]] = []

    def watch(self, batches: Iterator[dict]) -> Iterator[dict]:
        """Passes the loader's batches through, noting the samples of each as it is consumed."""
        for batch in batches:
            self._step_samples += [[int(clip), int(seed)] for clip, seed in zip(batch["clip_index"], batch["sample_seed"])]
            yield batch

    def end_step(self, step: int) -> None:
        self._append({"step": step, "samples": self._step_samples})
        self._step_samples = []

    def end_run(self, step: int, named_parameters: Sequence[tuple[str, torch.Tensor]]) -> None:
        # float32 sums on the parameters' own device (MPS has no float64), one transfer for all.
        sums = torch.stack([p.detach().float().sum() for _, p in named_parameters]).tolist() if named_parameters else []
        self._append({"final_step": step, "weight_sums": {name: value for (name, _), value in zip(named_parameters, sums)}})

    def _append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
