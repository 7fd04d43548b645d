"""ComfyUI's own VAE, CLIP and audio encoder feeding the EmoCAST loaders, in a real ComfyUI server.

The released workflow (`emocast_basic`) on the tiny models, with Load VAE and Load CLIP connected to the
loaders' optional inputs (full-size files with random weights, see `comfy_core_model_files`); the file
lists beside those inputs are left on the demo entry, which a connected model replaces. Load Audio Encoder
gives wav2vec2-base's 12 x 768 features, which the tiny network cannot read, so it drives the audio
features node alone, up to its frame count. Started like the other server tests
(`comfy_fixtures.comfyui_server`, ``--cpu``); skips without ``COMFYUI_DIR`` (in CI: fails).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import comfy_core_model_files as ccm
import comfy_fixtures as cf
import pytest

DEMO_CHOICE = "demo (built-in synthetic model)"  # nodes.paths.DEMO_CHOICE, always listed

REPO = Path(__file__).resolve().parents[1]
PACK_DEPENDENCIES = ("diffusers", "transformers", "safetensors", "soxr", "onnxruntime", "cv2", "imageio_ffmpeg", "av")
SPEECH_SECONDS = 0.3
FPS = 25
SIZE = 64  # the SD-shaped VAE is slow on a CPU

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory, oracle_dir):
    comfy = cf.comfyui_dir_or_skip(PACK_DEPENDENCIES)
    root = tmp_path_factory.mktemp("comfyui_core_models")
    models = cf.build_models_tree(root, oracle_dir)
    ccm.write_sd_vae(models / "vae")
    ccm.write_clip_l(models / "text_encoders" / ccm.CLIP_L)
    ccm.write_wav2vec2_base(models / "audio_encoders")
    cf.write_inputs(root / "input", SPEECH_SECONDS)
    yield from cf.comfyui_server(comfy, root, REPO)


def comfy_models_prompt() -> dict:
    prompt = json.loads((REPO / "workflows" / "api" / "emocast_basic.api.json").read_text())
    for node in prompt.values():
        node["inputs"].update(cf.TINY_OVERRIDES.get(node["class_type"], {}))
    by_type = {node["class_type"]: key for key, node in prompt.items()}
    prompt["100"] = {"class_type": "VAELoader", "inputs": {"vae_name": f"{ccm.SD_VAE}.safetensors"}}
    prompt["101"] = {"class_type": "CLIPLoader", "inputs": {"clip_name": ccm.CLIP_L, "type": "stable_diffusion"}}
    prompt[by_type["EmoCASTModelLoader"]]["inputs"]["vae_model"] = ["100", 0]
    prompt[by_type["EmoCASTTextEncoderLoader"]]["inputs"].update(clip=["101", 0], text_encoder=DEMO_CHOICE)
    prompt[by_type["EmoCASTReferenceEncoder"]]["inputs"]["size"] = SIZE
    return prompt


def comfy_audio_encoder_prompt() -> dict:
    return {
        "1": {"class_type": "LoadAudio", "inputs": {"audio": cf.SPEECH}},
        "2": {"class_type": "AudioEncoderLoader", "inputs": {"audio_encoder_name": f"{ccm.WAV2VEC2_BASE}.safetensors"}},
        "3": {"class_type": "EmoCASTAudioEncoderLoader", "inputs": {
            "wav2vec2": DEMO_CHOICE, "precision": "auto", "vocal_separator": "none", "comfy_audio_encoder": ["2", 0]}},
        "4": {"class_type": "EmoCASTAudioFeatures", "inputs": {
            "audio_encoder": ["3", 0], "audio": ["1", 0], "fps": float(FPS), "start_time": 0.0, "duration": 0.0,
            "separate_vocals": False, "clip_length": 8}},
        "5": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},  # the frame count
    }


def test_workflow_with_comfyuis_vae_clip_and_audio_encoder_writes_the_video(server):
    from emocast_core.video import probe_video

    entry = server.wait(server.queue(comfy_models_prompt()))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000]
    files = [Path(item["subfolder"]) / item["filename"] for output in entry["outputs"].values()
             for kind in ("images", "videos", "gifs") for item in output.get(kind, []) if item.get("type") == "output"]
    assert len(files) == 1, entry["outputs"]
    info = probe_video(server.output / files[0])
    assert (info.num_frames, info.width, info.height) == (math.ceil(SPEECH_SECONDS * FPS), SIZE, SIZE)


def test_comfyuis_audio_encoder_drives_the_audio_features(server):
    entry = server.wait(server.queue(comfy_audio_encoder_prompt()))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000]
    assert entry["outputs"]["5"]["text"] == [str(math.ceil(SPEECH_SECONDS * FPS))]


def test_a_link_of_the_wrong_type_to_clip_is_refused_under_clip(server):
    prompt = comfy_models_prompt()
    text_loader = next(key for key, node in prompt.items() if node["class_type"] == "EmoCASTTextEncoderLoader")
    prompt[text_loader]["inputs"]["clip"] = ["100", 0]  # the VAE
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-core-models"})
    assert status == 400 and set(body["node_errors"]) == {text_loader}, body
    (error,) = body["node_errors"][text_loader]["errors"]
    assert error["extra_info"]["input_name"] == "clip" and "VAE" in error["details"], error
