"""Emotion accuracy: a facial-expression classifier (HSEmotion / EmotiEffLib ONNX layout) against
the emotion each video was made for.

The classifier takes a face crop resized to its input side (224 for the EfficientNet-B0 models,
260 for B2), RGB scaled to [0, 1] and normalised with the ImageNet mean and deviation, and outputs
scores over AffectNet's classes in alphabetical order: 8 (Anger, Contempt, Disgust, Fear,
Happiness, Neutral, Sadness, Surprise), 7 (the same without Contempt), or 8 + valence and arousal
for the multi-task models. A video's predicted emotion is the class of its mean probability over
the sampled frames.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from emocast_core.conditioning.emotion_presets import (
    EMOTION_PRESET_ALIASES,
    EMOTION_PRESETS,
    preset_name,
)
from emocast_core.conditioning.face_models import create_session

CLASSES_8 = ("angry", "contempt", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
CLASSES_7 = ("angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def requested_emotion(emotion: str | None, prompt: str | None) -> str | None:
    """The preset name (``neutral``, ``happy``, ...) a video was made for: its ``emotion`` label
    (preset names and their aliases), else the preset whose name or canonical prompt the prompt holds."""
    if emotion:
        name = preset_name(emotion)
        if name is None:
            raise ValueError(f"unknown emotion label {emotion!r}; use one of {', '.join(EMOTION_PRESETS)}")
        return name
    if not prompt:
        return None
    text = prompt.strip().lower()
    for name, canonical in EMOTION_PRESETS.items():
        if text == canonical.lower():
            return name
    words = {word.strip(".,;:!?\"'") for word in text.split()}
    named = {name for name in EMOTION_PRESETS if name in words} | {EMOTION_PRESET_ALIASES[w] for w in words if w in EMOTION_PRESET_ALIASES}
    return named.pop() if len(named) == 1 else None  # no guess when a prompt names several emotions


class EmotionClassifier:
    """An ONNX facial-expression classifier (see the module doc)."""

    def __init__(self, session):
        self.session = session
        model_input = session.get_inputs()[0]
        self.input_name = model_input.name
        side = model_input.shape[2]
        self.input_size = side if isinstance(side, int) and side > 0 else 224
        num_outputs = session.get_outputs()[0].shape[-1]
        if num_outputs in (8, 10):
            self.classes = CLASSES_8
        elif num_outputs == 7:
            self.classes = CLASSES_7
        else:
            raise ValueError(f"expected an expression classifier with 7, 8 or 10 outputs, got {num_outputs}")

    @classmethod
    def from_file(cls, path: str | Path, providers: Sequence[str] | None = None) -> EmotionClassifier:
        return cls(create_session(path, providers))

    def probabilities(self, faces_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """``(N, len(classes))`` softmax probabilities of ``(H, W, 3)`` uint8 RGB face crops."""
        blobs = []
        for face in faces_rgb:
            resized = cv2.resize(face, (self.input_size, self.input_size)).astype(np.float32) / 255.0
            blobs.append(((resized - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        scores = self.session.run(None, {self.input_name: np.stack(blobs).astype(np.float32)})[0]
        logits = scores[:, : len(self.classes)].astype(np.float64)  # multi-task models append valence, arousal
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def face_crop(frame: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """The face box cut from the frame (the whole frame when there is no box)."""
    if box is None:
        return frame
    height, width = frame.shape[:2]
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
    return frame[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else frame
