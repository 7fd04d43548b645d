"""The rules conftest gives every run: a skip fails in CI, and elsewhere the run names what was missing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SKIPPING_TEST = '''
import pytest

def test_needs_a_tool():
    pytest.skip("the frobnicator is not installed (apt-get install frobnicator)")

def test_fine():
    pass
'''


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copyfile(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SKIPPING_TEST)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_sample.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_skip_fails_in_ci(tmp_path):
    result = _run(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed, 1 passed" in result.stdout
    assert "skipped in CI, where nothing may be missing: the frobnicator is not installed" in result.stdout


def test_outside_ci_a_skip_is_named_once_in_the_summary(tmp_path):
    for ci in (None, "false"):
        result = _run(tmp_path, ci)
        assert result.returncode == 0, result.stdout
        assert "1 passed, 1 skipped" in result.stdout
        assert "1 test(s) skipped: the frobnicator is not installed (apt-get install frobnicator)" in result.stdout
