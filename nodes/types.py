"""The private link types between EmoCAST nodes and the payloads they carry.

Native ComfyUI types (IMAGE, MASK, AUDIO, VIDEO, INT, FLOAT) are used at the edges of the graph; these
types only connect EmoCAST nodes to each other, so a wrong connection is refused by the editor instead of
failing at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from comfy_api.latest import io

from ..emocast_core.conditioning.emotion import frame_embeddings
from ..emocast_core.pipeline import EmotionConditions

EmoCASTModel = io.Custom("EMOCAST_MODEL")
TextEncoder = io.Custom("EMOCAST_TEXT_ENCODER")
AudioEncoderType = io.Custom("EMOCAST_AUDIO_ENCODER")
FaceAnalyzerType = io.Custom("EMOCAST_FACE_ANALYZER")
Reference = io.Custom("EMOCAST_REFERENCE")
Emotion = io.Custom("EMOCAST_EMOTION")
AudioFeaturesType = io.Custom("EMOCAST_AUDIO_FEATURES")


@dataclass
class LoadedEmoCAST:
    """Output of the model loader: the network and the VAE, each under its own `ModelPatcher`, so
    ComfyUI's memory manager decides where they live (`comfy.model_management.load_models_gpu`)."""

    net_patcher: Any  # ModelPatcher around ModuleHolder(EmoCASTNet)
    vae: Any  # diffusers AutoencoderKL, or ComfyVAEAdapter around ComfyUI's VAE (the same interface)
    vae_patcher: Any  # its ModelPatcher: around ModuleHolder(AutoencoderKL), or the ComfyUI VAE's own
    checkpoint_name: str
    dtype: torch.dtype

    @property
    def net(self):
        return self.net_patcher.model.inner


@dataclass
class LoadedTextEncoder:
    encoder: Any  # emocast_core EmotionTextEncoder
    patcher: Any  # ModelPatcher around ModuleHolder(CLIPTextModel)


@dataclass
class LoadedAudioEncoder:
    encoder: Any  # emocast_core AudioEncoder
    patcher: Any  # ModelPatcher around ModuleHolder(wav2vec2)
    vocal_separator: Any = None  # emocast_core VocalSeparator or None


@dataclass
class EmotionInput:
    """Emotion embeddings of keyframes; expanded to per-frame tokens once the video length is known.

    keyframe_tokens: (K, 77, D) CPU; keyframe_times: K increasing times in seconds (one keyframe = constant);
    uncond_tokens: (1, 77, D) CPU, the embedding of "".
    """

    keyframe_tokens: torch.Tensor
    keyframe_times: list[float]
    uncond_tokens: torch.Tensor
    transition: float = 0.5
    description: str = ""

    def conditions(self, num_frames: int, fps: float) -> EmotionConditions:
        tokens = frame_embeddings(self.keyframe_tokens, self.keyframe_times, num_frames, fps, self.transition)
        return EmotionConditions(tokens, self.uncond_tokens)


@dataclass
class AudioFeaturesInput:
    """wav2vec2 features of the driving audio (see `emocast_core.conditioning.audio.AudioFeatures`)."""

    features: Any  # AudioFeatures
    clip_length: int
    audio: Optional[dict] = None  # the exact span used, as a ComfyUI AUDIO dict
    silent: bool = False  # the speech is silent: the sampler turns the audio's influence off
    # (num_frames,) bool: the frames whose sound is silent, for the sampler's audio_off_in_silence.
    silent_frames: Optional[torch.Tensor] = None

    @property
    def num_frames(self) -> int:
        return int(self.features.num_frames)

    @property
    def fps(self) -> float:
        return float(self.features.fps)
