"""Procedural talking faces: identities, emotions and one drawing function.

A face is drawn from an `Identity` (colours, face shape, hair style, background) and a `FaceState`
(mouth opening from the speech, emotion and intensity, small head motion). The drawing is done at
`SUPERSAMPLING` x the output size and reduced with area averaging, so small frames stay smooth.

Everything a metric or an analyzer needs to know about a frame follows from the same geometry
(`FaceGeometry`), so the synthetic face analysis (`analysis.py`) never has to guess.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SUPERSAMPLING = 4
EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")
MOUTH_INTERIOR = (70, 18, 30)
EYE_WHITE = (235, 235, 230)
SKIN_TONES = ((236, 200, 170), (224, 172, 130), (198, 140, 100), (150, 100, 70), (110, 72, 50), (245, 214, 190))
HAIR_COLOURS = ((30, 25, 20), (90, 60, 35), (170, 120, 60), (200, 170, 110), (120, 40, 20), (140, 140, 140))
HAIR_STYLES = ("short", "long", "bald", "fringe")


@dataclass(frozen=True)
class Identity:
    """What stays the same for one synthetic person (colours are RGB 0..255)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    background: tuple[int, int, int]
    lips: tuple[int, int, int]
    iris: tuple[int, int, int]
    hair_style: str
    face_aspect: float  # face half-width / half-height
    face_scale: float  # face half-height as a fraction of the frame

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Identity:
        skin = _jitter(SKIN_TONES[rng.integers(len(SKIN_TONES))], rng, 10)
        hair = _jitter(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], rng, 12)
        # The background is kept far from the skin so that the face is always separable.
        while True:
            background = tuple(int(v) for v in rng.integers(20, 236, size=3))
            if _distance(background, skin) > 120 and _distance(background, hair) > 60:
                break
        lips = _jitter((175, 80, 85), rng, 20)
        iris = _jitter(((60, 40, 25), (50, 90, 140), (70, 110, 60))[rng.integers(3)], rng, 10)
        return cls(
            skin=skin, hair=hair, background=background, lips=lips, iris=iris,
            hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
            face_aspect=float(rng.uniform(0.70, 0.86)), face_scale=float(rng.uniform(0.27, 0.31)),
        )

    def attributes(self) -> np.ndarray:
        """(9,) skin, hair and background colours in [0, 1]: what the identity metric compares."""
        return np.array(self.skin + self.hair + self.background, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class FaceState:
    """One frame's expression and pose.

    opening: mouth opening in [0, 1] (from the speech envelope). emotion / intensity: one of
    `EMOTIONS` and 0..1. shift_x, shift_y, tilt: head motion as fractions of the frame / degrees.
    """

    opening: float = 0.0
    emotion: str = "neutral"
    intensity: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    tilt: float = 0.0


@dataclass(frozen=True)
class EmotionShape:
    """Full-intensity deformations of an emotion (fractions of the face half-height)."""

    corner_lift: float = 0.0  # mouth corners up (+) or down (-)
    mouth_width: float = 0.0  # relative change of the mouth width
    base_opening: float = 0.0  # mouth opening added to the speech
    brow_raise: float = 0.0  # both brows up (+)
    brow_inner: float = 0.0  # inner brow ends up (+, sad) or down (-, angry)
    eye_open: float = 0.0  # relative change of the eye height


# Deformations are bold on purpose: the frames are small and pass through a small VAE, so a subtle
# brow tilt would not survive to the frame the metrics read. Angry also widens the mouth and pulls
# its corners down: drawn with its brows alone (and a slight mouth change) the 128 px model
# rendered it as neutral.
EMOTION_SHAPES = {
    "neutral": EmotionShape(),
    "happy": EmotionShape(corner_lift=0.26, mouth_width=0.38, brow_raise=0.06, eye_open=-0.45),
    "sad": EmotionShape(corner_lift=-0.22, mouth_width=-0.18, brow_inner=0.26, eye_open=-0.40),
    "angry": EmotionShape(corner_lift=-0.15, mouth_width=0.24, brow_raise=-0.12, brow_inner=-0.40, eye_open=-0.35),
    "surprised": EmotionShape(mouth_width=-0.35, base_opening=0.45, brow_raise=0.26, eye_open=0.80),
}


@dataclass(frozen=True)
class FaceGeometry:
    """Where the face is in an `size` x `size` frame (pixels)."""

    center_x: float
    center_y: float
    half_width: float
    half_height: float
    tilt: float

    @classmethod
    def of(cls, identity: Identity, state: FaceState, size: int) -> FaceGeometry:
        half_height = identity.face_scale * size
        return cls(
            center_x=size * (0.5 + state.shift_x),
            center_y=size * (0.53 + state.shift_y),
            half_width=identity.face_aspect * half_height,
            half_height=half_height,
            tilt=state.tilt,
        )

    def point(self, x: float, y: float) -> tuple[float, float]:
        """Face coordinates (x, y in units of the half-width / half-height, y down) -> pixels."""
        angle = np.deg2rad(self.tilt)
        px, py = x * self.half_width, y * self.half_height
        return (
            self.center_x + px * np.cos(angle) - py * np.sin(angle),
            self.center_y + px * np.sin(angle) + py * np.cos(angle),
        )

    def mouth_center(self) -> tuple[float, float]:
        return self.point(0.0, MOUTH_Y)


MOUTH_Y = 0.5
MOUTH_HALF_WIDTH = 0.36  # of the face half-width
MAX_OPENING = 0.32  # mouth opening at 1.0, of the face half-height


def render_face(identity: Identity, state: FaceState, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB frame."""
    scale = SUPERSAMPLING
    big = size * scale
    canvas = np.empty((big, big, 3), dtype=np.uint8)
    canvas[:] = identity.background
    geometry = FaceGeometry.of(identity, state, big)
    shape = EMOTION_SHAPES[state.emotion]
    strength = float(np.clip(state.intensity, 0.0, 1.5))

    def pts(points):
        return np.array([geometry.point(x, y) for x, y in points], dtype=np.float64)

    def fill(points, colour):
        cv2.fillPoly(canvas, [np.round(pts(points) * 16).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)

    ellipse = [(np.cos(a), np.sin(a)) for a in np.linspace(0, 2 * np.pi, 72, endpoint=False)]
    if identity.hair_style in ("long",):
        fill([(1.18 * x, 1.1 * y + (0.35 if y > 0 else 0.0)) for x, y in ellipse], identity.hair)
    fill([(x, y) for x, y in ellipse], identity.skin)
    if identity.hair_style != "bald":
        # A cap over the top of the head; the fringe style comes lower over the forehead.
        low = -0.55 if identity.hair_style == "fringe" else -0.72
        cap = [(1.04 * np.cos(a), 1.06 * np.sin(a)) for a in np.linspace(np.pi, 2 * np.pi, 36)]
        fill(cap + [(0.9, low), (0.0, low + 0.05), (-0.9, low)], identity.hair)

    # Eyes: whites, iris, eyelid (skin) that closes them by the emotion.
    eye_height = 0.09 * (1.0 + strength * shape.eye_open)
    for side in (-1, 1):
        cx, cy = side * 0.38, -0.12
        fill([(cx + 0.2 * x, cy + eye_height * y) for x, y in ellipse], EYE_WHITE)
        fill([(cx + 0.08 * x, cy + min(eye_height, 0.08) * y) for x, y in ellipse], identity.iris)
        # Brows: raised / lowered, inner end tilted.
        brow_y = -0.36 - strength * shape.brow_raise
        inner = (cx - side * 0.18, brow_y - strength * shape.brow_inner)
        outer = (cx + side * 0.2, brow_y + 0.02)
        thickness = 0.055
        fill([(inner[0], inner[1] - thickness), (outer[0], outer[1] - thickness),
              (outer[0], outer[1] + thickness), (inner[0], inner[1] + thickness)], identity.hair)

    # Mouth: corners lifted/lowered by the emotion, opened by the speech (+ surprise).
    half_width = MOUTH_HALF_WIDTH * (1.0 + strength * shape.mouth_width)
    lift = strength * shape.corner_lift
    opening = MAX_OPENING * float(np.clip(state.opening + strength * shape.base_opening, 0.0, 1.2))
    xs = np.linspace(-1.0, 1.0, 21)
    bend = 1.0 - xs**2  # 0 at the corners, 1 in the middle
    corner_y = MOUTH_Y - lift
    upper = [(half_width * x, corner_y + lift * b - 0.5 * opening * b - 0.025 * b) for x, b in zip(xs, bend)]
    lower = [(half_width * x, corner_y + lift * b + 0.5 * opening * b + 0.045 * b) for x, b in zip(xs[::-1], bend[::-1])]
    fill(upper + lower, identity.lips)
    if opening > 0.005:
        inner_upper = [(0.9 * half_width * x, corner_y + lift * b - 0.5 * opening * b) for x, b in zip(xs, bend)]
        inner_lower = [(0.9 * half_width * x, corner_y + lift * b + 0.5 * opening * b) for x, b in zip(xs[::-1], bend[::-1])]
        fill(inner_upper + inner_lower, MOUTH_INTERIOR)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)


def head_motion(num_frames: int, rng: np.random.Generator, fps: float = 25.0) -> list[tuple[float, float, float]]:
    """Small smooth (shift_x, shift_y, tilt) per frame: slow sinusoids with random phases."""
    t = np.arange(num_frames) / fps
    phases = rng.uniform(0, 2 * np.pi, size=3)
    rates = rng.uniform(0.15, 0.45, size=3)
    shift_x = 0.015 * np.sin(2 * np.pi * rates[0] * t + phases[0])
    shift_y = 0.010 * np.sin(2 * np.pi * rates[1] * t + phases[1])
    tilt = 3.0 * np.sin(2 * np.pi * rates[2] * t + phases[2])
    return list(zip(shift_x.tolist(), shift_y.tolist(), tilt.tolist()))


def portrait_of(identity: Identity, size: int = 64) -> np.ndarray:
    """The reference portrait: neutral, mouth closed, head straight."""
    return render_face(identity, FaceState(0.0, "neutral", 0.0), size)


def _jitter(colour, rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _distance(a, b) -> float:
    return float(np.abs(np.array(a, dtype=np.float64) - np.array(b, dtype=np.float64)).sum())
