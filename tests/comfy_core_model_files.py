"""Randomly initialised models in the shapes ComfyUI's own loaders build, written where those loaders look.

ComfyUI's Load VAE, Load CLIP (stable_diffusion) and Load Audio Encoder build one fixed architecture each
(SD's 128-channel VAE, the 12-layer CLIP-L text tower, wav2vec2-base), so the tiny test models cannot be
loaded by them: these files are full-size, with random weights from a fixed seed. Each is written once in
the layout EmoCAST's own loaders read and, where that differs, linked as the single file ComfyUI lists.
"""
from __future__ import annotations

from pathlib import Path

import torch

SD_VAE = "sd_vae_random"  # models/vae/<name>/ (diffusers) and models/vae/<name>.safetensors
CLIP_L = "clip_l_random.safetensors"  # models/text_encoders/<name>
WAV2VEC2_BASE = "wav2vec2_base_random"  # models/audio_encoders/<name>/ and <name>.safetensors


def write_sd_vae(vae_folder: Path, name: str = SD_VAE, seed: int = 0) -> Path:
    """SD1.5's VAE shape as a diffusers folder, linked as ``<name>.safetensors`` (diffusers keys, which
    ComfyUI converts on load). Returns the folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    folder = vae_folder / name
    vae.save_pretrained(folder, safe_serialization=True)
    (vae_folder / f"{name}.safetensors").hardlink_to(folder / "diffusion_pytorch_model.safetensors")
    return folder


def write_clip_l(path: Path, seed: int = 0) -> Path:
    """The CLIP-L text tower as ComfyUI's models/text_encoders/clip_l.safetensors stores it (transformers
    keys, ``text_model.*``, float16)."""
    from safetensors.torch import save_file
    from tiny_clip import text_tower_tensors
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    tensors = {key: tensor.half() for key, tensor in text_tower_tensors(CLIPTextModel(config).eval()).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def write_wav2vec2_base(audio_encoders_folder: Path, name: str = WAV2VEC2_BASE, seed: int = 0) -> Path:
    """wav2vec2-base as the Hugging Face folder EmoCAST's loader reads (with a normalising preprocessor, as
    wav2vec2-base-960h has), linked as ``<name>.safetensors`` for ComfyUI's Load Audio Encoder. Returns the folder."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    folder = audio_encoders_folder / name
    Wav2Vec2Model(Wav2Vec2Config()).eval().save_pretrained(folder, safe_serialization=True)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(folder)
    (audio_encoders_folder / f"{name}.safetensors").hardlink_to(folder / "model.safetensors")
    return folder
