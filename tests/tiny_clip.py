"""A tiny random CLIP text encoder and tokenizer, written to disk in the layouts users have.

The tokenizer has 54 entries: the 26 letters, the 26 letters with the end-of-word marker ``</w>``,
``<|startoftext|>`` and ``<|endoftext|>``. With no BPE merges every word becomes one token per
letter, so "happy" is 5 tokens and long prompts are easy to make.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

TINY_HIDDEN_SIZE = 32
TINY_NUM_HEADS = 4  # not hidden/64, so single-file loads must be told (num_attention_heads=4)
BOS_ID, EOS_ID = 52, 53


def write_tiny_tokenizer(folder: Path) -> Path:
    """Write vocab.json + merges.txt (the CLIP BPE file pair) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = string.ascii_lowercase
    vocab = {letter: index for index, letter in enumerate(letters)}
    vocab.update({letter + "</w>": len(letters) + index for index, letter in enumerate(letters)})
    vocab.update({"<|startoftext|>": BOS_ID, "<|endoftext|>": EOS_ID})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def build_tiny_text_model(seed: int = 0) -> CLIPTextModel:
    """CLIP text model with random weights: 2 layers, width 32, 77 positions."""
    config = CLIPTextConfig(
        vocab_size=54,
        hidden_size=TINY_HIDDEN_SIZE,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=TINY_NUM_HEADS,
        max_position_embeddings=77,
        projection_dim=TINY_HIDDEN_SIZE,
        hidden_act="quick_gelu",
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def text_tower_tensors(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """The model's weights keyed as in transformers' CLIPTextModel checkpoints: ``text_model.*``."""
    tensors = {}
    for key, tensor in model.state_dict().items():
        bare = key.removeprefix("text_model.")
        if bare.endswith("position_ids"):
            continue
        tensors["text_model." + bare] = tensor.detach().clone().contiguous()
    return tensors


def save_hf_folder(model: CLIPTextModel, folder: Path, tokenizer_folder: Path | None = None) -> Path:
    """``save_pretrained`` the model (and a tokenizer into ``tokenizer_folder`` when given)."""
    model.save_pretrained(folder)
    if tokenizer_folder is not None:
        write_tiny_tokenizer(tokenizer_folder)
    return folder


def save_comfy_clip_l(model: CLIPTextModel, file: Path, prefix: str = "", nested: bool = True) -> Path:
    """Save like ComfyUI's models/text_encoders/clip_l.safetensors.

    Keys are ``text_model.*`` plus ``text_projection.weight`` and ``logit_scale`` (which the encoder
    must ignore), all behind ``prefix`` (e.g. ``"clip_l.transformer."``). ``nested=False`` drops the
    ``text_model.`` level, as old SD1 checkpoints under ``cond_stage_model.transformer.`` do.
    """
    file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for key, tensor in text_tower_tensors(model).items():
        tensors[prefix + (key if nested else key.removeprefix("text_model."))] = tensor
    tensors[prefix + "text_projection.weight"] = torch.randn(TINY_HIDDEN_SIZE, TINY_HIDDEN_SIZE)
    tensors[prefix + "logit_scale"] = torch.tensor(4.6052)
    if prefix:
        # All-in-one checkpoints carry other models too; the loader must leave them alone.
        tensors["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(4, 4)
    save_file(tensors, str(file))
    return file


def write_tiny_encoder_files(root: Path, seed: int = 0) -> dict[str, Path]:
    """One tiny model saved both ways.

    Returns:
        ``hf_folder`` (SD1.5-style ``text_encoder/`` with a sibling ``tokenizer/``),
        ``single_file`` (ComfyUI clip_l layout) and ``tokenizer`` (the tokenizer folder).
    """
    model = build_tiny_text_model(seed)
    tokenizer_folder = write_tiny_tokenizer(root / "sd15" / "tokenizer")
    hf_folder = save_hf_folder(model, root / "sd15" / "text_encoder")
    single_file = save_comfy_clip_l(model, root / "text_encoders" / "clip_l_tiny.safetensors")
    return {"hf_folder": hf_folder, "single_file": single_file, "tokenizer": tokenizer_folder}
