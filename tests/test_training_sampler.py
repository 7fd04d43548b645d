"""Emotion-aware clip sampling: balance, determinism, resuming and sharding across processes."""
from __future__ import annotations

from collections import Counter
from itertools import islice

import numpy as np
import pytest

from emocast_core.training.sampler import EmotionBalancedSampler, group_weights

# A MEAD-like, badly skewed set: many neutral clips (one level), few strong emotions.
SKEWED = (
    [("neutral", 1)] * 40
    + [("happy", 1)] * 12 + [("happy", 2)] * 6 + [("happy", 3)] * 2
    + [("sad", 1)] * 5 + [("sad", 3)] * 1
    + [("angry", 2)] * 3
    + [("unknown", None)] * 7
)


def emotion_of(labels, keys):
    return [labels[key.clip_index][0] for key in keys]


def test_full_balance_makes_every_emotion_and_level_equally_likely():
    weights = group_weights(SKEWED, 1.0, 1.0)
    per_emotion = Counter()
    for (emotion, _), weight in weights.items():
        per_emotion[emotion] += weight
    assert all(value == pytest.approx(1 / 5) for value in per_emotion.values())
    assert weights[("happy", 3)] == pytest.approx(weights[("happy", 1)]) == pytest.approx(1 / 15)
    assert weights[("sad", 3)] == pytest.approx(1 / 10)


def test_zero_balance_is_uniform_over_clips():
    sampler = EmotionBalancedSampler(SKEWED, 0.0, 0.0, seed=1)
    np.testing.assert_allclose(sampler.clip_probabilities(), np.full(len(SKEWED), 1 / len(SKEWED)))


def test_every_batch_is_balanced_across_emotions_and_intensities():
    sampler = EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=3, epoch_size=600)
    keys = list(islice(iter(sampler), 600))
    emotions = emotion_of(SKEWED, keys)
    # Any 10 consecutive samples (a batch) hold each of the 5 emotions exactly twice.
    for start in range(0, 600, 10):
        assert set(Counter(emotions[start:start + 10]).values()) == {2}
    # Within an emotion the levels are balanced too, although level 3 has 2 clips and level 1 twelve.
    happy_levels = Counter(SKEWED[key.clip_index][1] for key in keys if SKEWED[key.clip_index][0] == "happy")
    assert max(happy_levels.values()) - min(happy_levels.values()) <= 1
    # Without balance, neutral dominates as in the data.
    plain = emotion_of(SKEWED, islice(iter(EmotionBalancedSampler(SKEWED, 0.0, 0.0, seed=3, epoch_size=600)), 600))
    assert Counter(plain)["neutral"] == pytest.approx(600 * 40 / 76, abs=2)


def test_partial_balance_interpolates():
    shares = {b: group_weights(SKEWED, b, 1.0) for b in (0.0, 0.5, 1.0)}
    neutral = {b: w[("neutral", 1)] for b, w in shares.items()}
    assert neutral[0.0] > neutral[0.5] > neutral[1.0] == pytest.approx(0.2)


def test_clips_within_a_group_are_drawn_without_replacement():
    sampler = EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=5, epoch_size=300)
    happy_1 = [k.clip_index for k in islice(iter(sampler), 300) if SKEWED[k.clip_index] == ("happy", 1)]
    first_cycle = happy_1[:12]
    assert sorted(first_cycle) == [i for i, label in enumerate(SKEWED) if label == ("happy", 1)]


def test_stream_is_deterministic_and_resumable():
    sampler = EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=7, epoch_size=50)
    full = list(islice(iter(sampler), 160))
    assert full == list(islice(iter(EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=7, epoch_size=50)), 160))
    resumed = EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=7, epoch_size=50, start=73)
    assert list(islice(iter(resumed), 87)) == full[73:]
    assert full != list(islice(iter(EmotionBalancedSampler(SKEWED, 1.0, 1.0, seed=8, epoch_size=50)), 160))
    assert len({key.seed for key in full}) == len(full)  # each position has its own sample seed


def test_processes_share_one_stream_without_overlap():
    single = list(islice(iter(EmotionBalancedSampler(SKEWED, seed=2, epoch_size=40)), 90))
    ranks = [list(islice(iter(EmotionBalancedSampler(SKEWED, seed=2, epoch_size=40, num_replicas=3, rank=r)), 30)) for r in range(3)]
    interleaved = [ranks[p % 3][p // 3] for p in range(90)]
    assert interleaved == single
