"""Synthetic talking-face corpora: MP4 videos with speech, emotion labels and descriptions.

`render_clip` draws one clip; `write_corpus` writes a folder in the layout the training dataset
builder reads (`videos/<speaker>/<clip>.mp4`, `labels.jsonl`, `captions.jsonl`) plus `clips.jsonl`,
the ground truth of every clip (identity, emotion, intensity, sentence, per-frame mouth opening)
that the learning metrics use.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emocast_core.video import write_video

from .captions import LEVEL_INTENSITY, describe
from .faces import EMOTIONS, FaceState, Identity, head_motion, render_face
from .speech import SAMPLE_RATE, VOICES, insert_silences, mouth_openings, speak

FPS = 25


@dataclass
class ClipSpec:
    """What one clip shows and says."""

    speaker: str
    name: str
    sentence: str
    voice: str
    speed: int
    emotion: str
    level: int
    caption: str
    seed: int
    # Digital silence (exact zeros) added to the spoken sentence, in seconds: before it, after it, and
    # once between two words. Real recordings and the padding of a video's last clip have such
    # stretches; a model that never saw one breaks the face up while it lasts.
    lead_silence: float = 0.0
    tail_silence: float = 0.0
    inner_pause: float = 0.0

    @property
    def relative_path(self) -> str:
        return f"{self.speaker}/{self.name}.mp4"


@dataclass
class RenderedClip:
    frames: np.ndarray  # (T, S, S, 3) uint8
    waveform: np.ndarray  # (N,) float32, 16 kHz
    openings: np.ndarray  # (T,) mouth opening in [0, 1]
    states: list = field(default_factory=list)  # FaceState per frame


def render_clip(identity: Identity, spec: ClipSpec, size: int, waveform: np.ndarray | None = None) -> RenderedClip:
    """Frames of `identity` saying `spec.sentence` (or `waveform`, taken as it is: the clip's final
    sound, silences included) with the spec's emotion."""
    if waveform is None:
        waveform = insert_silences(speak(spec.sentence, spec.voice, spec.speed), spec.lead_silence,
                                   spec.tail_silence, spec.inner_pause)
    num_frames = int(len(waveform) / SAMPLE_RATE * FPS)
    openings = mouth_openings(waveform, num_frames, FPS)
    motion = head_motion(num_frames, np.random.default_rng(spec.seed), FPS)
    intensity = LEVEL_INTENSITY[spec.level]
    states = [FaceState(float(o), spec.emotion, intensity, *pose) for o, pose in zip(openings, motion)]
    frames = np.stack([render_face(identity, state, size) for state in states])
    return RenderedClip(frames, waveform, openings, states)


def plan_clips(speakers: Sequence[str], clips_per_speaker: int, sentences: Sequence[str], rng: np.random.Generator,
               templates=None, silences: bool = False) -> list[ClipSpec]:
    """Clips spread evenly over the emotions (and levels), with random sentences and voices.

    `silences`: half the clips start with up to 0.6 s of digital silence, half end with up to 1.2 s,
    half have a pause of 0.2-0.7 s between two words (independently).
    """
    specs = []
    for speaker in speakers:
        order = rng.permutation(len(EMOTIONS) * 3)
        for index in range(clips_per_speaker):
            slot = int(order[index % len(order)])
            emotion, level = EMOTIONS[slot % len(EMOTIONS)], 1 + slot // len(EMOTIONS)
            caption = describe(emotion, level, rng) if templates is None else describe(emotion, level, rng, templates)
            specs.append(ClipSpec(
                speaker=speaker, name=f"clip{index:02d}", sentence=str(rng.choice(sentences)),
                voice=str(rng.choice(VOICES)), speed=int(rng.integers(140, 190)), emotion=emotion, level=level,
                caption=caption, seed=int(rng.integers(2**31)),
            ))
            if silences:
                lead, tail, pause = rng.uniform(size=3) < 0.5
                specs[-1].lead_silence = round(float(rng.uniform(0.04, 0.6)), 2) if lead else 0.0
                specs[-1].tail_silence = round(float(rng.uniform(0.04, 1.2)), 2) if tail else 0.0
                specs[-1].inner_pause = round(float(rng.uniform(0.2, 0.7)), 2) if pause else 0.0
    return specs


def write_corpus(folder: Path, identities: dict[str, Identity], specs: Sequence[ClipSpec], size: int) -> Path:
    """Write the videos and the label, caption and ground-truth files; returns `folder`."""
    folder = Path(folder)
    videos = folder / "videos"
    labels, captions, truth = [], [], []
    for spec in specs:
        clip = render_clip(identities[spec.speaker], spec, size)
        path = videos / spec.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, clip.frames, FPS, audio=(clip.waveform, SAMPLE_RATE), crf=10, preset="ultrafast")
        labels.append({"video": spec.relative_path, "emotion": spec.emotion, "intensity": spec.level, "speaker": spec.speaker})
        captions.append({"video": spec.relative_path, "caption": spec.caption})
        truth.append({**asdict(spec), "identity": asdict(identities[spec.speaker]), "openings": clip.openings.round(4).tolist()})
    for name, rows in (("labels.jsonl", labels), ("captions.jsonl", captions), ("clips.jsonl", truth)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def sample_identities(names: Sequence[str], rng: np.random.Generator) -> dict[str, Identity]:
    return {name: Identity.sample(rng) for name in names}


def identity_from_dict(data: dict) -> Identity:
    return Identity(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})
