"""Shared test fixtures.

The official oracle folder (tiny model, inputs and expected outputs made by the upstream code) is
read from ``EMOCAST_ORACLE_DIR`` when set, else from ``../shared/fixtures/official/tiny_a`` beside the
repository. Tests that need it skip with that reason when neither exists.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ORACLE_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "official" / "tiny_a"
OFFICIAL_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "official"


def _oracle_dir() -> Path:
    return Path(os.environ.get("EMOCAST_ORACLE_DIR", DEFAULT_ORACLE_DIR))


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    path = _oracle_dir()
    if not (path / "tiny_config.json").is_file():
        pytest.skip(f"no official oracle folder at {path} (set EMOCAST_ORACLE_DIR)")
    return path


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not (OFFICIAL_DIR / "emocast_net_manifest.json").is_file():
        pytest.skip(f"no official fixtures at {OFFICIAL_DIR}")
    return OFFICIAL_DIR


@pytest.fixture(scope="session", autouse=True)
def _single_thread():
    # The oracle tolerances were measured single-threaded, and on a busy 2-core machine extra
    # intra-op threads make tiny models far slower, not faster. Session-wide, so module-scoped
    # fixtures compute with the same thread count as the tests that compare against them.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
