"""The side-by-side benchmark against the official code (benchmarks/official_compare.py) without the
official code: how it splits counted work into per step / per clip / per video, what its report says,
and that it refuses missing official inputs with one line before any slow work."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("official_compare_under_test", BENCHMARKS / "official_compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(compare, video, clip, step, clips, steps, decoder_rows=16):
    """Counts of a video with `clips` clips of `steps` steps, given per-unit costs."""
    def total(key):
        return video[key] + clips * clip[key] + clips * steps * step[key]

    modules = {name: {"calls": 0, "rows": 0, "input_shapes": []} for name in compare.COUNTED_MODULES}
    modules["denoiser"] = {"calls": clips * steps, "rows": 2 * clips * steps, "input_shapes": [[2, 4, 16, 16, 16]]}
    # A module called once per clip except the last, plus once per video: a negative per-video remainder.
    modules["vae_encoder"] = {"calls": 1 + (clips - 1), "rows": 1 + 2 * (clips - 1), "input_shapes": []}
    modules["vae_decoder"] = {"calls": 4 * clips, "rows": decoder_rows * clips, "input_shapes": []}
    return {"modules": modules, **{key: total(key) for key in ("flops", "ops", "casts", "copies")}}


def _counts(compare):
    video = {"flops": 500, "ops": 70, "casts": 1, "copies": 9}
    clip = {"flops": 3000, "ops": 300, "casts": 4, "copies": 20}
    step = {"flops": 10_000, "ops": 1000, "casts": 1, "copies": 50}
    runs = {"1 clip, 1 step": _run(compare, video, clip, step, 1, 1),
            "1 clip, 2 steps": _run(compare, video, clip, step, 1, 2),
            "2 clips, 1 step": _run(compare, video, clip, step, 2, 1)}
    return runs, video, clip, step


def test_work_is_split_into_step_clip_and_video(compare):
    runs, video, clip, step = _counts(compare)
    split = compare.per_unit_work(runs)
    assert split["per_step"] == step
    assert split["per_clip_excluding_steps"] == clip
    assert split["per_video_once"] == video
    denoiser = split["modules"]["denoiser"]
    assert denoiser["per_step"] == {"calls": 1, "rows": 2}
    assert denoiser["per_clip"] == {"calls": 0, "rows": 0} and denoiser["per_video"] == {"calls": 0, "rows": 0}
    encoder = split["modules"]["vae_encoder"]
    assert encoder["per_clip"] == {"calls": 1, "rows": 2}
    assert encoder["per_video"] == {"calls": 0, "rows": -1}
    assert split["modules"]["vae_decoder"]["per_clip"] == {"calls": 4, "rows": 16}


def test_report_states_the_measured_ratio_and_the_work(compare):
    runs, *_ = _counts(compare)
    work = {"official": {"runs": runs, **compare.per_unit_work(runs)}, "ours": {"runs": runs, **compare.per_unit_work(runs)}}
    results = {
        "date": "2026-12-03 12:00 UTC", "machine": "test CPU, 2 logical CPUs", "revision": "abc1234",
        "versions": {"official": {"torch": "2.13.0", "diffusers": "0.27.2"}, "ours": {"torch": "2.13.0", "diffusers": "0.42.1"}},
        "settings": {"frames": 32, "clip_length": 16, "motion_frames": 2, "steps": 40, "sampler": "ddim",
                     "guidance_scale": 3.5, "seed": 42, "threads": 1, "rounds": 3, "image_size": [128, 128]},
        # Round ratios 2.0, 1.5, 2.5; medians 2.0 / 1.0.
        "timing": {"official": {"cpu": [2.0, 1.5, 2.5], "wall": [3.0, 3.0, 3.0]},
                   "ours": {"cpu": [1.0, 1.0, 1.0], "wall": [1.5, 1.5, 1.5]}},
        "work": work, "video_max_abs_diff": 1.5e-4, "video_mean_abs_diff": 2e-6,
    }
    text = compare.official_report(results)
    assert "**Ours is 2.00x faster per frame than the official pipeline** (per-round ratios 1.50 - 2.50)" in text
    assert "max |ours - official| = 1.5e-04" in text
    assert "| denoiser (3D UNet) | 1 x 2 rows | - | - | 1 x 2 rows | - | - |" in text
    assert "| per step | official | 0.00 | 1000 | 1 | 50 |" in text
    assert "DDIM 40 steps" in text and "2 clips of 16 frames" in text


@pytest.mark.parametrize("argv, says", [
    ([], "give --official-src"),
    (["--official-src", "/nonexistent-emocast", "--official-python", sys.executable], "is not an EmoCAST work tree"),
])
def test_missing_official_code_is_refused_with_one_line(compare, argv, says):
    with pytest.raises(SystemExit) as stopped:
        compare.run(argv)
    message = str(stopped.value)
    assert says in message and "\n" not in message


def test_a_python_without_the_official_libraries_is_refused(compare, tmp_path):
    source = tmp_path / "EmoCAST"
    (source / "emocast" / "animate").mkdir(parents=True)
    (source / "emocast" / "animate" / "face_animate_text.py").write_text("")
    (source / "scripts").mkdir()
    (source / "scripts" / "inference.py").write_text("")
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named diffusers' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(SystemExit) as stopped:
        compare.run(["--official-src", str(source), "--official-python", str(broken)])
    assert "cannot import the official code's libraries: ModuleNotFoundError" in str(stopped.value)


def test_step_time_is_the_difference_to_the_one_step_video(compare):
    # 2 clips x 40 steps of 1.0 s plus 0.5 s per clip outside the steps; the 1-step video: 2 x (1.0 + 0.5).
    timing = {"cpu": [81 / 32, 90 / 32, 70 / 32], "cpu_one_step": [3 / 32, 2 / 32, 4 / 32]}
    split = compare.step_time_split(timing, frames=32, clips=2, steps=40)
    assert split["step"] == pytest.approx(1.0)
    assert split["clip"] == pytest.approx(0.5)
    assert split["share_in_steps"] == pytest.approx(80 / 81)
