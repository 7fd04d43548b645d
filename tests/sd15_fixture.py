"""A tiny single-file checkpoint that ComfyUI detects as Stable Diffusion 1.5 and loads with
``CheckpointLoaderSimple``, for running SD-based workflows in the real-server tests.

ComfyUI picks the model family from the UNet's keys: SD1.5 is a UNet with 320 base channels whose
cross-attention reads 768-wide text tokens, while the number of levels, res blocks and transformer
blocks are read from the keys too. So the UNet here has two levels of 320 channels, one res block each
going down and two each coming up, no middle block, and a single transformer block, on the second
level: there it attends over a quarter of the positions, which makes a sampling step at 512 x 512 about
twice as fast on a CPU as with the transformer on the first level. The rest of the file is what
ComfyUI builds for every SD1.5 checkpoint, whatever the UNet looks like:

- the text encoder is always a full CLIP-L text tower (12 layers, 768 wide, the 49408-token vocabulary
  of ComfyUI's bundled SD1 tokenizer), so all of its weights are written, randomly initialised;
- the VAE is a TAESD (the tiny autoencoder ComfyUI recognises by its ``taesd_decoder.*`` keys): like
  the full SD VAE it maps 4 latent channels to pixels 8x larger, with 2.4M weights where ComfyUI's
  full-VAE branch has a fixed 128-channel configuration of 83.7M, and decodes much faster on a CPU.

Every module is built by diffusers or transformers with its default initialisation from one seed, and
its weights are renamed into the original (LDM) checkpoint layout, stored as float16. The only weight
ComfyUI builds that an SD1.5 checkpoint cannot carry is the CLIP text projection, which SD1.5 does not
use (ComfyUI logs it as missing at debug level for every SD1.5 checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model."
# Multiplies SD1.5 latents into the range TAESD was made for: the value ComfyUI's VAELoader gives the
# SD1 TAESD, and the SD1.5 latent scale factor.
TAESD_SD1_SCALE = 0.18215
# CLIP's logit scale as OpenAI trained it (ln 100); unused for text encoding, written so nothing is missing.
CLIP_LOGIT_SCALE = 4.6052

# diffusers resnet sub-module -> LDM ResBlock sub-module
_RESNET_PARTS = {
    "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}
# diffusers UNet module -> LDM UNet module, for the layout built by `_tiny_unet`
_UNET_MODULES = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "down_blocks.0.resnets.0": "input_blocks.1.0",
    "down_blocks.0.downsamplers.0.conv": "input_blocks.2.0.op",
    "down_blocks.1.resnets.0": "input_blocks.3.0",
    "down_blocks.1.attentions.0": "input_blocks.3.1",  # a SpatialTransformer: same inner names in both
    "up_blocks.0.resnets.0": "output_blocks.0.0",
    "up_blocks.0.resnets.1": "output_blocks.1.0",
    "up_blocks.0.upsamplers.0.conv": "output_blocks.1.1.conv",
    "up_blocks.1.resnets.0": "output_blocks.2.0",
    "up_blocks.1.resnets.1": "output_blocks.3.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def write_tiny_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the checkpoint to ``path`` (a ``.safetensors`` file, 300 MB, 5/6 of it the CLIP
    text tower) and return the path. The same seed gives the same file; a failed write leaves no file."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path.name}: the checkpoint is written as safetensors; give a path ending in .safetensors")
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(seed)
        tensors = {
            **_prefixed(UNET_PREFIX, _unet_ldm_tensors(_tiny_unet())),
            **_prefixed(VAE_PREFIX, _taesd_tensors()),
            **_prefixed(TEXT_PREFIX, _clip_l_tensors()),
        }
    tensors = {key: tensor.to(torch.float16).contiguous() for key, tensor in tensors.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(partial), metadata={"format": "pt"})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _tiny_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        in_channels=4, out_channels=4,
        block_out_channels=(320, 320), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), mid_block_type=None,
        cross_attention_dim=768, attention_head_dim=8,  # SD1.5: 8 heads (diffusers' name for the head count)
    ).eval()


def _unet_ldm_tensors(unet) -> dict[str, torch.Tensor]:
    tensors = {}
    for key, tensor in unet.state_dict().items():
        module = next((name for name in _UNET_MODULES if key.startswith(name + ".")), None)
        if module is None:
            raise KeyError(f"no LDM name for the UNet weight {key}")
        rest = key[len(module) + 1:]
        if ".resnets." in module:
            part, _, leaf = rest.partition(".")
            rest = f"{_RESNET_PARTS[part]}.{leaf}"
        tensors[f"{_UNET_MODULES[module]}.{rest}"] = tensor.detach()
    return tensors


def _taesd_tensors() -> dict[str, torch.Tensor]:
    """diffusers' AutoencoderTiny is TAESD; ComfyUI's decoder starts with a parameter-free clamp layer
    that diffusers applies in ``forward`` instead, so decoder layer ``i`` is ComfyUI's layer ``i + 1``."""
    from diffusers import AutoencoderTiny

    tensors = {}
    for key, tensor in AutoencoderTiny().state_dict().items():
        part, _, rest = key.partition(".layers.")
        index, _, leaf = rest.partition(".")
        if part == "encoder":
            tensors[f"taesd_encoder.{index}.{leaf}"] = tensor.detach()
        elif part == "decoder":
            tensors[f"taesd_decoder.{int(index) + 1}.{leaf}"] = tensor.detach()
        else:
            raise KeyError(f"no TAESD name for the autoencoder weight {key}")
    tensors["vae_scale"] = torch.tensor(TAESD_SD1_SCALE)
    tensors["vae_shift"] = torch.tensor(0.0)
    return tensors


def _clip_l_tensors() -> dict[str, torch.Tensor]:
    """CLIP-L's text tower, keyed as SD1.5 checkpoints key it (``transformer.text_model.*``)."""
    from tiny_clip import text_tower_tensors
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )
    tensors = _prefixed("transformer.", text_tower_tensors(CLIPTextModel(config).eval()))
    tensors["logit_scale"] = torch.tensor(CLIP_LOGIT_SCALE)
    return tensors


def _prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: tensor for key, tensor in tensors.items()}
