"""Runs the numeric parity tests under every CPU instruction set and thread count torch can use here.

    python tests/parity_matrix.py            # all combinations; exits 1 if any fails
    python tests/parity_matrix.py -k ddim    # extra arguments go to pytest

Float32 results move in the last bits with the kernel torch picks (``ATEN_CPU_CAPABILITY``: scalar
``default``, ``avx2``, ``avx512``, or unset = the best this CPU has) and with the number of threads; the
tolerances in ``tests/tolerances.py`` must absorb that. Each combination runs in its own process,
because torch reads ``ATEN_CPU_CAPABILITY`` once, at import. A capability the CPU lacks falls back to
the best one it has, which the report shows.
"""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PARITY_TESTS = ["test_parity_net_forward.py", "test_pipeline.py", "test_scheduling.py", "test_audio.py", "test_masks.py"]
CAPABILITIES = ["default", "avx2", "avx512", None]  # None: torch's own choice for this CPU
THREADS = [1, 2]


def _kernel_in_use(env: dict) -> str:
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return result.stdout.strip() or result.stderr.strip().splitlines()[-1]


def main(pytest_args: list[str]) -> int:
    rows, failed = [], False
    for capability, threads in itertools.product(CAPABILITIES, THREADS):
        env = dict(os.environ, EMOCAST_TEST_THREADS=str(threads))
        env.pop("ATEN_CPU_CAPABILITY", None)
        if capability is not None:
            env["ATEN_CPU_CAPABILITY"] = capability
        label = f"ATEN_CPU_CAPABILITY={capability or '(native)'} threads={threads} -> kernels {_kernel_in_use(env)}"
        print(f"== {label}", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY_TESTS, *pytest_args],
            cwd=TESTS, env=env, capture_output=True, text=True,
        )
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        rows.append((label, "ok" if result.returncode == 0 else "FAILED", summary))
        if result.returncode != 0:
            failed = True
            print(result.stdout[-4000:], result.stderr[-2000:], sep="\n")
    print("\nparity matrix:")
    for label, status, summary in rows:
        print(f"  {status:6} {label}: {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
