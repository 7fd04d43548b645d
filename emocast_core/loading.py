"""Load every model EmoCAST needs from resolved local paths (never from a hub).

`load_models(paths, device=..., dtype=...)` returns an `EmoCASTModels` bundle: the network, the
VAE, the emotion text encoder, the audio encoder, the face analyzer and, when present, the vocal
separator. The network's architecture is found, in this order: the config stored in a converted
`.safetensors`; a JSON file beside the checkpoint (`<checkpoint stem>.json` or `config.json`, in
`EmoCASTConfig.to_dict()` or the official `tiny_config.json` layout); an SD UNet `unet_config.json`
in the emocast folder or beside the checkpoint; the released SD1.5 shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from .checkpoint import load_emocast_net, read_checkpoint_config
from .model_files import EmoCASTModelPaths, checkpoint_config_files
from .models.config import EmoCASTConfig, UNetConfig
from .models.net import EmoCASTNet


@dataclass
class EmoCASTModels:
    net: EmoCASTNet
    vae: "torch.nn.Module"
    text_encoder: object  # conditioning.emotion.EmotionTextEncoder
    audio_encoder: object  # conditioning.audio.AudioEncoder
    face_analyzer: object  # conditioning.face.FaceAnalyzer
    vocal_separator: Optional[object] = None  # conditioning.vocal_separation.VocalSeparator


def read_config_file(path: str | Path) -> EmoCASTConfig:
    """An `EmoCASTConfig` from JSON in the official layout (`unet_config`, `unet_additional_kwargs`,
    ...) or in `EmoCASTConfig.to_dict()` form."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read the EmoCAST config ({error})") from None
    if "unet_config" in data:
        return EmoCASTConfig.from_upstream_file(path)
    return EmoCASTConfig.from_dict(data)


def checkpoint_config(checkpoint: Path, unet_config: Optional[Path] = None) -> EmoCASTConfig:
    """The architecture of `checkpoint` (see the module docstring for the search order); `unet_config`
    is the SD UNet config the model files resolved, tried before a `unet_config.json` beside the
    checkpoint (`model_files.checkpoint_config_files`)."""
    stored = read_checkpoint_config(checkpoint)
    if stored is not None:
        return stored
    *emocast_configs, unet_config_beside = checkpoint_config_files(checkpoint)
    for candidate in emocast_configs:
        if candidate.is_file():
            return read_config_file(candidate)
    for candidate in (unet_config, unet_config_beside):
        if candidate is not None and candidate.is_file():
            return EmoCASTConfig(unet=UNetConfig.from_dict(json.loads(candidate.read_text())))
    return EmoCASTConfig.sd15()


def load_net(paths: EmoCASTModelPaths, *, device: torch.device, dtype: torch.dtype) -> EmoCASTNet:
    config = checkpoint_config(paths.checkpoint, paths.unet_config)
    return load_emocast_net(paths.checkpoint, config, device=device, dtype=dtype)


def load_vae(folder: Path, *, device: torch.device, dtype: torch.dtype):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
    return vae.to(device).eval()


def load_face_analyzer(paths: EmoCASTModelPaths):
    """The face models alone: small, so a run can look for the face before loading the big ones."""
    from .conditioning.face import FaceAnalyzer

    return FaceAnalyzer.from_files(
        detector=paths.face_detector,
        recognizer=paths.face_recognizer,
        landmarker=paths.face_landmarker_task or paths.face_landmarks_2d106,
    ) if paths.face_recognizer is not None else FaceAnalyzer.from_folder(paths.face_detector.parent)


def load_models(
    paths: EmoCASTModelPaths,
    *,
    device: torch.device,
    dtype: torch.dtype,
    with_vocal_separator: bool = False,
    face_analyzer: Optional[object] = None,
) -> EmoCASTModels:
    """Every model of a generation run. Encoders that only prepare conditions run in float32 on the
    CPU-friendly path where precision matters more than speed (the text and audio encoders are
    small next to the UNets) and in `dtype` on accelerators."""
    from .conditioning.audio import AudioEncoder
    from .conditioning.emotion import EmotionTextEncoder

    encoder_dtype = dtype if device.type != "cpu" else torch.float32
    text_source = paths.text_encoder_weights if paths.text_encoder_config is None else paths.text_encoder_config.parent
    face_analyzer = face_analyzer or load_face_analyzer(paths)
    separator = None
    if with_vocal_separator:
        if paths.vocal_separator is None:
            raise FileNotFoundError("vocal separation was asked for but emocast/audio_separator/Kim_Vocal_2.onnx is missing")
        from .conditioning.vocal_separation import VocalSeparator

        separator = VocalSeparator(paths.vocal_separator)
    return EmoCASTModels(
        net=load_net(paths, device=device, dtype=dtype),
        vae=load_vae(paths.vae_dir, device=device, dtype=dtype),
        text_encoder=EmotionTextEncoder.from_pretrained(text_source, paths.tokenizer_dir, device=device, dtype=encoder_dtype),
        audio_encoder=AudioEncoder.from_pretrained(paths.audio_encoder_dir, device=device, dtype=encoder_dtype),
        face_analyzer=face_analyzer,
        vocal_separator=separator,
    )
