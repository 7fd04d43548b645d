"""The project's dataset builder and trainer, set up for the synthetic corpus.

* `build_training_set` runs `training.DatasetBuilder` with the synthetic face analysis, a wav2vec2
  folder and the corpus' label and caption files.
* `SyntheticTrainer` is `training.Trainer` with one difference: its frozen encoders are a VAE
  folder and the MiniLM text encoder (the released trainer loads CLIP-L).
* `training_config(...)` is the configuration of one run: every module of the network trains at
  once (a single stage, from scratch) on clips with motion frames and the lip- and face-weighted
  loss, with references and motion frames that do not give the target's expression away.
"""
from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderKL

from emocast_core.conditioning.audio import AudioEncoder
from emocast_core.demo.drawn_faces import synthetic_face_analyzer
from emocast_core.demo.text_encoder import MiniLMEmotionEncoder
from emocast_core.training.captions import (
    CaptionSource,
    read_caption_file,
    read_label_file,
)
from emocast_core.training.config import TrainingConfig
from emocast_core.training.dataset_builder import BuildOptions, DatasetBuilder
from emocast_core.training.trainer import Trainer

from .models import demo_net_config


def build_training_set(corpus: Path, out: Path, wav2vec: Path, size: int = 128, min_frames: int = 25):
    """corpus: a `corpus.write_corpus` folder -> `out`, a training set (index.jsonl + shards)."""
    corpus = Path(corpus)
    captions = CaptionSource(
        captions=read_caption_file(corpus / "captions.jsonl"), labels=read_label_file(corpus / "labels.jsonl"),
        mead_folders=False,
    )
    builder = DatasetBuilder(
        synthetic_face_analyzer(), AudioEncoder.from_pretrained(wav2vec), captions,
        BuildOptions(size=size, min_frames=min_frames, frame_codec="png", detect_every=5),
    )
    return builder.build(corpus / "videos", Path(out))


class SyntheticTrainer(Trainer):
    """`Trainer` whose frozen encoders are `model.vae` (an AutoencoderKL folder) and MiniLM."""

    def build_frozen_encoders(self):
        device = self.accelerator.device
        vae = AutoencoderKL.from_pretrained(self.config.model.vae, local_files_only=True, torch_dtype=self.weight_dtype)
        vae.to(device).requires_grad_(False).eval()
        text_encoder = MiniLMEmotionEncoder.from_pretrained(self.config.model.text_encoder, device=device)
        return vae, text_encoder


def training_config(data: Path, vae: Path, text_encoder: Path, output_dir: Path, max_steps: int, *,
                    learning_rate: float = 1e-3, batch_size: int = 4, num_frames: int = 8, seed: int = 0,
                    checkpoint_every: int = 0, size: int = 128, motion_frame_noise: float = 0.0,
                    overrides: dict | None = None) -> TrainingConfig:
    values = {
        "output_dir": str(output_dir),
        "seed": seed,
        "model": {"architecture": demo_net_config(size).to_dict(), "vae": str(vae), "text_encoder": str(text_encoder)},
        "data": {"root": str(data), "num_frames": num_frames, "num_motion_frames": 2, "sample_margin": 4,
                 "num_workers": 0, "caption_choice": "random"},
        # One stage that trains every module from scratch; the lip region weighs more (as lip_sync).
        "stage": {"name": "motion", "trainable": ["*"], "lip_loss_weight": 2.0, "face_loss_weight": 2.0},
        # The expression must come from the text: a reference or motion frames with the target's own
        # expression let the network copy it and ignore the prompt (the first run did exactly that).
        # So the reference is mostly a frame of the same person with another emotion, and in 40 % of
        # the samples the motion frames are that reference too, as in a video's first clip.
        "sampling": {"reference_policy": "different_expression", "cross_clip_probability": 0.8,
                     "emotion_balance": 1.0, "intensity_balance": 0.0},
        "dropout": {"reference": 0.02, "face": 0.02, "audio": 0.1, "text": 0.1, "motion_frames": 0.4, "all": 0.05},
        "noise": {"noise_offset": 0.0, "motion_frame_noise": motion_frame_noise},
        # A short run at a high learning rate ends on noisy weights: the learning rate falls to zero
        # along a cosine and the export is an exponential moving average of the weights (the first
        # demo model, exported at a constant 8e-4 without averaging, drew smeared faces).
        "optimizer": {"learning_rate": learning_rate, "lr_scheduler": "cosine", "lr_warmup_steps": 50,
                      "adam_weight_decay": 0.0},
        "ema": {"enabled": True, "decay": 0.998, "use_for_export": True},
        "train": {"batch_size": batch_size, "max_steps": max_steps, "mixed_precision": "no", "log_every": 10},
        "checkpoint": {"every": checkpoint_every, "export_dtype": "fp32", "keep": 1},
    }
    for section, changes in (overrides or {}).items():
        values[section] = {**values.get(section, {}), **changes} if isinstance(changes, dict) else changes
    return TrainingConfig.from_dict(values)
