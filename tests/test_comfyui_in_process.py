"""Runs the in-process node tests (``tests/test_nodes*.py``) with ComfyUI's own Python.

Those tests import ComfyUI (``folder_paths``, ``comfy.model_management``, ``comfy_api``), which lives only
in the environment of ``COMFYUI_DIR`` (``COMFYUI_DIR/venv``, with the pack installed as the README says and
pytest, onnx and scikit-image for the tests). Here, under the project's Python, they are not collected
(see conftest); this test runs them there and fails with their report if any of them fails or skips.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import IN_PROCESS_COMFYUI_TESTS

TESTS = Path(__file__).resolve().parent
RUN_TIMEOUT = 1200  # a busy 2-core machine; the files take about a minute when idle

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


def _comfy_python() -> Path:
    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("COMFYUI_DIR is not set: build a ComfyUI with ../shared/comfyui/setup.sh DEST, install the pack into "
                    "DEST/venv (pip install -e . pytest onnx scikit-image) and set COMFYUI_DIR=DEST")
    python = Path(value) / "venv" / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"COMFYUI_DIR={value} has no venv/bin/python")
    return python


def test_in_process_node_tests_pass_under_comfyui_python():
    python = _comfy_python()
    files = sorted(str(path) for path in TESTS.glob(IN_PROCESS_COMFYUI_TESTS))
    assert files, f"no {IN_PROCESS_COMFYUI_TESTS} in {TESTS}"
    # The child inherits CI, so a skip inside it fails there as it would here.
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *files],
        cwd=TESTS.parent, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=dict(os.environ),
    )
    tail = "\n".join((result.stdout + result.stderr).splitlines()[-60:])
    assert result.returncode == 0, f"in-process node tests failed under {python}:\n{tail}"
    assert " passed" in result.stdout and " skipped" not in result.stdout, tail
    sys.stdout.write(tail + "\n")
