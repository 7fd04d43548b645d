"""Shared test fixtures and the rules every test run follows.

* The official oracle folder (tiny model, inputs and expected outputs made by the upstream code) is
  read from ``EMOCAST_ORACLE_DIR`` when set, else from ``../shared/fixtures/official/tiny_a`` beside the
  repository. Every size and setting a parity test uses comes from that folder.
* Outside CI, a test whose fixture, tool or server is missing skips, and the run ends with one line per
  missing thing saying what it is and where it goes. **In CI (``CI`` set) a skip is a failure**: CI
  provides everything, so a skip there would hide a missing install step.
* ``tests/test_nodes*.py`` run the pack in process and need ComfyUI importable in the interpreter that
  runs them. Under any other Python they are not collected; `test_comfyui_in_process.py` runs them with
  ComfyUI's own Python (``COMFYUI_DIR/venv``) instead.
* Torch computes with ``EMOCAST_TEST_THREADS`` threads (default 1; ``tests/parity_matrix.py`` varies it).
"""
from __future__ import annotations

import importlib.util
import os
from collections import Counter
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
        pytest.skip(f"the official oracle folder (tiny_config.json, ...) is not at {path}: put shared/fixtures/official "
                    "beside the repository or set EMOCAST_ORACLE_DIR")
    return path


@pytest.fixture(scope="session")
def official_dir() -> Path:
    if not (OFFICIAL_DIR / "emocast_net_manifest.json").is_file():
        pytest.skip(f"the official manifest (emocast_net_manifest.json) is not in {OFFICIAL_DIR}: put shared/fixtures/official beside the repository")
    return OFFICIAL_DIR


IN_PROCESS_COMFYUI_TESTS = "test_nodes*.py"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def comfyui_importable() -> bool:
    """True when this interpreter can import ComfyUI (its checkout on sys.path via COMFYUI_DIR)."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    checkout = Path(comfy_dir) / "ComfyUI" if comfy_dir else None
    if checkout is None or not (checkout / "comfy").is_dir():
        return False
    # ComfyUI's own dependencies decide: its requirements live only in its venv.
    return all(importlib.util.find_spec(name) is not None for name in ("torchvision", "comfyui_frontend_package"))


IN_PROCESS_RUNNER = "test_comfyui_in_process.py"


def pytest_ignore_collect(collection_path, config):
    if collection_path.match(IN_PROCESS_COMFYUI_TESTS) and not comfyui_importable():
        return True  # run through test_comfyui_in_process.py with ComfyUI's Python
    if collection_path.name == IN_PROCESS_RUNNER and comfyui_importable():
        return True  # this interpreter is ComfyUI's: the node test files are collected directly
    return None


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


_missing: Counter = Counter()


def _judge_skip(report, where: str) -> None:
    """In CI a skip becomes a failure; elsewhere its reason is counted for the closing summary."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if running_in_ci():
        report.outcome = "failed"
        report.longrepr = f"{where} skipped in CI, where nothing may be missing: {reason}"
    else:
        _missing[reason] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _judge_skip(outcome.get_result(), item.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _judge_skip(outcome.get_result(), collector.nodeid)


def pytest_terminal_summary(terminalreporter):
    if _missing:
        terminalreporter.section("missing for a complete run")
        for reason, count in sorted(_missing.items(), key=lambda item: -item[1]):
            terminalreporter.write_line(f"{count} test(s) skipped: {reason}")


@pytest.fixture(scope="session", autouse=True)
def _thread_count():
    # The oracle tolerances were measured single-threaded, and on a busy 2-core machine extra
    # intra-op threads make tiny models far slower, not faster. Session-wide, so module-scoped
    # fixtures compute with the same thread count as the tests that compare against them.
    previous = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("EMOCAST_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(previous)
