"""`python -m emocast_core generate` end to end on tiny models in the real folder layout."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from emocast_core.generate import GenerateRequest, generate_video
from emocast_core.loading import load_models
from emocast_core.model_files import resolve_model_paths
from emocast_core.pipeline import GenerationCancelled, GenerationConfig
from emocast_core.video import probe_video
from model_tree import TINY_IMAGE_SIZE, astronaut_rgb, build_models_tree

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, oracle_dir):
    root = tmp_path_factory.mktemp("generate")
    models = build_models_tree(root, oracle_dir)
    portrait = root / "portrait.jpg"
    Image.fromarray(astronaut_rgb()).save(portrait)
    speech = root / "speech.wav"
    shutil.copy(oracle_dir / "audio_features" / "input.wav", speech)
    return root, models, portrait, speech


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emocast_core", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


def test_generate_writes_mp4_with_audio_of_the_right_length(workspace):
    root, models, portrait, speech = workspace
    out = root / "out" / "video.mp4"
    out.parent.mkdir()
    result = _cli(
        "generate", "--image", str(portrait), "--audio", str(speech), "--preset", "happy", "--intensity", "0.8",
        "--models", str(models), "--out", str(out), "--steps", "2", "--clip-length", "8", "--size", str(TINY_IMAGE_SIZE),
        "--sampler", "dpmpp_2m", "--overlap", "2", "--device", "cpu",
    )
    assert result.returncode == 0, result.stderr
    info = probe_video(out)
    duration = 20800 / 16000  # the fixture's speech: 1.3 s
    assert info.num_frames == 33  # ceil(1.3 s x 25 fps)
    assert info.fps == 25 and (info.width, info.height) == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert info.has_audio and info.audio_codec == "aac"
    assert abs(info.audio_duration_s - info.num_frames / 25) < 0.03
    assert abs(info.duration_s - duration) < 0.05
    assert sorted(p.name for p in out.parent.iterdir()) == ["video.mp4"]  # no temporary files left


def test_missing_model_files_are_all_named_at_once(workspace, tmp_path):
    root, models, portrait, speech = workspace
    partial = tmp_path / "models"
    shutil.copytree(models / "emocast", partial / "emocast")
    result = _cli("generate", "--image", str(portrait), "--audio", str(speech), "--models", str(partial), "--out", str(tmp_path / "x.mp4"))
    assert result.returncode == 2
    for expected in ("sd-vae-ft-mse", "wav2vec2-base-960h", "glintr100.onnx", "scrfd_10g_bnkps.onnx", "clip"):
        assert expected in result.stderr
    assert not (tmp_path / "x.mp4").exists()


def test_help_explains_every_option():
    result = _cli("generate", "--help")
    assert result.returncode == 0
    for option in ("--image", "--audio", "--emotion", "--preset", "--intensity", "--emotion-schedule", "--models", "--out",
                   "--steps", "--cfg", "--seed", "--fps", "--overlap", "--sampler", "--device", "--dtype", "--paste-back"):
        assert option in result.stdout


@pytest.fixture(scope="module")
def loaded(workspace):
    root, models, portrait, speech = workspace
    return load_models(resolve_model_paths(models), device=torch.device("cpu"), dtype=torch.float32)


def test_paste_back_and_emotion_schedule(workspace, loaded, tmp_path):
    root, models, portrait, speech = workspace
    request = GenerateRequest(
        portrait, speech, tmp_path / "full.mp4", emotion_schedule="0: neutral; 0.6: angry @0.9", size=TINY_IMAGE_SIZE,
        paste_back=True, generation=GenerationConfig(num_inference_steps=1, clip_length=8),
    )
    info = probe_video(generate_video(loaded, request))
    height, width = astronaut_rgb().shape[:2]
    assert (info.width, info.height) == (width, height) and info.num_frames == 33


def test_cancelled_run_leaves_no_file(workspace, loaded, tmp_path):
    root, models, portrait, speech = workspace
    out = tmp_path / "cancelled.mp4"
    steps = []
    request = GenerateRequest(portrait, speech, out, emotion="sad", size=TINY_IMAGE_SIZE, generation=GenerationConfig(num_inference_steps=2, clip_length=8))
    with pytest.raises(GenerationCancelled):
        generate_video(loaded, request, progress=lambda e: steps.append(e), should_cancel=lambda: len(steps) >= 3)
    assert len(steps) == 3
    assert list(tmp_path.iterdir()) == []
