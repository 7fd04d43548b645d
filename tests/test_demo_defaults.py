"""What `generate --demo` fills in when an option is left out (no generation: `make_video` is replaced)."""
from __future__ import annotations

import pytest

from emocast_core import generate
from emocast_core.cli import build_parser


def _request_made_by(monkeypatch, tmp_path, *options: str):
    made = []
    monkeypatch.setattr(generate, "make_video", lambda request, **kwargs: made.append(request) or request.out)
    args = build_parser().parse_args(["generate", "--demo", "--out", str(tmp_path / "demo.mp4"), *options])
    assert args.handler(args) == 0
    (request,) = made
    return request


def test_demo_cross_fades_clips_by_default(monkeypatch, tmp_path):
    request = _request_made_by(monkeypatch, tmp_path)
    assert request.generation.overlap == generate.DEMO_OVERLAP == 2
    assert request.generation.clip_length == 8  # the bundle's: the overlap is a quarter of a clip


@pytest.mark.parametrize("asked", ["0", "4"])
def test_demo_keeps_an_asked_overlap(monkeypatch, tmp_path, asked):
    assert _request_made_by(monkeypatch, tmp_path, "--overlap", asked).generation.overlap == int(asked)


def test_demo_overlap_fits_a_short_clip_length(monkeypatch, tmp_path):
    assert _request_made_by(monkeypatch, tmp_path, "--clip-length", "2").generation.overlap == 1


def test_released_weights_keep_upstreams_overlap():
    args = build_parser().parse_args(["generate", "--image", "p.png", "--audio", "s.wav", "--models", "m",
                                      "--out", "x.mp4"])
    assert generate.request_from_args(args).generation.overlap == 0


def test_demo_samples_with_the_fast_preset_unless_told_otherwise(monkeypatch, tmp_path):
    fast = generate.SAMPLING_PRESETS[generate.DEMO_SPEED]
    made = _request_made_by(monkeypatch, tmp_path).generation
    assert (made.sampler, made.num_inference_steps) == (fast.sampler, fast.num_inference_steps) == ("ddim_matched", 13)
    upstream = _request_made_by(monkeypatch, tmp_path, "--speed", "upstream").generation
    assert (upstream.sampler, upstream.num_inference_steps) == ("ddim", 40)
    assert _request_made_by(monkeypatch, tmp_path, "--steps", "5").generation.num_inference_steps == 5


def test_released_weights_sample_as_upstream_unless_told_otherwise():
    base = ["generate", "--image", "p.png", "--audio", "s.wav", "--models", "m", "--out", "x.mp4"]
    made = generate.request_from_args(build_parser().parse_args(base)).generation
    assert (made.sampler, made.num_inference_steps, made.guidance.active_fraction) == ("ddim", 40, 1.0)
    fast = generate.request_from_args(build_parser().parse_args(base + ["--speed", "fast", "--sampler", "unipc"])).generation
    assert (fast.sampler, fast.num_inference_steps) == ("unipc", 13)  # an explicit option wins over the preset


@pytest.mark.parametrize("options, environment, expected", [
    ((), {}, 1),  # the demo's default: its network is too small for two threads
    (("--threads", "2"), {}, 2),  # an asked count is kept
    ((), {"OMP_NUM_THREADS": "2"}, None),  # so is the environment's: torch's own choice stands
])
def test_demo_computes_with_one_thread_unless_told_otherwise(monkeypatch, tmp_path, options, environment, expected):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(generate, "make_video", lambda request, **kwargs: request.out)
    from emocast_core.cli import run_command

    assert run_command(build_parser(), ["generate", "--demo", "--out", str(tmp_path / "demo.mp4"), *options]) == 0
    assert calls[-1:] == ([] if expected is None else [expected])


def test_demo_anchors_colours_unless_told_not_to(monkeypatch, tmp_path):
    assert _request_made_by(monkeypatch, tmp_path).generation.colour_anchor is generate.DEMO_COLOUR_ANCHOR is True
    assert _request_made_by(monkeypatch, tmp_path, "--no-colour-anchor").generation.colour_anchor is False


def test_released_weights_do_not_anchor_colours_unless_asked():
    base = ["generate", "--image", "p.png", "--audio", "s.wav", "--models", "m", "--out", "x.mp4"]
    assert generate.request_from_args(build_parser().parse_args(base)).generation.colour_anchor is False
    assert generate.request_from_args(build_parser().parse_args(base + ["--colour-anchor"])).generation.colour_anchor is True


def test_demo_turns_the_audio_off_in_silent_clips_unless_told_not_to(monkeypatch, tmp_path):
    made = _request_made_by(monkeypatch, tmp_path).generation
    assert made.audio_off_in_silence is generate.DEMO_AUDIO_OFF_IN_SILENCE is True
    assert _request_made_by(monkeypatch, tmp_path, "--no-audio-off-in-silence").generation.audio_off_in_silence is False
    base = ["generate", "--image", "p.png", "--audio", "s.wav", "--models", "m", "--out", "x.mp4"]
    assert generate.request_from_args(build_parser().parse_args(base)).generation.audio_off_in_silence is False


def test_demo_mixes_the_portrait_into_motion_frames_unless_told_otherwise(monkeypatch, tmp_path):
    made = _request_made_by(monkeypatch, tmp_path).generation
    assert made.motion_reference_mix == generate.DEMO_MOTION_REFERENCE_MIX == 0.25
    assert _request_made_by(monkeypatch, tmp_path, "--motion-reference-mix", "0").generation.motion_reference_mix == 0.0
    base = ["generate", "--image", "p.png", "--audio", "s.wav", "--models", "m", "--out", "x.mp4"]
    assert generate.request_from_args(build_parser().parse_args(base)).generation.motion_reference_mix == 0.0
    assert generate.request_from_args(build_parser().parse_args(base + ["--motion-reference-mix", "0.5"])).generation.motion_reference_mix == 0.5
