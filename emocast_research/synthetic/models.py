"""The small models of the synthetic benchmark and demo: network shape, wav2vec2, VAE.

* `demo_net_config()`: a 2-level EmoCAST with every module of the released one (ReferenceNet,
  motion modules, audio modules with emotive attention, face locator, projections), 384 wide tokens
  (MiniLM's width), for 8 x 8 latents (128 x 128 frames through the factor-16 VAE).
* `write_random_wav2vec2(folder)`: a small Wav2Vec2 with random but fixed weights (seeded). Its
  features are a fixed function of the waveform; the network learns to read speech from them.
  No package ships wav2vec2 weights, so this stands in for wav2vec2-base-960h.
* `make_tiny_vae(size)` / `train_tiny_vae(frames)`: an AutoencoderKL with 4 latent channels like SD's,
  with as many levels as give an 8 x 8 latent (5 levels, factor 16, at 128 x 128), trained on
  synthetic frames. The VAE carries the resolution: the denoising network works on 8 x 8 latents
  whatever the frame size, so a larger demo costs more in the VAE only.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from emocast_core.models.config import (
    AudioModuleConfig,
    EmoCASTConfig,
    MotionModuleConfig,
    UNetConfig,
)

TEXT_DIM = 384  # all-MiniLM-L6-v2 hidden size
LATENT_SIDE = 8  # the demo network's latent grid, at every frame size
# Per-level widths, the largest level last; a frame size uses the last `vae_levels(size)` of them.
# A 32-channel finest level keeps flat background hues that this one shifts, but on this budget it
# softened the faces and the network trained on it was worse (docs/demo-model.md, "The VAE carries
# the resolution").
VAE_CHANNELS = (16, 32, 48, 64, 64)
FACE_LOCATOR_CHANNELS = (8, 8, 16, 16, 32)
WAV2VEC_LAYERS, WAV2VEC_DIM = 4, 64
WAV2VEC_SEED = 7


def vae_levels(size: int) -> int:
    """Levels of the demo VAE for `size` x `size` frames: each level after the first halves the side,
    down to `LATENT_SIDE` (4 at 64 px: factor 8 like SD's; 5 at 128 px: factor 16)."""
    factor = size // LATENT_SIDE
    if size % LATENT_SIDE or factor & (factor - 1) or not 8 <= factor <= 2 ** (len(VAE_CHANNELS) - 1):
        raise ValueError(f"the demo models support 64 or 128 pixel frames, got {size}")
    return factor.bit_length()


def demo_net_config(size: int = 128) -> EmoCASTConfig:
    """The demo network for `size` x `size` frames; only the face locator depends on the size (its
    stride-2 convolutions follow the VAE's downsampling)."""
    return EmoCASTConfig(
        unet=UNetConfig(
            block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=2, cross_attention_dim=TEXT_DIM, norm_num_groups=8, sample_size=8,
        ),
        motion=MotionModuleConfig(num_attention_heads=2, resolutions=(1, 2), norm_num_groups=8, max_frames=32),
        audio=AudioModuleConfig(audio_token_dim=TEXT_DIM, emotion_token_dim=TEXT_DIM, emotive_head_dim=16),
        face_locator_block_out_channels=FACE_LOCATOR_CHANNELS[-vae_levels(size):],
        face_embedding_dim=512,
        num_face_tokens=2,
        audio_layers=WAV2VEC_LAYERS,
        audio_channels=WAV2VEC_DIM,
        audio_intermediate_dim=64,
        num_audio_tokens=8,
    )


def write_random_wav2vec2(folder: Path, seed: int = WAV2VEC_SEED) -> Path:
    """A seeded random Wav2Vec2Model saved as a Hugging Face folder that `AudioEncoder` loads."""
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=WAV2VEC_DIM, num_hidden_layers=WAV2VEC_LAYERS, num_attention_heads=4, intermediate_size=128,
        conv_dim=(64,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, vocab_size=32,
        feat_extract_norm="group", do_stable_layer_norm=False,
    )
    return save_wav2vec2_folder(Wav2Vec2Model(config).eval(), folder)


def save_wav2vec2_folder(model, folder: Path, weight_file: str = "model.safetensors") -> Path:
    """A transformers wav2vec2 model -> a folder in the layout of facebook/wav2vec2-base-960h:
    config, feature-extractor config and weights with the legacy weight-norm names
    (``weight_g``/``weight_v``) that the released file has. `weight_file` ending in .safetensors is
    written as Hugging Face writes it; any other name with torch.save."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    state = {}
    for key, tensor in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        state[key] = tensor.contiguous().clone()
    if weight_file.endswith(".safetensors"):
        save_file(state, str(folder / weight_file), metadata={"format": "pt"})
    else:
        torch.save(state, folder / weight_file)
    return folder


def make_tiny_vae(size: int = 128):
    levels = vae_levels(size)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=VAE_CHANNELS[-levels:], layers_per_block=1,
        latent_channels=4, norm_num_groups=8, sample_size=size, scaling_factor=1.0,
    )


def grow_vae(small, size: int, start=None):
    """A VAE for `size` frames (one level more than `small` per doubling) whose inner levels are
    `small`'s trained ones: the encoder's down blocks move one level down, the decoder's up blocks
    keep their place and a new finest level is added at both ends. Weights whose shape differs (the
    new level, the first resnet after it, the colour convolutions at the ends) keep `start`'s values
    (default: a fresh `make_tiny_vae(size)`). Trained from scratch at 128 px for 25 minutes the VAE
    still gave every background the same grey-blue; grown from the 64 px VAE it starts from what that
    one knows about drawn faces."""
    grown = start if start is not None else make_tiny_vae(size)
    extra = len(grown.config.block_out_channels) - len(small.config.block_out_channels)
    if extra < 0:
        raise ValueError("grow_vae makes a VAE with more levels, not fewer")

    def moved(key: str) -> str:
        if key.startswith("encoder.down_blocks."):
            index = int(key.split(".")[2])
            return f"encoder.down_blocks.{index + extra}." + key.split(".", 3)[3]
        return key

    target = grown.state_dict()
    copied = {}
    for key, tensor in small.state_dict().items():
        new_key = moved(key)
        if new_key in target and target[new_key].shape == tensor.shape:
            copied[new_key] = tensor.to(target[new_key].dtype)
    grown.load_state_dict({**target, **copied})
    return grown


def reconstruction_weight(batch: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) in [-1, 1] -> (B, 1, S, S) per-pixel loss weight.

    1 on the background, 5 on the face (pixels far from the border colour), 13 on the face's
    features (face pixels far from the skin colour, the median colour of the face): a plain
    reconstruction loss spends its capacity on the large flat areas and blurs a 3-pixel mouth corner.
    """
    border = torch.cat([batch[:, :, 0], batch[:, :, -1]], dim=2).median(dim=2).values[:, :, None, None]
    face = (batch - border).abs().sum(1, keepdim=True) > 0.3
    flat = batch.flatten(2)
    face_flat = face.flatten(2).expand_as(flat)
    # Median colour of the face pixels (the skin): non-face pixels become +inf so that they sort last.
    padded = torch.where(face_flat, flat, torch.full_like(flat, float("inf")))
    count = face_flat[:, :1].sum(-1).clamp(min=1)  # (B, 1)
    ordered = padded.sort(dim=-1).values
    skin = ordered.gather(-1, (count // 2).expand(-1, 3)[:, :, None])[..., None]  # (B, 3, 1, 1)
    feature = face & ((batch - skin).abs().sum(1, keepdim=True) > 0.25)
    return 1.0 + 4.0 * face.float() + 8.0 * feature.float()


@torch.no_grad()
def reconstruction_errors(vae, frames: np.ndarray) -> dict:
    """How an encode-decode (posterior means) changes (N, S, S, 3) uint8 frames, in 0-255 units:
    `all` (mean absolute error), `face_centre` (the middle quarter of the side: eyes, nose, mouth),
    `background_rgb` (per channel, the top-left corner patch's mean colour: a hue shift shows here
    as one channel's error) and `background_max` (the largest of the three)."""
    vae.eval()
    pixels = _pixels(frames)
    decoded = torch.cat([vae.decode(vae.encode(chunk).latent_dist.mean).sample for chunk in pixels.split(16)])
    out = ((decoded.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).double().numpy()
    truth = frames.astype(np.float64)
    size = frames.shape[1]
    corner, half = max(2, size // 32), size // 8
    centre = slice(size // 2 - half, size // 2 + half)
    background = np.abs(truth[:, :corner, :corner].mean(axis=(1, 2)) - out[:, :corner, :corner].mean(axis=(1, 2))).mean(axis=0)
    return {
        "frames": len(frames), "size": size,
        "all": round(float(np.abs(truth - out).mean()), 2),
        "face_centre": round(float(np.abs(truth[:, centre, centre] - out[:, centre, centre]).mean()), 2),
        "background_rgb": [round(float(value), 2) for value in background],
        "background_max": round(float(background.max()), 2),
    }


def _pixels(frames: np.ndarray) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 in [-1, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def _latent_means(vae, pixels: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(64)])


def _weighted_error(reconstruction: torch.Tensor, batch: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    error = reconstruction - batch
    return (weight * (error.abs() + error**2)).mean()


def _train_for(seconds: float, parameters, learning_rate: float, batch_loss, count: int, batch_size: int,
               generator: torch.Generator, log, label: str) -> int:
    """AdamW steps on `batch_loss(index)` (random batches of `count` items) for about `seconds`;
    returns the number of steps."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    started, step = time.time(), 0
    while time.time() - started < seconds:
        loss = batch_loss(torch.randint(0, count, (batch_size,), generator=generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            log(f"{label} step {step} loss {loss.item():.4f}")
    return step


def train_tiny_vae(frames: np.ndarray, seconds: float, seed: int = 0, batch_size: int = 16, log=print, vae=None,
                   learning_rate: float = 3e-3):
    """Train `make_tiny_vae()` on (N, S, S, 3) uint8 frames for about `seconds`.

    Loss: L1 + MSE reconstruction and a small KL term, weighted by `reconstruction_weight` so that
    the small features that carry speech and emotion — mouth, eyes, brows — are kept.
    The latents' scaling factor is set afterwards to 1 / their standard deviation (as SD's 0.18215).
    `vae`: continue training this one instead of a new one.
    """
    torch.manual_seed(seed)
    vae = vae if vae is not None else make_tiny_vae(frames.shape[1])
    vae.train().requires_grad_(True)
    data = _pixels(frames)
    generator = torch.Generator().manual_seed(seed)

    def batch_loss(index):
        batch = data[index]
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        return _weighted_error(reconstruction, batch, reconstruction_weight(batch)) + 1e-6 * posterior.kl().mean()

    step = _train_for(seconds, vae.parameters(), learning_rate, batch_loss, len(data), batch_size, generator, log, "vae")
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=float(1.0 / _latent_means(vae, data[:512]).std()))
    return vae, step


def refine_decoder(vae, frames: np.ndarray, seconds: float, seed: int = 0, batch_size: int = 8, log=print,
                   learning_rate: float = 5e-4, background_weight: float = 4.0):
    """Train the decoder alone on the frozen encoder's latents (posterior means) for about `seconds`.

    The latent space stays exactly what the denoising network was trained in, so this can run after
    (or while) the network trains. The background counts `background_weight` times more than in
    `train_tiny_vae`: a wrong background hue is what a person notices first in a 128 px frame.
    """
    torch.manual_seed(seed)
    vae.eval().requires_grad_(False)
    data = _pixels(frames)
    latents = _latent_means(vae, data)
    decoder = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    for parameter in decoder:
        parameter.requires_grad_(True)
    vae.decoder.train()

    def batch_loss(index):
        batch = data[index]
        weight = reconstruction_weight(batch).clamp(min=background_weight)
        return _weighted_error(vae.decode(latents[index]).sample, batch, weight)

    step = _train_for(seconds, decoder, learning_rate, batch_loss, len(data), batch_size,
                      torch.Generator().manual_seed(seed), log, "decoder")
    vae.eval().requires_grad_(False)
    return vae, step
