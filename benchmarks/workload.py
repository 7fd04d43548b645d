"""Models and inputs for the benchmarks: the official tiny fixture, or the SD1.5 shape with
random weights (timing and memory only depend on shapes, not on the weight values)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from emocast_core.models.config import EmoCASTConfig  # noqa: E402
from emocast_core.models.net import EmoCASTNet  # noqa: E402
from emocast_core.pipeline import EmotionConditions, ReferenceConditions  # noqa: E402

FIXTURE_DIR = Path(os.environ.get("EMOCAST_ORACLE_DIR", REPO_ROOT.parent / "shared" / "fixtures" / "official" / "tiny_a"))

# The SD1.5 VAE (`vae/config.json` of runwayml/stable-diffusion-v1-5 / sd-vae-ft-mse).
SD15_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)


@dataclass
class Workload:
    name: str
    config: EmoCASTConfig
    vae_config: dict
    image_size: int

    @property
    def latent_size(self) -> int:
        return self.image_size // 8


def workload(name: str) -> Workload:
    if name == "tiny":
        path = FIXTURE_DIR / "tiny_config.json"
        if not path.is_file():
            raise SystemExit(f"tiny config needs the official fixture folder (set EMOCAST_ORACLE_DIR); not found: {path}")
        raw = json.loads(path.read_text())
        return Workload("tiny", EmoCASTConfig.from_upstream_file(path), raw["vae_config"], int(raw["runtime"]["image_size"][0]))
    if name == "sd15":
        return Workload("sd15", EmoCASTConfig.sd15(), dict(SD15_VAE_CONFIG), 512)
    raise SystemExit(f"unknown config {name!r}")


def _random_init_(module: torch.nn.Module, seed: int = 0) -> None:
    """Small random weights (no NaN / denormal surprises in timings); norms at identity. Drawn on
    the parameters' own device, so a 2.5 B-parameter model needs no host copy."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if parameter.ndim == 1:
                parameter.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                parameter.normal_(0.0, 0.02)


def load_models(load: Workload, device: str, dtype: torch.dtype):
    """(net, vae) in eval mode on `device`. tiny: the fixture's trained weights; sd15: random."""
    from diffusers import AutoencoderKL

    if load.name == "tiny":
        from safetensors.torch import load_file

        net = EmoCASTNet.build(load.config)
        net.load_state_dict(load_file(FIXTURE_DIR / "tiny_net.safetensors"))
        vae = AutoencoderKL.from_pretrained(FIXTURE_DIR / "tiny_vae")
    else:
        net = EmoCASTNet.build(load.config, device=device, dtype=dtype)
        _random_init_(net)
        vae = AutoencoderKL(**load.vae_config)  # 84 M parameters: diffusers' own random init
    return net.to(device, dtype).eval(), vae.to(device, dtype).eval()


def make_inputs(load: Workload, num_frames: int):
    """(ReferenceConditions, EmotionConditions, audio_windows (num_frames, window, layers, channels))."""
    config = load.config
    if load.name == "tiny":
        from safetensors.torch import load_file

        inputs = load_file(FIXTURE_DIR / "pipeline" / "inputs.safetensors")
        windows = load_file(FIXTURE_DIR / "pipeline" / "expected.safetensors")["audio_windows"]
        levels = sum(1 for key in inputs if key.startswith("full_mask."))
        reference = ReferenceConditions(
            inputs["ref_pixels"], inputs["face_emb"], inputs["face_region"],
            [inputs[f"full_mask.{i}"] for i in range(levels)],
            [inputs[f"face_mask.{i}"] for i in range(levels)],
            [inputs[f"lip_mask.{i}"] for i in range(levels)],
        )
        emotion = EmotionConditions(inputs["text_emb_prompt"], inputs["text_emb_uncond"])
        # A long "audio" by repeating the fixture's windows (the content does not change the cost).
        index = torch.arange(num_frames) % windows.shape[0]
        return reference, emotion, windows[index]

    generator = torch.Generator().manual_seed(0)
    size = load.image_size
    pixels = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1)
    region = torch.zeros(1, 3, size, size)
    region[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
    masks = []
    for fraction in (1.0, 0.5, 0.2):  # full, face, lip
        per_level = []
        for level in range(len(config.unet.block_out_channels)):
            side = load.latent_size // 2 ** level
            mask = torch.zeros(side, side)
            margin = int(side * (1 - fraction) / 2)
            mask[margin: side - margin, margin: side - margin] = 1
            per_level.append(mask.reshape(1, -1))
        masks.append(per_level)
    reference = ReferenceConditions(pixels, torch.randn(1, config.face_embedding_dim, generator=generator), region, *masks)
    dim = config.unet.cross_attention_dim
    emotion = EmotionConditions(torch.randn(1, config.num_text_tokens, dim, generator=generator),
                                torch.randn(1, config.num_text_tokens, dim, generator=generator))
    windows = torch.randn(num_frames, config.audio_window, config.audio_layers, config.audio_channels, generator=generator)
    return reference, emotion, windows
