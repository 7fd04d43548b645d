"""The full-size network has exactly the released net.pth's keys and shapes (official manifest)."""
from __future__ import annotations

import json

import pytest

from emocast_core.checkpoint import compare_keys
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet


@pytest.fixture(scope="module")
def manifest(official_dir):
    return json.loads((official_dir / "emocast_net_manifest.json").read_text())


@pytest.fixture(scope="module")
def meta_net():
    return EmoCASTNet.build(EmoCASTConfig.sd15(), device="meta")


def test_state_dict_matches_manifest(meta_net, manifest):
    ours = meta_net.state_dict()
    released = {key: _Shape(shape) for key, shape in manifest["keys"].items()}
    report = compare_keys(released, ours)
    first = lambda items: items[:5]  # noqa: E731
    assert not report.missing, f"{len(report.missing)} released keys we lack: {first(report.missing)}"
    assert not report.unexpected, f"{len(report.unexpected)} keys the released file lacks: {first(report.unexpected)}"
    assert not report.shape_mismatches, f"{len(report.shape_mismatches)} shape mismatches (ours vs released): {first(report.shape_mismatches)}"
    assert len(ours) == manifest["num_keys"]
    assert sum(tensor.numel() for tensor in ours.values()) == manifest["total_parameters"]


def test_buffers_match_manifest(meta_net, manifest):
    assert sorted(name for name, _ in meta_net.named_buffers()) == sorted(manifest["buffers"])


def test_meta_build_allocates_nothing(meta_net):
    tensors = [*meta_net.parameters(), *meta_net.buffers()]
    assert tensors and all(tensor.is_meta for tensor in tensors)


class _Shape:
    """Stands in for a manifest entry where `compare_keys` expects a tensor (it reads `.shape`)."""

    def __init__(self, shape):
        self.shape = tuple(shape)
