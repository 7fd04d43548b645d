"""Emotion presets, prompt resolution and the intensity blend."""
from __future__ import annotations

import pytest
import torch
from tiny_clip import write_tiny_encoder_files

from emocast_core.conditioning.emotion import (
    EMOTION_PRESET_ALTERNATIVES,
    EMOTION_PRESETS,
    EmotionTextEncoder,
    blend_emotion,
    emotion_embedding,
    resolve_prompt,
)

MEAD_EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised", "fearful", "disgusted", "contempt")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    files = write_tiny_encoder_files(tmp_path_factory.mktemp("tiny_clip"))
    return EmotionTextEncoder.from_pretrained(files["hf_folder"])


def test_the_eight_mead_presets_in_the_released_prompt_style():
    assert tuple(EMOTION_PRESETS) == MEAD_EMOTIONS
    assert EMOTION_PRESETS["happy"] == "A person is talking with happy emotion."
    assert EMOTION_PRESETS["neutral"] == "A person is talking with neutral emotion."
    for name in MEAD_EMOTIONS:
        assert resolve_prompt(name) == EMOTION_PRESETS[name]
        assert resolve_prompt(f"  {name.upper()} ") == EMOTION_PRESETS[name]
        assert resolve_prompt(f"{name}#0") == EMOTION_PRESETS[name]
        alternatives = EMOTION_PRESET_ALTERNATIVES[name]
        assert alternatives and all(resolve_prompt(f"{name}#{i + 1}") == text for i, text in enumerate(alternatives))


def test_aliases_free_text_and_bad_alternative_index():
    assert resolve_prompt("fear") == EMOTION_PRESETS["fearful"]
    assert resolve_prompt("Surprise") == EMOTION_PRESETS["surprised"]
    free = "The portrait is experiencing chronic illness or pain."
    assert resolve_prompt(f" {free} ") == free
    assert resolve_prompt("joyful but tired") == "joyful but tired"
    with pytest.raises(ValueError, match="#0..#2"):
        resolve_prompt("happy#7")


def test_intensity_one_and_zero_are_exact(encoder):
    happy = encoder.encode([EMOTION_PRESETS["happy"]])
    neutral = encoder.encode([EMOTION_PRESETS["neutral"]])
    assert torch.equal(emotion_embedding(encoder, "happy"), happy)
    assert torch.equal(emotion_embedding(encoder, "happy", 1.0), happy)
    assert torch.equal(emotion_embedding(encoder, "happy", 0.0), neutral)
    assert torch.equal(emotion_embedding(encoder, "happy", 0), neutral)


def test_intensity_interpolates_and_extrapolates_linearly(encoder):
    happy = encoder.encode([EMOTION_PRESETS["happy"]])
    neutral = encoder.encode([EMOTION_PRESETS["neutral"]])
    torch.testing.assert_close(emotion_embedding(encoder, "happy", 0.5), (happy + neutral) / 2)
    torch.testing.assert_close(emotion_embedding(encoder, "happy", 1.5), neutral + 1.5 * (happy - neutral))
    custom_neutral = encoder.encode(["calm face"])
    torch.testing.assert_close(
        emotion_embedding(encoder, "happy", 0.25, neutral="calm face"), custom_neutral + 0.25 * (happy - custom_neutral)
    )


@pytest.mark.parametrize("bad", [-0.1, 2.01, float("nan"), float("inf"), True, "1"])
def test_intensity_out_of_range_is_a_clear_error(encoder, bad):
    with pytest.raises(ValueError, match="intensity"):
        emotion_embedding(encoder, "happy", bad)


def test_blend_keeps_dtype_and_is_exact_at_the_ends():
    neutral = torch.randn(1, 77, 8, dtype=torch.float16)
    target = torch.randn(1, 77, 8, dtype=torch.float16)
    assert torch.equal(blend_emotion(neutral, target, 1.0), target)
    assert torch.equal(blend_emotion(neutral, target, 0.0), neutral)
    between = blend_emotion(neutral, target, 0.3)
    assert between.dtype == torch.float16
    # Blended in float32 and rounded once to float16: within one float16 rounding of the exact value.
    exact = neutral.double() + 0.3 * (target.double() - neutral.double())
    torch.testing.assert_close(between.double(), exact, rtol=2**-10, atol=2**-14)
    assert not torch.equal(between, neutral) and not torch.equal(between, target)
