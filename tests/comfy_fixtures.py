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
    "EmoCASTModelLoader": [("checkpoint", "widget"), ("vae", "widget"), ("precision", "widget")],
    "EmoCASTTextEncoderLoader": [("text_encoder", "widget"), ("tokenizer", "widget")],
    "EmoCASTAudioEncoderLoader": [("wav2vec2", "widget"), ("precision", "widget"), ("vocal_separator", "widget")],
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
                       ("motion_frames", "widget")],
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
    "EmoCASTSampler": ["IMAGE", "FLOAT"],
    "EmoCASTVideoCombine": ["VIDEO"],
    "EmoCASTPasteBack": ["IMAGE"],
}
