"""A complete models folder of tiny stand-ins, in the real layout (ComfyUI's `models/`).

The EmoCAST network, VAE and wav2vec2 are the official tiny fixture's; the CLIP text encoder is a
random one-layer model of the width the tiny network reads (768); the face models are the tiny ONNX
stand-ins of `face_fixtures`, set to find the astronaut's face in `skimage.data.astronaut()`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from emocast_core.checkpoint import convert_checkpoint
from emocast_core.loading import read_config_file
from face_fixtures import ASTRONAUT_FACE, write_antelopev2
from tiny_clip import BOS_ID, EOS_ID, write_tiny_tokenizer

TINY_IMAGE_SIZE = 128  # the official tiny network works on 128 x 128 images


def astronaut_rgb() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def write_clip_folder(folder: Path, hidden_size: int, seed: int = 0) -> Path:
    config = CLIPTextConfig(
        vocab_size=54, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=1, num_attention_heads=12,
        max_position_embeddings=77, projection_dim=hidden_size, hidden_act="quick_gelu",
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    CLIPTextModel(config).eval().save_pretrained(folder)
    write_tiny_tokenizer(folder)
    return folder


def build_models_tree(root: Path, oracle_dir: Path) -> Path:
    """Write `root/models/...`; returns the models folder."""
    models = root / "models"
    config = read_config_file(oracle_dir / "tiny_config.json")
    convert_checkpoint(oracle_dir / "tiny_net.safetensors", models / "emocast" / "net.safetensors", dtype="fp32", config=config)
    shutil.copytree(oracle_dir / "tiny_vae", models / "vae" / "sd-vae-ft-mse")
    shutil.copytree(oracle_dir / "tiny_wav2vec2", models / "audio_encoders" / "wav2vec2-base-960h")
    write_clip_folder(models / "text_encoders" / "clip-vit-large-patch14", config.token_dim)
    write_antelopev2(root, [ASTRONAUT_FACE], astronaut_rgb().shape[:2])
    return models
