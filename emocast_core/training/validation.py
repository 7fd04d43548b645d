"""Validation clips rendered during training with the inference pipeline itself.

Each validation clip uses a dataset clip's first frame as the reference portrait, its identity,
union masks and audio, and each configured prompt (or the clip's own caption). The video is written
with its audio to `output_dir/validation/step-XXXXXX/<clip id>-<n>.mp4`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from ..conditioning.audio import audio_windows
from ..conditioning.emotion import EmotionTextEncoder, resolve_prompt
from ..conditioning.masks import mask_levels
from ..guidance import GuidanceConfig
from ..models.net import EmoCASTNet
from ..pipeline import EmoCASTPipeline, EmotionConditions, GenerationConfig, ReferenceConditions
from ..scheduling import make_scheduler
from ..video import write_video
from .config import NoiseSection, ValidationSection
from .objectives import noise_schedule
from .shards import ClipRecord, ShardReader

# Inference uses the previous clip's last frames as motion frames; the first clip repeats the reference.
DEFAULT_MOTION_FRAMES = 2


def make_validation_scheduler(noise: NoiseSection):
    """The sampler's DDIM set-up on the training betas (v-prediction, zero-terminal SNR, trailing)."""
    return make_scheduler("ddim", **noise_schedule(noise))


def reference_from_clip(reader: ShardReader, record: ClipRecord) -> ReferenceConditions:
    """The reference conditions of a dataset clip: its first frame, identity and union masks (all four
    front-end levels, as the face front-end gives them; the pipeline fits them to the network)."""
    frame = torch.from_numpy(reader.frames(record, [0])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    masks = {}
    for name in ("full", "face", "lip"):
        levels = mask_levels(reader.tensor(record, f"soft_{name}").numpy(), record.size)
        masks[name] = [torch.from_numpy(level) for level in levels]
    return ReferenceConditions(
        pixel_values=frame,
        face_embedding=reader.tensor(record, "face_embedding").float()[None],
        face_region=reader.tensor(record, "face_region").float()[None, None].expand(1, 3, -1, -1).contiguous(),
        full_mask=masks["full"],
        face_mask=masks["face"],
        lip_mask=masks["lip"],
    )


@torch.no_grad()
def render_validation(
    net: EmoCASTNet,
    vae,
    text_encoder: EmotionTextEncoder,
    reader: ShardReader,
    records: Sequence[ClipRecord],
    settings: ValidationSection,
    noise: NoiseSection,
    out_dir: Path,
    num_motion_frames: int,
    audio_margin: int = 2,
) -> list[Path]:
    """Render every (clip, prompt) pair; returns the written video paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline = EmoCASTPipeline(net, vae, make_validation_scheduler(noise))
    generation = GenerationConfig(
        num_inference_steps=settings.num_inference_steps,
        guidance=GuidanceConfig(scale=settings.guidance_scale),
        clip_length=settings.clip_length,
        num_motion_frames=num_motion_frames or DEFAULT_MOTION_FRAMES,
        seed=settings.seed,
    )
    uncond = text_encoder.unconditional()
    written = []
    for record in records:
        reference = reference_from_clip(reader, record)
        features = reader.tensor(record, "audio_features").float()
        windows = audio_windows(features, audio_margin)
        num_frames = min(settings.num_frames, record.num_frames)
        waveform = reader.tensor(record, "audio_waveform").float() / 32768.0
        prompts = list(settings.prompts) or [record.captions[0]]
        for number, prompt in enumerate(prompts):
            emotion = EmotionConditions(text_encoder.encode([resolve_prompt(prompt)]), uncond)
            frames = pipeline(reference, emotion, windows, num_frames, generation)
            path = out_dir / f"{record.id}-{number}.mp4"
            write_video(path, frames, fps=record.fps, audio=(waveform.numpy(), 16000))
            written.append(path)
    return written


def validation_records(records: Sequence[ClipRecord], settings: ValidationSection) -> list[ClipRecord]:
    """The configured clips (by id), or the first `num_clips`."""
    if settings.clips:
        by_id = {record.id: record for record in records}
        missing = [clip for clip in settings.clips if clip not in by_id]
        if missing:
            raise KeyError(f"validation clips not in the dataset: {missing}")
        return [by_id[clip] for clip in settings.clips]
    return list(records[: settings.num_clips])
