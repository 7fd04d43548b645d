"""Tiny model files in ComfyUI's real folder layout, and inputs for the EmoCAST workflows.

`build_models_tree(root, oracle_dir)` writes a ``models/`` tree a ComfyUI with the EmoCAST pack can load:

    models/emocast/tiny_net.safetensors + tiny_net.json   (official tiny net + its architecture file)
    models/vae/tiny_vae/                                   (diffusers AutoencoderKL folder)
    models/audio_encoders/tiny_wav2vec2/                   (HF wav2vec2 folder)
    models/text_encoders/clip_l.safetensors                (ComfyUI clip_l layout, 768 wide, 1 layer)
    models/text_encoders/clip_l_tokenizer/                 (the 54-token tiny tokenizer)
    models/insightface/models/antelopev2/                  (tiny SCRFD / ArcFace / 2d106 ONNX files)

`write_inputs(folder)` writes ``emocast_portrait.png`` (skimage's astronaut, whose face the tiny detector
"finds") and ``emocast_speech.wav`` (a voiced, amplitude-modulated tone).

`TINY_OVERRIDES` are the widget values that make the user-facing workflows run on these files quickly.
"""
from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np

PORTRAIT = "emocast_portrait.png"
SPEECH = "emocast_speech.wav"
SPEECH_SECONDS = 0.9
SPEECH_RATE = 22050

# class_type -> input -> value, applied to the API workflows before they are queued.
TINY_OVERRIDES = {
    "EmoCASTModelLoader": {"checkpoint": "emocast/tiny_net.safetensors", "vae": "vae/tiny_vae", "precision": "fp32"},
    "EmoCASTTextEncoderLoader": {"text_encoder": "text_encoders/clip_l.safetensors", "tokenizer": "auto"},
    "EmoCASTAudioEncoderLoader": {"wav2vec2": "audio_encoders/tiny_wav2vec2", "precision": "fp32", "vocal_separator": "none"},
    "EmoCASTFaceAnalyzerLoader": {"face_models": "insightface/models/antelopev2", "onnx_device": "cpu"},
    "EmoCASTReferenceEncoder": {"size": 128},
    "EmoCASTAudioFeatures": {"clip_length": 8},
    "EmoCASTSampler": {"steps": 1, "motion_frames": 2},
    "EmoCASTSigmas": {"steps": 2},
    "LoadImage": {"image": PORTRAIT},
    "LoadAudio": {"audio": SPEECH},
}


def build_models_tree(root: Path, oracle_dir: Path) -> Path:
    from face_fixtures import ASTRONAUT_FACE, write_antelopev2

    models = root / "models"
    emocast = models / "emocast"
    emocast.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(oracle_dir / "tiny_net.safetensors", emocast / "tiny_net.safetensors")
    shutil.copyfile(oracle_dir / "tiny_config.json", emocast / "tiny_net.json")
    shutil.copytree(oracle_dir / "tiny_vae", models / "vae" / "tiny_vae", dirs_exist_ok=True)
    shutil.copytree(oracle_dir / "tiny_wav2vec2", models / "audio_encoders" / "tiny_wav2vec2", dirs_exist_ok=True)
    write_tiny_clip_l(models / "text_encoders")
    write_antelopev2(root, [ASTRONAUT_FACE], (512, 512))  # -> root/models/insightface/models/antelopev2
    return models


def write_tiny_clip_l(folder: Path, seed: int = 0) -> Path:
    """A CLIP text tower as wide as CLIP-L (768, the width EmoCAST's tokens have) but 1 layer deep, saved
    like ComfyUI's ``clip_l.safetensors``, with its tokenizer in ``clip_l_tokenizer/`` beside it."""
    import torch
    from safetensors.torch import save_file
    from tiny_clip import text_tower_tensors, write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=54, hidden_size=768, intermediate_size=64, num_hidden_layers=1, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
        bos_token_id=52, eos_token_id=53, pad_token_id=53,
    )
    torch.manual_seed(seed)
    model = CLIPTextModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(text_tower_tensors(model), str(folder / "clip_l.safetensors"))
    write_tiny_tokenizer(folder / "clip_l_tokenizer")
    return folder / "clip_l.safetensors"


def write_inputs(folder: Path, speech_seconds: float = SPEECH_SECONDS) -> None:
    from PIL import Image
    from skimage import data as skimage_data

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage_data.astronaut()).save(folder / PORTRAIT)
    write_speech(folder / SPEECH, speech_seconds)


def write_speech(path: Path, seconds: float, sample_rate: int = SPEECH_RATE) -> Path:
    """A voiced-sounding mono clip: a 140 Hz buzz with harmonics, modulated at syllable rate."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buzz = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    samples = (0.25 * buzz * envelope / np.abs(buzz).max() * 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(sample_rate)
        handle.writeframes(samples.tobytes())
    return path


# The pinned inputs of every EmoCAST node, in order, with their kind: "link" (a socket), "widget", or "seed"
# (a widget followed by its control_after_generate value in a UI workflow). Saved UI workflows store widget
# values by position, so reordering, removing or inserting a widget breaks them: change this only with a
# migration of the workflows.
NODE_INPUTS = {
    "EmoCASTModelLoader": [("checkpoint", "widget"), ("vae", "widget"), ("precision", "widget"), ("vae_model", "link")],
    "EmoCASTTextEncoderLoader": [("text_encoder", "widget"), ("tokenizer", "widget"), ("clip", "link")],
    "EmoCASTAudioEncoderLoader": [("wav2vec2", "widget"), ("precision", "widget"), ("vocal_separator", "widget"),
                                  ("comfy_audio_encoder", "link")],
    "EmoCASTFaceAnalyzerLoader": [("face_models", "widget"), ("onnx_device", "widget")],
    "EmoCASTReferenceEncoder": [("face_analyzer", "link"), ("image", "link"), ("size", "widget"), ("face_index", "widget"),
                                ("face_expand_ratio", "widget"), ("on_no_face", "widget"), ("crop_to_face", "widget")],
    "EmoCASTEmotionEncode": [("text_encoder", "link"), ("preset", "widget"), ("text", "widget"), ("intensity", "widget"),
                             ("schedule", "widget"), ("transition", "widget")],
    "EmoCASTAudioFeatures": [("audio_encoder", "link"), ("audio", "link"), ("fps", "widget"), ("start_time", "widget"),
                             ("duration", "widget"), ("separate_vocals", "widget"), ("clip_length", "widget")],
    "EmoCASTSampler": [("model", "link"), ("reference", "link"), ("emotion", "link"), ("audio_features", "link"),
                       ("seed", "seed"), ("steps", "widget"), ("cfg", "widget"), ("solver", "widget"), ("overlap", "widget"),
                       ("audio_cfg", "widget"), ("emotion_cfg", "widget"), ("guidance_fraction", "widget"),
                       ("pose_weight", "widget"), ("face_weight", "widget"), ("lip_weight", "widget"),
                       ("motion_frames", "widget"), ("latent", "link"), ("denoise", "widget"), ("compile", "widget"),
                       ("colour_anchor", "widget"), ("audio_off_in_silence", "widget"),
                       ("motion_reference_mix", "widget")],
    "EmoCASTSamplerCustom": [("model", "link"), ("reference", "link"), ("emotion", "link"), ("audio_features", "link"),
                             ("sampler", "link"), ("sigmas", "link"), ("seed", "seed"), ("cfg", "widget"),
                             ("overlap", "widget"), ("audio_cfg", "widget"), ("emotion_cfg", "widget"),
                             ("pose_weight", "widget"), ("face_weight", "widget"), ("lip_weight", "widget"),
                             ("motion_frames", "widget"), ("latent", "link"), ("compile", "widget"),
                             ("colour_anchor", "widget"), ("audio_off_in_silence", "widget"),
                             ("motion_reference_mix", "widget")],
    "EmoCASTSigmas": [("scheduler", "widget"), ("steps", "widget"), ("denoise", "widget")],
    "EmoCASTDecode": [("model", "link"), ("latent", "link"), ("frames_per_batch", "widget"), ("tiled", "widget")],
    "EmoCASTVideoCombine": [("images", "link"), ("fps", "widget"), ("filename_prefix", "widget"), ("crf", "widget"),
                            ("audio", "link")],
    "EmoCASTPasteBack": [("images", "link"), ("reference", "link"), ("feather", "widget")],
}
NODE_OUTPUTS = {
    "EmoCASTModelLoader": ["EMOCAST_MODEL"],
    "EmoCASTTextEncoderLoader": ["EMOCAST_TEXT_ENCODER"],
    "EmoCASTAudioEncoderLoader": ["EMOCAST_AUDIO_ENCODER"],
    "EmoCASTFaceAnalyzerLoader": ["EMOCAST_FACE_ANALYZER"],
    "EmoCASTReferenceEncoder": ["EMOCAST_REFERENCE", "IMAGE", "MASK"],
    "EmoCASTEmotionEncode": ["EMOCAST_EMOTION"],
    "EmoCASTAudioFeatures": ["EMOCAST_AUDIO_FEATURES", "AUDIO", "INT", "FLOAT"],
    "EmoCASTSampler": ["IMAGE", "FLOAT", "LATENT"],
    "EmoCASTSamplerCustom": ["IMAGE", "FLOAT", "LATENT"],
    "EmoCASTSigmas": ["SIGMAS"],
    "EmoCASTDecode": ["IMAGE"],
    "EmoCASTVideoCombine": ["VIDEO"],
    "EmoCASTPasteBack": ["IMAGE"],
}


# --- a real ComfyUI server for a test module -------------------------------------------------------------

SERVER_PACK_NAME = "comfyui-emocast"
SERVER_MODEL_KEYS = ("emocast", "vae", "text_encoders", "audio_encoders", "insightface", "checkpoints")
# Sized for a busy 2-core machine: an idle one starts ComfyUI in ~15 s and runs a tiny workflow in ~10 s.
SERVER_START_TIMEOUT = 300
RUN_TIMEOUT = 600


def comfyui_dir_or_skip(modules: tuple[str, ...] = ("diffusers", "transformers", "onnxruntime", "av")) -> Path:
    """``COMFYUI_DIR`` (a folder with ``ComfyUI/`` and ``venv/``), or skip the test with the reason."""
    import os
    import subprocess

    import pytest

    value = os.environ.get("COMFYUI_DIR")
    if not value:
        pytest.skip("COMFYUI_DIR is not set (a folder with ComfyUI/ and venv/); real-server tests skipped")
    root = Path(value)
    python = root / "venv" / "bin" / "python"
    if not (root / "ComfyUI" / "main.py").is_file() or not python.is_file():
        pytest.skip(f"COMFYUI_DIR={root} lacks ComfyUI/main.py or venv/bin/python")
    probe = subprocess.run([str(python), "-c", f"import {', '.join(modules)}"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        pytest.skip(f"the EmoCAST requirements are not installed in {root / 'venv'}")
    return root


class ComfyServer:
    """HTTP access to a server started by `comfyui_server`."""

    def __init__(self, base: str, root: Path, log: Path):
        self.base, self.root, self.log = base, root, log
        self.output = root / "output"

    def get(self, path: str):
        import json
        import urllib.request

        with urllib.request.urlopen(self.base + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict]:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.base + path, data=json.dumps(body or {}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read()
                return response.status, (json.loads(text) if text.strip() else {})
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def queue(self, prompt: dict, client_id: str = "emocast-tests", workflow: dict | None = None) -> str:
        """Queue an API prompt; ``workflow`` (the UI graph) travels as the browser sends it, in extra_pnginfo."""
        body = {"prompt": prompt, "client_id": client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        status, body = self.post("/prompt", body)
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        """The history entry of a finished (succeeded, failed or interrupted) prompt."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error") or history_message(entry, "execution_interrupted"):
                    return entry
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s; log tail:\n{self.log_tail()}")


def history_message(entry: dict, kind: str):
    """The data of the first ``kind`` message (e.g. "execution_error") in a history entry, or None."""
    return next((data for name, data in entry["status"].get("messages", []) if name == kind), None)


def comfyui_server(comfy_dir: Path, root: Path, repo: Path, start_timeout: float = SERVER_START_TIMEOUT):
    """Start ComfyUI (``--cpu``, a free port) with the pack linked in and every model folder at
    ``root/models/<key>`` (as `build_models_tree` writes it); input/output/temp/user folders under ``root``.
    A generator for a pytest fixture: yields a `ComfyServer`, stops the server afterwards."""
    import socket
    import subprocess
    import time
    import urllib.error

    import pytest

    for name in ("input", "output", "temp", "user", "custom_nodes"):
        (root / name).mkdir(exist_ok=True)
    link = root / "custom_nodes" / SERVER_PACK_NAME
    if not link.exists():
        link.symlink_to(repo, target_is_directory=True)
    yaml_lines = ["emocast_tests:", f"    base_path: {root}", f"    custom_nodes: {root / 'custom_nodes'}"]
    yaml_lines += [f"    {key}: models/{key}" for key in SERVER_MODEL_KEYS]
    (root / "extra_model_paths.yaml").write_text("\n".join(yaml_lines) + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = root / "comfyui.log"
    command = [
        str(comfy_dir / "venv" / "bin" / "python"), str(comfy_dir / "ComfyUI" / "main.py"), "--cpu",
        "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
        "--extra-model-paths-config", str(root / "extra_model_paths.yaml"),
        "--input-directory", str(root / "input"), "--output-directory", str(root / "output"),
        "--temp-directory", str(root / "temp"), "--user-directory", str(root / "user"),
        "--database-url", "sqlite:///:memory:",
    ]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(command, cwd=comfy_dir / "ComfyUI", stdout=log_file, stderr=subprocess.STDOUT)
    server = ComfyServer(f"http://127.0.0.1:{port}", root, log)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{server.log_tail()}")
            try:
                server.get("/system_stats")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not start in {start_timeout} s:\n{server.log_tail()}")
                time.sleep(1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


# --- the SD portrait workflow (emocast_sd_portrait_upscale) on tiny weights ------------------------------
# Its first half needs an SD1.5 checkpoint in the server's ``checkpoints`` folder, as written by
# ``sd15_fixture.write_tiny_sd15_checkpoint(<root>/models/checkpoints/SD15_CHECKPOINT)``.

SD15_CHECKPOINT = "tiny_sd15.safetensors"

# Applied after TINY_OVERRIDES. The portrait stays 512 x 512: that is the image size the tiny face
# detector (`face_fixtures.write_antelopev2`) is built for. One sampling step makes some portrait; the
# upscale goes to a small size so the video is quick to encode (and its size shows that ImageScale ran).
SD_PORTRAIT_OVERRIDES = {
    "CheckpointLoaderSimple": {"ckpt_name": SD15_CHECKPOINT},
    "EmptyLatentImage": {"width": 512, "height": 512, "batch_size": 1},
    "KSampler": {"steps": 1},
    "ImageScale": {"width": 160, "height": 160},
}
