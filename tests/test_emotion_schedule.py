"""Emotion keyframes: the text format and per-frame embeddings."""
from __future__ import annotations

import pytest
import torch
from tiny_clip import write_tiny_encoder_files

from emocast_core.conditioning.emotion import (
    EMOTION_PRESETS,
    EmotionKeyframe,
    EmotionScheduleError,
    EmotionTextEncoder,
    emotion_embedding,
    parse_emotion_schedule,
    schedule_embeddings,
)
from emocast_core.conditioning.emotion_schedule import keyframe_blend_weights

FPS = 25


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    files = write_tiny_encoder_files(tmp_path_factory.mktemp("tiny_clip"))
    return EmotionTextEncoder.from_pretrained(files["hf_folder"])


# --- parser -------------------------------------------------------------------------------------


def test_parse_the_documented_example():
    text = """
    # a comment
    0.0: neutral
    2.5: happy @0.8

    4: "talking with angry emotion" @1.0
    5s: sad#1 @ 0.5
    6: The portrait is watching a horror movie with jump scares.
    """
    assert parse_emotion_schedule(text) == [
        EmotionKeyframe(0.0, "neutral", 1.0),
        EmotionKeyframe(2.5, "happy", 0.8),
        EmotionKeyframe(4.0, "talking with angry emotion", 1.0),
        EmotionKeyframe(5.0, "sad#1", 0.5),
        EmotionKeyframe(6.0, "The portrait is watching a horror movie with jump scares.", 1.0),
    ]


def test_parse_one_line_cli_form_and_lone_entry():
    assert parse_emotion_schedule("0: neutral; 2: 'happy; very @home' @1.5") == [
        EmotionKeyframe(0.0, "neutral"),
        EmotionKeyframe(2.0, "happy; very @home", 1.5),
    ]
    assert parse_emotion_schedule("happy @0.7") == [EmotionKeyframe(0.0, "happy", 0.7)]
    assert parse_emotion_schedule("A person: talking angrily") == [EmotionKeyframe(0.0, "A person: talking angrily")]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("0: neutral\nhappy", "line 2", "no '<seconds>:'"),
        ("0: neutral\n\n1: happy @loud", "line 3", "not a number"),
        ("0: neutral\n1: happy @3", "line 2", "outside"),
        ("0: neutral\n2: happy\n1: sad", "line 3", "does not come after"),
        ("0: neutral\n1: happy\n1: sad", "line 3", "does not come after"),
        ("0: neutral\n1:", "line 2", "no emotion"),
        ("0: neutral\n1: @0.5", "line 2", "no emotion"),
        ('0: neutral\n1: "happy @0.5', "line 2", "unterminated"),
        ('0: "happy" 0.5', "line 1", "unexpected"),
        ("-1: happy", "line 1", ">= 0"),
        ("0: a@b @0.5", "line 1", "more than one '@'"),
        ("0: neutral; 1: happy#9", "line 1, entry 2", "#0..#2"),
    ],
)
def test_parser_errors_name_the_line(text, line, reason):
    with pytest.raises(EmotionScheduleError) as error:
        parse_emotion_schedule(text)
    assert line in str(error.value) and reason in str(error.value)


def test_empty_schedule_is_an_error():
    with pytest.raises(EmotionScheduleError, match="no keyframes"):
        parse_emotion_schedule("# only a comment\n\n")


# --- timing weights -----------------------------------------------------------------------------


def test_weights_hold_first_keyframe_and_are_convex():
    weights = keyframe_blend_weights([1.0, 2.0, 2.2], num_frames=100, fps=FPS, transition=0.5)
    assert weights.shape == (100, 3)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(100, dtype=torch.float64))
    assert (weights >= 0).all()
    assert torch.equal(weights[:25 + 1], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand(26, 3))
    assert torch.equal(weights[-1], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))


def test_centered_and_hard_transitions():
    centered = keyframe_blend_weights([0.0, 2.0], num_frames=75, fps=FPS, transition=1.0, align="center")
    assert centered[50, 1] == 0.5  # half-way exactly at the keyframe
    assert centered[37, 1] == 0.0 and centered[63, 1] == 1.0
    hard = keyframe_blend_weights([0.0, 2.0], num_frames=75, fps=FPS, transition=0.0)
    assert hard[49, 1] == 0.0 and hard[50, 1] == 1.0


def test_cross_fade_follows_a_smoothstep():
    # One keyframe change at 1 s with a 1 s cross-fade: frame f (at f / 25 s) is x = f / 25 - 1 into it.
    weights = keyframe_blend_weights([0.0, 1.0], num_frames=51, fps=FPS, transition=1.0)
    x = torch.arange(25, 51, dtype=torch.float64) / FPS - 1.0
    torch.testing.assert_close(weights[25:, 1], 3 * x**2 - 2 * x**3, rtol=0, atol=1e-12)
    assert weights[31, 1] < 0.2  # eases in: a quarter of the way through, well under a quarter


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_frames=0), dict(fps=0.0), dict(transition=-1.0), dict(align="middle")],
)
def test_weight_arguments_are_checked(kwargs):
    arguments = dict(keyframe_times=[0.0, 1.0], num_frames=10, fps=FPS, transition=0.5) | kwargs
    with pytest.raises(ValueError):
        keyframe_blend_weights(**arguments)


# --- per-frame embeddings -----------------------------------------------------------------------


def test_schedule_embeddings_across_a_keyframe(encoder):
    num_frames = 100  # 4 s
    frames = schedule_embeddings(encoder, "0: neutral\n2: happy @0.8", num_frames=num_frames, fps=FPS, transition=0.4)
    assert frames.shape == (num_frames, 77, encoder.hidden_size)
    neutral = emotion_embedding(encoder, "neutral")[0]
    happy = emotion_embedding(encoder, "happy", 0.8)[0]
    # Held exactly far from the keyframe (before: 0..2 s, after: 2.4..4 s).
    assert all(torch.equal(frames[f], neutral) for f in range(0, 51))
    assert all(torch.equal(frames[f], happy) for f in range(60, num_frames))
    # Inside the 0.4 s transition the frame moves monotonically from neutral to happy.
    distance_from_neutral = [float((frames[f] - neutral).norm()) for f in range(50, 61)]
    assert all(b > a for a, b in zip(distance_from_neutral, distance_from_neutral[1:]))
    assert not torch.equal(frames[50], frames[55])


class PromptCountingEncoder(EmotionTextEncoder):
    """Records every batch of prompts it encodes."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.encoded_batches: list[tuple[str, ...]] = []

    def encode(self, prompts):
        self.encoded_batches.append(tuple(prompts))
        return super().encode(prompts)


def test_schedule_holds_first_keyframe_and_encodes_each_prompt_once(encoder):
    counting = PromptCountingEncoder(tokenizer=encoder.tokenizer, text_model=encoder.text_model)
    keyframes = [
        EmotionKeyframe(1.0, "sad", 0.5),
        EmotionKeyframe(2.0, "happy"),
        EmotionKeyframe(3.0, "sad"),
        EmotionKeyframe(3.5, EMOTION_PRESETS["happy"], 0.3),
    ]
    frames = schedule_embeddings(counting, keyframes, num_frames=120, fps=FPS)
    assert sorted(counting.encoded_batches) == sorted(
        [(EMOTION_PRESETS["sad"],), (EMOTION_PRESETS["happy"],), (EMOTION_PRESETS["neutral"],)]
    )
    half_sad = emotion_embedding(encoder, "sad", 0.5)[0]
    assert all(torch.equal(frames[f], half_sad) for f in range(0, 26))  # before the first keyframe too


def test_schedule_keeps_encoder_dtype(tmp_path):
    files = write_tiny_encoder_files(tmp_path)
    encoder = EmotionTextEncoder.from_pretrained(files["hf_folder"], dtype=torch.bfloat16)
    frames = schedule_embeddings(encoder, "0: sad\n0.2: happy", num_frames=10, fps=FPS, transition=0.1)
    assert frames.dtype == torch.bfloat16
    assert torch.equal(frames[0], emotion_embedding(encoder, "sad")[0])
