"""Emotion presets: the eight MEAD emotions as prompts in the style the released model saw.

The released EmoCAST checkpoint was conditioned on free-form emotive sentences. The examples that
ship with it are label-style sentences such as "A person is talking with happy emotion." and
situation descriptions such as "The portrait is watching a horror movie with jump scares.". The
exact captions of its training set are not public, so the canonical preset of each emotion uses
the label-style template of the released examples::

    "A person is talking with {emotion} emotion."

MEAD's own label for fear is "fear"; the presets use the adjective forms ("fearful", "disgusted",
"surprised") that fit the template, except "contempt", which has no common adjective in that slot.

Each preset also has a few richer alternative phrasings (``EMOTION_PRESET_ALTERNATIVES``). They
are selected with ``"<name>#<n>"``: ``"happy#0"`` is the canonical prompt, ``"happy#1"`` the first
alternative, and so on. The alternatives are untested against the released model's training
captions; prefer the canonical prompt when in doubt.
"""
from __future__ import annotations

import numbers
from types import MappingProxyType
from typing import Mapping

PROMPT_TEMPLATE = "A person is talking with {emotion} emotion."

# Preset name -> the word that fills PROMPT_TEMPLATE.
_TEMPLATE_WORDS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "surprised": "surprised",
    "fearful": "fearful",
    "disgusted": "disgusted",
    "contempt": "contempt",
}

EMOTION_PRESETS: Mapping[str, str] = MappingProxyType(
    {name: PROMPT_TEMPLATE.format(emotion=word) for name, word in _TEMPLATE_WORDS.items()}
)
"""Preset name -> canonical prompt (read-only)."""

EMOTION_PRESET_ALTERNATIVES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "neutral": (
            "The person is talking calmly with a neutral expression.",
            "A portrait is talking with a relaxed, emotionless face.",
        ),
        "happy": (
            "The person is talking cheerfully with a bright smile.",
            "The portrait is laughing while sharing good news with a friend.",
        ),
        "sad": (
            "The person is talking sadly with drooping eyes and a frown.",
            "The portrait is talking about the loss of a loved one.",
        ),
        "angry": (
            "The person is talking angrily with furrowed brows and tight lips.",
            "The portrait is arguing furiously with someone.",
        ),
        "surprised": (
            "The person is talking with raised eyebrows and wide-open eyes in surprise.",
            "The portrait has just received completely unexpected news.",
        ),
        "fearful": (
            "The person is talking fearfully with wide eyes and tense lips.",
            "The portrait is watching a horror movie with jump scares.",
        ),
        "disgusted": (
            "The person is talking with a wrinkled nose and a look of disgust.",
            "The portrait is smelling something rotten.",
        ),
        "contempt": (
            "The person is talking with a one-sided smirk of contempt.",
            "The portrait is looking down on someone with disdain.",
        ),
    }
)
"""Preset name -> alternative prompts, selected with ``"<name>#1"``, ``"<name>#2"``, ..."""

# Other spellings people type for the same eight emotions (MEAD labels and nouns).
EMOTION_PRESET_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "calm": "neutral",
        "happiness": "happy",
        "joy": "happy",
        "sadness": "sad",
        "anger": "angry",
        "surprise": "surprised",
        "fear": "fearful",
        "disgust": "disgusted",
        "contemptuous": "contempt",
    }
)


def preset_name(text: str) -> str | None:
    """The preset name that ``text`` refers to (case-insensitive, aliases allowed), else None."""
    key = text.strip().lower()
    key = EMOTION_PRESET_ALIASES.get(key, key)
    return key if key in EMOTION_PRESETS else None


def resolve_prompt(text_or_preset: str) -> str:
    """Turn a preset name (optionally ``"<name>#<n>"``) into its prompt; return free text unchanged.

    Surrounding whitespace is stripped. A string that is not a preset name is taken as a free
    emotive description and passed through as-is, so any sentence works.

    Raises:
        ValueError: for ``"<preset>#<n>"`` with an unknown alternative index.
    """
    if not isinstance(text_or_preset, str):
        raise TypeError(f"expected a prompt or preset name as str, got {type(text_or_preset).__name__}")
    text = text_or_preset.strip()
    base, sep, index_text = text.partition("#")
    name = preset_name(base)
    if name is None:
        return text
    if not sep:
        return EMOTION_PRESETS[name]
    choices = (EMOTION_PRESETS[name], *EMOTION_PRESET_ALTERNATIVES[name])
    index_text = index_text.strip()
    if not index_text.isdigit() or int(index_text) >= len(choices):
        raise ValueError(
            f"{text_or_preset!r}: preset {name!r} has phrasings #0..#{len(choices) - 1} "
            f"(#0 is the canonical prompt)"
        )
    return choices[int(index_text)]


MAX_EMOTION_INTENSITY = 2.0
"""Largest accepted intensity. Beyond about 2 the extrapolated embedding leaves the region CLIP
prompts occupy and the denoiser's behaviour is no longer meaningful."""


def check_emotion_intensity(intensity: float) -> float:
    """Validate an emotion intensity and return it as a float.

    0 is the neutral prompt, 1 the requested prompt as written, values in (1, 2] extrapolate past
    it (an exaggerated emotion) — see ``blend_emotion``.

    Raises:
        ValueError: if ``intensity`` is not a finite number in [0, MAX_EMOTION_INTENSITY].
    """
    if isinstance(intensity, bool) or not isinstance(intensity, numbers.Real):
        raise ValueError(f"emotion intensity must be a number, got {intensity!r}")
    value = float(intensity)
    if not 0.0 <= value <= MAX_EMOTION_INTENSITY:  # also rejects NaN
        raise ValueError(
            f"emotion intensity {intensity!r} is outside [0, {MAX_EMOTION_INTENSITY:g}]: 0 = neutral, "
            f"1 = the prompt as written, values above 1 exaggerate it (at most {MAX_EMOTION_INTENSITY:g})"
        )
    return value
