"""Emotive descriptions of the synthetic clips: training phrasings and held-out phrasings.

Training captions vary the sentence and the emotion word (so the text encoder's meaning, not one
exact string, is what the model keys on); the held-out prompts use sentence forms never seen in
training, so the emotion metric tests generalisation to new wording.
"""
from __future__ import annotations

import numpy as np

from .faces import EMOTIONS

# MEAD-style intensity levels 1..3 and the drawing intensity each one means.
LEVEL_INTENSITY = {1: 0.4, 2: 0.7, 3: 1.0}
LEVEL_WORDS = {1: "slightly ", 2: "", 3: "very "}
EMOTION_WORDS = {
    "neutral": ("neutral", "calm", "expressionless"),
    "happy": ("happy", "joyful", "cheerful"),
    "sad": ("sad", "unhappy", "sorrowful"),
    "angry": ("angry", "furious", "annoyed"),
    "surprised": ("surprised", "astonished", "amazed"),
}
TRAIN_TEMPLATES = (
    "A person is talking with {level}{word} emotion.",
    "Someone speaks and looks {level}{word}.",
    "A {level}{word} face talking.",
    "The speaker seems {level}{word}.",
)
HELD_OUT_TEMPLATES = (
    "While talking, this character appears {level}{word}.",
    "Portrait of a {level}{word} speaker saying a sentence.",
)


def describe(emotion: str, level: int, rng: np.random.Generator, templates=TRAIN_TEMPLATES) -> str:
    """One description of `emotion` at MEAD level 1..3 (neutral has no level word)."""
    word = EMOTION_WORDS[emotion][rng.integers(len(EMOTION_WORDS[emotion]))]
    level_word = "" if emotion == "neutral" else LEVEL_WORDS[level]
    return templates[rng.integers(len(templates))].format(level=level_word, word=word)


def held_out_prompts() -> dict[str, list[str]]:
    """emotion -> the evaluation prompts (held-out sentence forms, main emotion word, level 2)."""
    return {
        emotion: [template.format(level="", word=EMOTION_WORDS[emotion][0]) for template in HELD_OUT_TEMPLATES]
        for emotion in EMOTIONS
    }
