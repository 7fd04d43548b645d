"""The nodes refuse bad input with the same checks as the command line, worded with the nodes' own
input names (``on_no_face = center``, not ``--no-face center``), before they touch a model.

Like ``test_nodes.py`` these need ComfyUI importable: set ``COMFYUI_DIR`` and run pytest with ComfyUI's
Python (``tests/test_comfyui_in_process.py`` does this from the project's Python).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from comfy_in_process import import_comfyui, load_pack, node_classes

REPO = Path(__file__).resolve().parents[1]


import_comfyui()


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def nodes(pack):
    return node_classes(pack)


@pytest.fixture(scope="module")
def input_error(pack):
    """The pack's own InputError class (the pack is loaded under its package name, as ComfyUI does)."""
    return sys.modules["emocast_pack.emocast_core.validation"].InputError


@pytest.fixture(scope="module")
def demo_choice(pack):
    return sys.modules["emocast_pack.nodes.paths"].DEMO_CHOICE


def run(node, **inputs):
    """Execute as ComfyUI does: on a clone of the class carrying the hidden inputs."""
    from comfy_api.latest import io

    return node.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(**inputs)


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).float()[None] / 255  # ComfyUI IMAGE [B, H, W, C]


def _audio(samples: np.ndarray, rate: int = 16000) -> dict:
    return {"waveform": torch.from_numpy(samples.astype(np.float32))[None, None], "sample_rate": rate}


def _reference(nodes, analyzer, image):
    return run(nodes["EmoCASTReferenceEncoder"], face_analyzer=analyzer, image=image, size=64, face_index=0,
               face_expand_ratio=1.2, on_no_face="error", crop_to_face=True)


def test_no_face_hint_names_the_node_option(nodes, input_error, demo_choice):
    from skimage import data as skimage_data

    analyzer = run(nodes["EmoCASTFaceAnalyzerLoader"], face_models=demo_choice, onnx_device="cpu").result[0]
    with pytest.raises(input_error) as refused:
        _reference(nodes, analyzer, _image(skimage_data.coffee()))
    message = str(refused.value)
    assert message.startswith("no face found in image") and "on_no_face = center" in message and "--" not in message
    # A real photograph works with the demo's face finder: cropped around the face.
    reference, crop, mask = _reference(nodes, analyzer, _image(skimage_data.astronaut())).result
    assert reference.face_found and crop.shape == (1, 64, 64, 3) and reference.crop.side < 512


def test_schedule_is_checked_when_the_prompt_is_queued(nodes):
    emotion_node = nodes["EmoCASTEmotionEncode"]
    assert emotion_node.validate_inputs(schedule="") is True
    assert emotion_node.validate_inputs(schedule="0: neutral\n2.5: happy @0.8") is True
    message = emotion_node.validate_inputs(schedule="0: happy\nlater: sad")
    assert isinstance(message, str) and message.startswith("schedule: line 2") and "--emotion-schedule" not in message


def test_emotion_text_is_checked_before_the_text_encoder_runs(nodes, input_error):
    with pytest.raises(input_error, match=r"^text is empty"):
        run(nodes["EmoCASTEmotionEncode"], text_encoder=None, preset="custom text", text="  ", intensity=1.0)


def test_sampler_settings_are_checked_before_the_model_loads(nodes, input_error):
    inputs = dict(model=None, reference=None, emotion=None, audio_features=SimpleNamespace(clip_length=8), seed=1,
                  steps=4, cfg=3.5, solver="ddim", overlap=8, audio_cfg=0.0, emotion_cfg=0.0, guidance_fraction=1.0,
                  pose_weight=1.0, face_weight=1.0, lip_weight=1.0, motion_frames=2)
    with pytest.raises(input_error, match=r"^overlap must be between 0 and 7, got 8"):
        run(nodes["EmoCASTSampler"], **inputs)


def test_too_short_audio_is_refused_and_silence_is_encoded_with_a_warning(nodes, input_error, demo_choice, caplog):
    features_node = nodes["EmoCASTAudioFeatures"]
    settings = dict(fps=25.0, start_time=0.0, duration=0.0, separate_vocals=False, clip_length=8)
    with pytest.raises(input_error, match=r"^audio holds only 0\.020 s"):
        run(features_node, audio_encoder=SimpleNamespace(vocal_separator=None), audio=_audio(np.zeros(320)), **settings)

    encoder = run(nodes["EmoCASTAudioEncoderLoader"], wav2vec2=demo_choice, precision="fp32",
                  vocal_separator="none").result[0]
    with caplog.at_level(logging.WARNING):
        features, used_audio, frame_count, fps = run(features_node, audio_encoder=encoder,
                                                     audio=_audio(np.zeros(16000)), **settings).result
    assert frame_count == 25 and features.silent and "silent" in caplog.text
