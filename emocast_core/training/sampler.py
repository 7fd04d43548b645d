"""Emotion-aware sampling, part 1: which clips make up the batches.

This is our interpretation of the paper's "emotion-aware sampling" (its text was not available; see
docs/training.md). Talking-head data is dominated by neutral speech, and MEAD-style data has three
intensity levels for every emotion but one for neutral, so plain uniform sampling shows the model
few strong emotions. The sampler balances emotion categories, then intensity levels inside each
emotion:

    w(e, i) = W(e) * V(i | e),   W(e) ∝ N_e^(1 - emotion_balance),   V(i | e) ∝ N_(e,i)^(1 - intensity_balance)

With both balances at 1 every emotion is equally likely and so is every level within it; at 0 every
clip is equally likely. Clips without a label form their own "unknown" category.

Batches are balanced, not only their expectation: the groups are scheduled with a deficit rule
(each position goes to the group furthest below its target share), so any window of consecutive
samples matches the target shares to within one sample per group. Clips inside a group are drawn
without replacement in a shuffled cycle.

The stream is a pure function of (seed, position): resuming at a position reproduces exactly the
samples an uninterrupted run would have seen, on any number of processes (process `rank` takes
positions rank, rank + world_size, ...). Each item is `(clip index, sample seed)`; the dataset
draws everything random about the sample (frames, reference) from the sample seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 64-bit seed from integers (SplitMix64 over the sequence): stable across runs and machines."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


@dataclass(frozen=True)
class SampleKey:
    """What the sampler hands the dataset: a clip and the seed of everything random about it."""

    clip_index: int
    seed: int


def group_weights(labels: Sequence[tuple[str, Optional[int]]], emotion_balance: float, intensity_balance: float) -> dict:
    """Target share of each (emotion, intensity) group; sums to 1."""
    counts: dict = {}
    for emotion, intensity in labels:
        counts[(emotion, intensity)] = counts.get((emotion, intensity), 0) + 1
    emotion_counts: dict = {}
    for (emotion, _), count in counts.items():
        emotion_counts[emotion] = emotion_counts.get(emotion, 0) + count
    emotion_mass = {e: n ** (1.0 - emotion_balance) for e, n in emotion_counts.items()}
    emotion_total = sum(emotion_mass.values())
    weights = {}
    for emotion in emotion_counts:
        levels = {key: n for key, n in counts.items() if key[0] == emotion}
        level_mass = {key: n ** (1.0 - intensity_balance) for key, n in levels.items()}
        level_total = sum(level_mass.values())
        for key, mass in level_mass.items():
            weights[key] = emotion_mass[emotion] / emotion_total * mass / level_total
    return weights


class EmotionBalancedSampler(Sampler):
    """Infinite, resumable stream of `SampleKey`s balanced over emotions and intensities.

    labels: (emotion, intensity) of every clip. epoch_size: positions per epoch (the group schedule
    and the in-group shuffles are redrawn each epoch; default: number of clips). start: the first
    global position this process yields (samples already consumed by all processes together).
    """

    def __init__(
        self,
        labels: Sequence[tuple[str, Optional[int]]],
        emotion_balance: float = 1.0,
        intensity_balance: float = 1.0,
        seed: int = 0,
        epoch_size: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        start: int = 0,
    ):
        if not labels:
            raise ValueError("the sampler needs at least one clip")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.labels = [(str(e), None if i is None else int(i)) for e, i in labels]
        self.seed = int(seed)
        self.epoch_size = int(epoch_size) or len(self.labels)
        self.num_replicas = num_replicas
        self.rank = rank
        self.start = int(start)
        self.weights = group_weights(self.labels, emotion_balance, intensity_balance)
        self.groups = sorted(self.weights, key=lambda key: (key[0], -1 if key[1] is None else key[1]))
        self.members = {key: [i for i, label in enumerate(self.labels) if label == key] for key in self.groups}

    def clip_probabilities(self) -> np.ndarray:
        """Long-run probability of drawing each clip."""
        probabilities = np.zeros(len(self.labels))
        for key, members in self.members.items():
            probabilities[members] = self.weights[key] / len(members)
        return probabilities

    def epoch_clips(self, epoch: int) -> list[int]:
        """The clip indices of one epoch, in order (all processes together)."""
        rng = np.random.default_rng(mix_seed(self.seed, epoch, 1))
        targets = np.array([self.weights[key] for key in self.groups])
        # Random, fixed-per-epoch tie-breaking so equal groups do not always come in the same order.
        priority = rng.permutation(len(self.groups)) * 1e-9
        counts = np.zeros(len(self.groups))
        cursors = {key: 0 for key in self.groups}
        cycles = {key: 0 for key in self.groups}
        orders = {}
        clips = []
        for position in range(self.epoch_size):
            deficit = targets * (position + 1) - counts + priority
            group_index = int(np.argmax(deficit))
            counts[group_index] += 1
            key = self.groups[group_index]
            if cursors[key] == 0:
                group_rng = np.random.default_rng(mix_seed(self.seed, epoch, 2, group_index, cycles[key]))
                orders[key] = group_rng.permutation(self.members[key])
            clips.append(int(orders[key][cursors[key]]))
            cursors[key] += 1
            if cursors[key] == len(self.members[key]):
                cursors[key], cycles[key] = 0, cycles[key] + 1
        return clips

    def keys_from(self, position: int) -> Iterator[SampleKey]:
        """The global stream from `position` on (every process's samples, interleaved)."""
        epoch, offset = divmod(position, self.epoch_size)
        while True:
            clips = self.epoch_clips(epoch)
            for index in range(offset, self.epoch_size):
                global_position = epoch * self.epoch_size + index
                yield SampleKey(clips[index], mix_seed(self.seed, global_position, 3))
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[SampleKey]:
        for position, key in enumerate(self.keys_from(self.start), start=self.start):
            if position % self.num_replicas == self.rank:
                yield key

    def __len__(self) -> int:
        # Infinite stream; a DataLoader only needs this for progress bars.
        return 2**62
