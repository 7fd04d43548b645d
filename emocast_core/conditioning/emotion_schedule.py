"""Emotion keyframes: the schedule text format and the per-frame blend weights.

This module is pure bookkeeping (no text encoder): it parses a schedule and says, for every video
frame, how much of each keyframe's embedding the frame gets. ``emotion.schedule_embeddings`` turns
that into per-frame CLIP embeddings.

Schedule text format
--------------------
One keyframe per line (or several on one line, separated by ``;``)::

    # comment lines start with '#'
    0: neutral
    2.5: happy @0.8
    4s: "The person is talking with angry emotion." @1.0
    6: sad#1 @0.5

* ``<time>`` — seconds from the start of the video, a non-negative number, optionally followed by
  ``s``. Times must increase strictly from one keyframe to the next.
* ``<emotion>`` — a preset name (``neutral happy sad angry surprised fearful disgusted contempt``
  and aliases such as ``fear``; ``happy#1`` picks an alternative phrasing), or free text. Free text
  may be quoted with ``"..."`` or ``'...'``; quote it when it contains ``@`` or ``;``.
* ``@<intensity>`` — optional, default 1. 0 = neutral, 1 = the prompt as written, up to 2
  exaggerates (see ``check_emotion_intensity``).

A schedule with a single entry may leave out the time (``happy @0.7`` means ``0: happy @0.7``).
Blank lines and lines starting with ``#`` are ignored.

Timing
------
Before the first keyframe the first keyframe's embedding is held. At each later keyframe the
embedding cross-fades from the previous state to the keyframe's embedding with a smoothstep over
``transition`` seconds, starting at the keyframe time (``align="start"``) or centred on it
(``align="center"``). Transitions that overlap (keyframes closer than ``transition``) chain: every
frame stays a convex combination of keyframe embeddings, but a short-lived keyframe may never be
reached fully.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Literal

import torch

from .emotion_presets import check_emotion_intensity, resolve_prompt

TransitionAlign = Literal["start", "center"]


class EmotionScheduleError(ValueError):
    """A schedule line that cannot be parsed; the message names the line."""


@dataclass(frozen=True)
class EmotionKeyframe:
    """One keyframe: from ``time`` seconds on, show ``prompt`` at ``intensity``.

    Attributes:
        time: seconds from the start of the video (>= 0).
        prompt: a preset name (see ``EMOTION_PRESETS``) or free emotive text.
        intensity: 0 = neutral, 1 = the prompt as written, up to 2 exaggerates.
    """

    time: float
    prompt: str
    intensity: float = 1.0

    def __post_init__(self) -> None:
        if not (isinstance(self.time, numbers.Real) and math.isfinite(self.time) and self.time >= 0):
            raise ValueError(f"keyframe time must be a finite number of seconds >= 0, got {self.time!r}")
        if not isinstance(self.prompt, str):
            raise ValueError(f"keyframe prompt must be a str, got {type(self.prompt).__name__}")
        check_emotion_intensity(self.intensity)


_NUMBER = r"[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
_TIME_PREFIX = re.compile(rf"^\s*(?P<time>[+-]?{_NUMBER})\s*s?\s*:(?P<rest>.*)$")
_INTENSITY_SUFFIX = re.compile(r"^(?P<emotion>.*?)\s*@\s*(?P<intensity>\S*)\s*$")
_ENTRY_SHAPE = "expected '<seconds>: <preset or text> [@<intensity>]', e.g. '2.5: happy @0.8'"


def _split_entries(line: str) -> list[str]:
    """Split a line on ';' outside quotes."""
    entries, current, quote = [], [], None
    for char in line:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ";":
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return entries


def _parse_emotion(text: str, where: str) -> tuple[str, float]:
    """``'<preset or text> [@<intensity>]'`` -> (prompt as written, intensity)."""
    text = text.strip()
    intensity = 1.0
    if text[:1] in ("'", '"'):
        quote = text[0]
        end = text.find(quote, 1)
        if end < 0:
            raise EmotionScheduleError(f"{where}: unterminated {quote} quote")
        emotion, tail = text[1:end], text[end + 1 :].strip()
        if tail:
            if not tail.startswith("@"):
                raise EmotionScheduleError(f"{where}: unexpected {tail!r} after the quoted text; {_ENTRY_SHAPE}")
            intensity_text = tail[1:].strip()
        else:
            intensity_text = None
    else:
        match = _INTENSITY_SUFFIX.match(text) if "@" in text else None
        if match:
            emotion, intensity_text = match["emotion"], match["intensity"]
            if "@" in emotion:
                raise EmotionScheduleError(f"{where}: more than one '@'; quote free text that contains '@'")
        else:
            emotion, intensity_text = text, None
    if intensity_text is not None:
        try:
            intensity = float(intensity_text)
        except ValueError:
            raise EmotionScheduleError(f"{where}: intensity {intensity_text!r} is not a number") from None
        try:
            check_emotion_intensity(intensity)
        except ValueError as error:
            raise EmotionScheduleError(f"{where}: {error}") from None
    if not emotion.strip():
        raise EmotionScheduleError(f"{where}: no emotion given; {_ENTRY_SHAPE}")
    try:
        resolve_prompt(emotion)  # catches e.g. an unknown alternative index now, with the line number
    except ValueError as error:
        raise EmotionScheduleError(f"{where}: {error}") from None
    return emotion.strip(), intensity


def parse_emotion_schedule(text: str) -> list[EmotionKeyframe]:
    """Parse the schedule text format (see the module docstring) into keyframes sorted by time.

    Raises:
        EmotionScheduleError: for the first bad line, naming its line number and content.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the schedule as str, got {type(text).__name__}")
    entries: list[tuple[str, str]] = []  # (where, entry text)
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pieces = [piece for piece in _split_entries(line) if piece.strip()]
        for index, piece in enumerate(pieces, start=1):
            where = f"line {line_number}" + (f", entry {index}" if len(pieces) > 1 else "")
            entries.append((f"{where} ({piece.strip()!r})", piece))
    if not entries:
        raise EmotionScheduleError(f"the emotion schedule has no keyframes; {_ENTRY_SHAPE}")

    keyframes: list[EmotionKeyframe] = []
    for where, entry in entries:
        match = _TIME_PREFIX.match(entry)
        if match:
            time, rest = float(match["time"]), match["rest"]
            if time < 0 or not math.isfinite(time):
                raise EmotionScheduleError(f"{where}: time must be >= 0 seconds")
        elif len(entries) == 1:
            time, rest = 0.0, entry  # a lone emotion without a time holds for the whole video
        else:
            raise EmotionScheduleError(f"{where}: no '<seconds>:' at the start; {_ENTRY_SHAPE}")
        prompt, intensity = _parse_emotion(rest, where)
        if keyframes and time <= keyframes[-1].time:
            raise EmotionScheduleError(
                f"{where}: time {time:g} s does not come after the previous keyframe ({keyframes[-1].time:g} s)"
            )
        keyframes.append(EmotionKeyframe(time=time, prompt=prompt, intensity=intensity))
    return keyframes


def smoothstep(x: torch.Tensor) -> torch.Tensor:
    """3x^2 - 2x^3 on x clamped to [0, 1]; exactly 0 at and below 0, exactly 1 at and above 1."""
    x = x.clamp(0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def keyframe_blend_weights(
    keyframe_times: list[float],
    num_frames: int,
    fps: float,
    transition: float = 0.5,
    align: TransitionAlign = "start",
) -> torch.Tensor:
    """Per-frame weights of each keyframe's embedding.

    Frame ``f`` is at ``f / fps`` seconds. The embedding of a frame is
    ``e_0 + sum_k s_k(t) * (e_k - e_{k-1})`` where ``s_k`` is a smoothstep from 0 to 1 over the
    transition of keyframe ``k``; rewritten as weights on ``e_k`` this is ``s_k - s_{k+1}``.
    Frames outside every transition get exactly one-hot weights, so they reproduce a keyframe's
    embedding exactly.

    Args:
        keyframe_times: strictly increasing keyframe times in seconds, K entries.
        num_frames: number of video frames T (>= 1).
        fps: frames per second (> 0).
        transition: cross-fade duration in seconds (>= 0; 0 switches hard at the keyframe time).
        align: ``"start"`` starts each cross-fade at its keyframe time, ``"center"`` centres it there.

    Returns:
        float64 tensor (T, K); rows are convex weights summing to 1.
    """
    if not keyframe_times:
        raise ValueError("need at least one keyframe")
    if any(later <= earlier for earlier, later in zip(keyframe_times, keyframe_times[1:])):
        raise ValueError(f"keyframe times must increase strictly, got {list(keyframe_times)}")
    if not (isinstance(num_frames, int) and num_frames >= 1):
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not (math.isfinite(transition) and transition >= 0):
        raise ValueError(f"transition must be a duration in seconds >= 0, got {transition!r}")
    if align not in ("start", "center"):
        raise ValueError(f"align must be 'start' or 'center', got {align!r}")

    frame_times = torch.arange(num_frames, dtype=torch.float64) / fps  # (T,)
    later_times = torch.tensor(keyframe_times[1:], dtype=torch.float64)  # (K-1,)
    starts = later_times - transition / 2 if align == "center" else later_times
    if transition > 0:
        progress = smoothstep((frame_times[:, None] - starts[None, :]) / transition)  # (T, K-1)
    else:
        progress = (frame_times[:, None] >= starts[None, :]).to(torch.float64)
    ones = torch.ones(num_frames, 1, dtype=torch.float64)
    zeros = torch.zeros(num_frames, 1, dtype=torch.float64)
    reached = torch.cat([ones, progress, zeros], dim=1)  # s_0 = 1, s_K = 0: (T, K+1)
    return reached[:, :-1] - reached[:, 1:]
