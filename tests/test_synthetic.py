"""The synthetic talking faces: drawing, speech-driven mouths, face analysis, corpus files, MiniLM."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from emocast_core.demo.drawn_faces import SyntheticRecognizer, synthetic_face_analyzer
from emocast_research.synthetic.faces import (
    EMOTIONS,
    FaceGeometry,
    FaceState,
    Identity,
    render_face,
)
from emocast_research.synthetic.speech import mouth_openings

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def identity(seed: int = 0) -> Identity:
    return Identity.sample(np.random.default_rng(seed))


def mouth_darkness(frame: np.ndarray, person: Identity, state: FaceState) -> float:
    geometry = FaceGeometry.of(person, state, frame.shape[0])
    x, y = (round(v) for v in geometry.mouth_center())
    patch = frame[y - 2: y + 3, x - 3: x + 4].astype(np.float64)
    return float(255 - patch.mean())


def test_render_is_deterministic_and_the_mouth_opens():
    person = identity(1)
    closed, opened = FaceState(0.0), FaceState(1.0)
    frame = render_face(person, closed, 64)
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, render_face(person, closed, 64))
    assert mouth_darkness(render_face(person, opened, 64), person, opened) > mouth_darkness(frame, person, closed) + 20


def test_emotions_change_the_face_and_intensity_scales_it():
    person = identity(2)
    neutral = render_face(person, FaceState(0.3, "neutral"), 64).astype(np.int16)
    for emotion in EMOTIONS[1:]:
        weak = np.abs(render_face(person, FaceState(0.3, emotion, 0.3), 64).astype(np.int16) - neutral).sum()
        strong = np.abs(render_face(person, FaceState(0.3, emotion, 1.0), 64).astype(np.int16) - neutral).sum()
        assert strong > weak > 0, emotion


def test_vae_loss_weights_the_features_above_the_face_and_the_face_above_the_background():
    torch = pytest.importorskip("torch")
    from emocast_research.synthetic.models import reconstruction_weight

    person = identity(3)
    state = FaceState(0.6, "happy")
    frame = render_face(person, state, 64)
    weight = reconstruction_weight(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1.0)[0, 0]
    assert weight.shape == (64, 64)
    geometry = FaceGeometry.of(person, state, 64)
    mouth_x, mouth_y = (round(v) for v in geometry.mouth_center())
    cheek_x, cheek_y = (round(v) for v in geometry.point(0.6, 0.15))
    assert weight[0, 0] == 1.0  # background
    assert weight[cheek_y, cheek_x] == 5.0  # plain skin
    assert weight[mouth_y, mouth_x] == 13.0  # the open mouth


def test_mouth_opening_follows_loudness():
    rate, fps = 16000, 25
    t = np.arange(rate * 2) / rate
    gate = (np.sin(2 * np.pi * 2 * t) > 0).astype(np.float32)  # 2 Hz on/off syllables
    openings = mouth_openings((0.3 * gate * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 50, fps)
    frame_gate = gate[(np.arange(50) * rate / fps + rate / fps / 2).astype(int)]
    assert np.corrcoef(openings, frame_gate)[0, 1] > 0.8
    assert openings.min() == 0.0 and openings.max() == pytest.approx(1.0, abs=0.05)


@needs_espeak
def test_espeak_speech_opens_and_closes_the_mouth():
    from emocast_research.synthetic.speech import SAMPLE_RATE, speak

    waveform = speak("Hello there, how are you today?")
    assert waveform.dtype == np.float32 and 0.8 < len(waveform) / SAMPLE_RATE < 4
    openings = mouth_openings(waveform, int(len(waveform) / SAMPLE_RATE * 25))
    assert openings.max() > 0.8 and np.mean(openings < 0.3) > 0.05  # opens on vowels, closes in between


def test_analyzer_finds_the_face_the_lips_and_a_stable_identity():
    analyzer = synthetic_face_analyzer()
    person, other = identity(3), identity(4)
    state = FaceState(0.8, "happy", 1.0, 0.01, -0.01, 2.0)
    frame = render_face(person, state, 128)
    faces = analyzer.detect(frame)
    assert len(faces) == 1
    geometry = FaceGeometry.of(person, state, 128)
    x0, y0, x1, y1 = faces[0].bbox
    assert x0 < geometry.center_x < x1 and y0 < geometry.center_y < y1
    lips = analyzer.landmarks(frame, faces[0]).lips
    mouth_x, mouth_y = geometry.mouth_center()
    assert lips[:, 0].min() < mouth_x < lips[:, 0].max() and lips[:, 1].min() - 2 < mouth_y < lips[:, 1].max() + 2

    same = analyzer.embedding(render_face(person, FaceState(0.0, "sad"), 128), faces[0])
    first = analyzer.embedding(frame, faces[0])
    different = analyzer.embedding(render_face(other, state, 128), analyzer.detect(render_face(other, state, 128))[0])
    assert first.shape == (512,)
    assert np.linalg.norm(first - same) < 0.25 * np.linalg.norm(first - different)
    assert analyzer.detect(np.full((64, 64, 3), 90, dtype=np.uint8)) == []


def test_recognizer_reads_the_identity_colours():
    person = identity(5)
    frame = render_face(person, FaceState(), 64)
    bbox = synthetic_face_analyzer().detect(frame)[0].bbox
    read = SyntheticRecognizer().attributes(frame, bbox)
    assert np.abs(read[:3] - np.array(person.skin) / 255).max() < 0.05
    assert np.abs(read[6:] - np.array(person.background) / 255).max() < 0.05


@needs_espeak
def test_corpus_has_videos_labels_captions_and_ground_truth(tmp_path):
    from emocast_core.video import probe_video
    from emocast_research.synthetic.corpus import (
        plan_clips,
        sample_identities,
        write_corpus,
    )
    from emocast_research.synthetic.speech import TRAIN_SENTENCES

    rng = np.random.default_rng(0)
    people = sample_identities(["A", "B"], rng)
    specs = plan_clips(list(people), 1, TRAIN_SENTENCES[:2], rng)
    write_corpus(tmp_path, people, specs, 64)
    rows = [json.loads(line) for line in (tmp_path / "clips.jsonl").read_text().splitlines()]
    assert [row["speaker"] for row in rows] == ["A", "B"]
    for row in rows:
        info = probe_video(tmp_path / "videos" / f"{row['speaker']}/{row['name']}.mp4")
        assert info.has_audio and abs(info.num_frames - len(row["openings"])) <= 1
    labels = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert {label["emotion"] for label in labels} <= set(EMOTIONS)


def test_silences_are_exact_zeros_where_asked_and_close_the_mouth():
    from emocast_research.synthetic.speech import SAMPLE_RATE, insert_silences

    # A "sentence" of two loud words with a quiet gap at 60 % of its length.
    time = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    speech = (0.5 * np.sin(2 * np.pi * 220 * time + 0.5)).astype(np.float32)  # no sample exactly 0
    speech[int(0.58 * SAMPLE_RATE): int(0.64 * SAMPLE_RATE)] *= 0.001
    padded = insert_silences(speech, lead=0.2, tail=0.4, pause=0.3)
    assert padded.dtype == np.float32 and len(padded) == SAMPLE_RATE + round(0.9 * SAMPLE_RATE)
    assert not padded[: int(0.2 * SAMPLE_RATE)].any() and not padded[-int(0.4 * SAMPLE_RATE):].any()
    zeros = np.flatnonzero(padded[int(0.2 * SAMPLE_RATE): -int(0.4 * SAMPLE_RATE)] == 0)
    assert len(zeros) == round(0.3 * SAMPLE_RATE)  # the pause is one block, inside the quiet gap
    assert 0.58 * SAMPLE_RATE <= zeros[0] and zeros[-1] - zeros[0] == len(zeros) - 1
    openings = mouth_openings(padded, 47)
    assert openings[:4].max() == 0 and openings[-8:].max() == 0 and openings[10:14].min() > 0.5
    assert np.array_equal(insert_silences(speech), speech)


def test_training_plans_draw_silences_and_held_out_plans_do_not():
    from emocast_research.synthetic.corpus import plan_clips
    from emocast_research.synthetic.speech import TRAIN_SENTENCES

    speakers = [f"S{i}" for i in range(20)]
    plain = plan_clips(speakers, 5, TRAIN_SENTENCES, np.random.default_rng(4))
    assert all(spec.lead_silence == spec.tail_silence == spec.inner_pause == 0 for spec in plain)
    planned = plan_clips(speakers, 5, TRAIN_SENTENCES, np.random.default_rng(4), silences=True)
    assert planned == plan_clips(speakers, 5, TRAIN_SENTENCES, np.random.default_rng(4), silences=True)
    for field, low, high in (("lead_silence", 0.04, 0.6), ("tail_silence", 0.04, 1.2), ("inner_pause", 0.2, 0.7)):
        values = np.array([getattr(spec, field) for spec in planned])
        assert 0.3 < (values > 0).mean() < 0.7  # about half the clips
        assert values[values > 0].min() >= low and values.max() <= high


def test_minilm_encoder_gives_clip_shaped_tokens():
    pytest.importorskip("transformers")
    from emocast_core.demo.text_encoder import (
        MiniLMEmotionEncoder,
        MissingTextEncoderError,
    )

    try:
        encoder = MiniLMEmotionEncoder.from_pretrained()
    except MissingTextEncoderError as error:
        pytest.skip(str(error))
    tokens = encoder.encode(["A person is talking with happy emotion.", "sad"])
    assert tokens.shape == (2, 77, 384)
    assert encoder.unconditional().shape == (1, 77, 384)
    assert not np.allclose(tokens[0].numpy(), tokens[1].numpy())


def test_demo_model_command_refuses_bad_options_before_any_work(tmp_path, capsys):
    from emocast_research.cli import main
    from emocast_research.synthetic.benchmark import PRESETS
    from emocast_research.synthetic.cli import PRESET_NAMES

    assert sorted(PRESET_NAMES) == sorted(PRESETS)  # --help names them without importing torch
    work = tmp_path / "work"
    for bad in (["--train-steps", "0"], ["--threads", "two"], ["--steps", "corpus", "paint"], ["--preset", "huge"],
                ["--motion-frame-noise", "-0.1"], ["--motion-frame-noise", "nan"]):
        with pytest.raises(SystemExit) as stopped:
            main(["demo-model", "--work", str(work), *bad])
        assert stopped.value.code == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and error.startswith("error: argument --")
    assert not work.exists()


def test_the_demo_vae_has_an_8x8_latent_at_64_and_128_px():
    import torch

    from emocast_research.synthetic.models import demo_net_config, make_tiny_vae, vae_levels

    assert (vae_levels(64), vae_levels(128)) == (4, 5)
    for size in (64, 128):
        vae = make_tiny_vae(size)
        with torch.no_grad():
            latent = vae.encode(torch.zeros(1, 3, size, size)).latent_dist.mean
        assert latent.shape == (1, 4, 8, 8)
        # The face locator downsamples as the VAE does: its stride-2 convolutions are one fewer than its levels.
        assert len(demo_net_config(size).face_locator_block_out_channels) == vae_levels(size)
    with pytest.raises(ValueError, match="64 or 128"):
        vae_levels(96)


def test_a_grown_vae_keeps_the_small_ones_levels_inside():
    import torch

    from emocast_research.synthetic.models import grow_vae, make_tiny_vae

    torch.manual_seed(0)
    small = make_tiny_vae(64)
    grown = grow_vae(small, 128)
    small_state, grown_state = small.state_dict(), grown.state_dict()
    # Encoder levels move one down; decoder levels, the middle and the latent convolutions stay.
    for small_key, grown_key in (("encoder.down_blocks.0.resnets.0.conv2.weight", "encoder.down_blocks.1.resnets.0.conv2.weight"),
                                 ("encoder.down_blocks.3.resnets.0.conv1.weight", "encoder.down_blocks.4.resnets.0.conv1.weight"),
                                 ("encoder.mid_block.attentions.0.to_q.weight",) * 2, ("quant_conv.weight",) * 2,
                                 ("decoder.up_blocks.0.resnets.0.conv1.weight",) * 2, ("decoder.up_blocks.2.upsamplers.0.conv.weight",) * 2):
        assert torch.equal(grown_state[grown_key], small_state[small_key]), grown_key
    # The new finest level is not the small VAE's (its widths differ), and the result codes 128 px frames.
    assert grown_state["decoder.conv_out.weight"].shape[1] == 16 != small_state["decoder.conv_out.weight"].shape[1]
    with torch.no_grad():
        assert grown.decode(grown.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean).sample.shape == (1, 3, 128, 128)


def test_refining_the_decoder_leaves_the_latent_space_alone():
    import torch

    from emocast_research.synthetic.models import make_tiny_vae, refine_decoder

    torch.manual_seed(0)
    vae = make_tiny_vae(64)
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    before = {key: value.clone() for key, value in vae.state_dict().items()}
    vae, steps = refine_decoder(vae, frames, seconds=0.5, batch_size=2, log=lambda _: None)
    after = vae.state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    # Every weight the encoder path uses (encoder, quant_conv) is untouched; the decoder's moved.
    assert steps >= 1 and changed and all(key.startswith(("decoder.", "post_quant_conv.")) for key in changed)


def test_reconstruction_errors_show_a_hue_shift_in_one_background_channel():
    from types import SimpleNamespace

    import torch

    from emocast_research.synthetic.models import reconstruction_errors

    class ShiftingVAE:
        """Encodes to the pixels themselves; decodes with `shift` added to the green channel."""

        def __init__(self, shift: float):
            self.shift = shift

        def eval(self):
            return self

        def encode(self, pixels):
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=pixels))

        def decode(self, latents):
            return SimpleNamespace(sample=latents + torch.tensor([0.0, self.shift, 0.0])[None, :, None, None])

    person = identity(3)
    frames = np.stack([render_face(person, FaceState(opening), 64) for opening in (0.0, 0.5, 1.0)])
    exact = reconstruction_errors(ShiftingVAE(0.0), frames)
    assert exact["frames"] == 3 and exact["size"] == 64 and exact["all"] < 0.5 and exact["background_max"] < 0.5
    shifted = reconstruction_errors(ShiftingVAE(0.4), frames)  # +51 of 255 in green, clamped at white
    red, green, blue = shifted["background_rgb"]
    assert red < 0.5 and blue < 0.5 and 0 < green <= 51.1 and shifted["background_max"] == green


def test_the_second_sitting_continues_the_first_and_its_export_is_the_one_used(tmp_path):
    from emocast_research.synthetic.benchmark import PRESETS, LearningBenchmark

    bench = LearningBenchmark(tmp_path, PRESETS["test"])
    with pytest.raises(FileNotFoundError, match="run the train step first"):
        bench.finetune()
    first = tmp_path / "run" / "exports" / "final"
    first.mkdir(parents=True)
    assert bench.latest_export() == first

    config = bench.finetune_config()
    assert config.model.init_net == str(first / "net.safetensors")
    assert config.output_dir == str(tmp_path / "finetune")
    assert config.train.max_steps == PRESETS["test"].finetune_steps
    assert config.optimizer.learning_rate == PRESETS["test"].finetune_learning_rate < PRESETS["test"].learning_rate
    assert config.seed != bench.training_config().seed  # another data order than the first sitting

    second = tmp_path / "finetune" / "exports" / "final"
    second.mkdir(parents=True)
    assert bench.latest_export() == second


def test_the_presets_motion_frame_noise_reaches_both_sittings(tmp_path):
    import dataclasses

    from emocast_research.synthetic.benchmark import PRESETS, LearningBenchmark

    assert LearningBenchmark(tmp_path, PRESETS["full"]).training_config().noise.motion_frame_noise == PRESETS["full"].motion_frame_noise
    bench = LearningBenchmark(tmp_path, dataclasses.replace(PRESETS["test"], motion_frame_noise=0.3))
    assert bench.training_config().noise.motion_frame_noise == 0.3
    second = bench.finetune_config()
    assert second.noise.motion_frame_noise == 0.3 and second.model.init_net.endswith("net.safetensors")
