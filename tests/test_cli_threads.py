"""The command line's CPU threads: `--threads` reaches torch, and waiting threads sleep (OMP_WAIT_POLICY).

Each check runs in a fresh interpreter: the thread count and the OpenMP wait policy are process-wide,
and the wait policy only counts when it is set before torch is imported.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# Runs `python -m emocast_core ARGS` in this interpreter (runpy, as `-m` does) and prints, as the last
# line, the wait policy torch's import saw (recorded by an import hook) and the one set afterwards.
RUN_MAIN_RECORDING_WAIT_POLICY = """
import os, runpy, sys

seen_by_torch = []

class RecordWaitPolicyAtTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen_by_torch:
            seen_by_torch.append(os.environ.get("OMP_WAIT_POLICY"))
        return None  # the normal finders do the import

sys.meta_path.insert(0, RecordWaitPolicyAtTorchImport())
sys.argv = ["emocast_core", *sys.argv[1:]]
try:
    runpy.run_module("emocast_core", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
print(f"{seen_by_torch[0] if seen_by_torch else 'torch-not-imported'} {os.environ.get('OMP_WAIT_POLICY')}")
"""

# Runs the command line's `main` with ARGS, then prints its exit code and torch's thread count.
RUN_CLI_PRINTING_THREADS = """
import sys
import torch
from emocast_core.cli import main

code = main(sys.argv[1:])
print(code, torch.get_num_threads())
"""


def _python(script: str, *args: str, env_updates: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name, value in env_updates.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _last_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_command_line_sets_passive_wait_policy_before_torch_is_imported():
    result = _python(RUN_MAIN_RECORDING_WAIT_POLICY, "--version", env_updates={"OMP_WAIT_POLICY": None})
    assert "emocast_core" in result.stdout  # --version really ran, through the command line
    assert _last_line(result) == "PASSIVE PASSIVE"


def test_command_line_keeps_the_users_wait_policy():
    result = _python(RUN_MAIN_RECORDING_WAIT_POLICY, "--version", env_updates={"OMP_WAIT_POLICY": "ACTIVE"})
    assert _last_line(result) == "ACTIVE ACTIVE"


def test_importing_the_library_leaves_the_wait_policy_alone():
    script = "import os, emocast_core.cli, emocast_core.generate; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    assert _last_line(_python(script, env_updates={"OMP_WAIT_POLICY": None})) == "unset"


# OMP_NUM_THREADS fixes torch's default, so each case asks for a count that differs from it.
@pytest.mark.parametrize("position", ["before the command", "after the command"])
@pytest.mark.parametrize("default_threads, asked", [("2", 1), ("1", 3)])
def test_threads_option_reaches_torch(position, default_threads, asked):
    option = ["--threads", str(asked)]
    # `generate` without inputs stops with a usage error (exit 2) after the options are applied.
    args = [*option, "generate", "--out", "never.mp4"] if position == "before the command" \
        else ["generate", *option, "--out", "never.mp4"]
    result = _python(RUN_CLI_PRINTING_THREADS, *args, env_updates={"OMP_NUM_THREADS": default_threads})
    assert _last_line(result) == f"2 {asked}"
    assert not (REPO_ROOT / "never.mp4").exists()


def test_without_threads_option_torch_keeps_its_default():
    result = _python(RUN_CLI_PRINTING_THREADS, "generate", "--out", "never.mp4", env_updates={"OMP_NUM_THREADS": "1"})
    assert _last_line(result) == "2 1"


@pytest.mark.parametrize("bad", ["0", "-2", "two"])
def test_bad_thread_count_is_refused_in_one_line(bad):
    result = _python(RUN_CLI_PRINTING_THREADS, "generate", "--threads", bad, "--out", "never.mp4",
                     env_updates={})
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "--threads" in message and "at least 1" in message and repr(bad) in message
