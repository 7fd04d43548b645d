"""Training runs on a tiny network and a small synthetic dataset: every stage, learning, resuming,
exports that load in the inference pipeline, validation videos and the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_training_fixtures import (  # noqa: F401  (single_thread is a fixture)
    blob_face_analyzer,
    one_thread,
    single_thread,
    tiny_net_config,
    write_talking_video,
    write_tiny_models,
)

from emocast_core.checkpoint import load_emocast_net
from emocast_core.conditioning.audio import AudioEncoder, audio_windows
from emocast_core.models.net import EmoCASTNet
from emocast_core.pipeline import EmoCASTPipeline, EmotionConditions, GenerationConfig
from emocast_core.training.captions import CaptionSource
from emocast_core.training.config import TrainingConfig
from emocast_core.training.dataset import collate_samples
from emocast_core.training.dataset_builder import BuildOptions, DatasetBuilder
from emocast_core.training.model import EmoCASTTrainingModel
from emocast_core.training.objectives import make_training_scheduler
from emocast_core.training.sampler import SampleKey
from emocast_core.training.trainer import TextEmbeddingCache, Trainer
from emocast_core.training.validation import make_validation_scheduler, reference_from_clip

pytestmark = pytest.mark.usefixtures("single_thread")
NO_DROPOUT = {"reference": 0.0, "face": 0.0, "audio": 0.0, "text": 0.0, "motion_frames": 0.0, "all": 0.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    videos = root / "videos"
    for index, (path, emotion) in enumerate(
        [("M001/video/front/happy/level_3/001.mp4", "happy"), ("M001/video/front/neutral/level_1/001.mp4", "neutral"),
         ("W002/video/front/sad/level_2/001.mp4", "sad")]
    ):
        write_talking_video(videos / path, emotion=emotion, seconds=1.2, fps=25, size=(96, 96), seed=index)
    models = write_tiny_models(root / "models")
    builder = DatasetBuilder(blob_face_analyzer(), AudioEncoder.from_pretrained(models["wav2vec"]), CaptionSource(), BuildOptions(size=64))
    with one_thread():
        builder.build(videos, root / "data")
    return {"root": root, "data": root / "data", "models": models}


def make_config(setup, out: Path, stage: str = "motion", **sections) -> TrainingConfig:
    data = {
        "output_dir": str(out),
        "seed": 3,
        "model": {"architecture": tiny_net_config().to_dict(), "vae": str(setup["models"]["vae"]),
                  "text_encoder": str(setup["models"]["text_encoder"])},
        "data": {"root": str(setup["data"]), "num_frames": 2, "num_motion_frames": 1, "sample_margin": 3, "num_workers": 0},
        "stage": {"name": stage},
        # High dropout rates so a few steps exercise mixed batches (some samples without a condition).
        "dropout": {"reference": 0.3, "face": 0.3, "audio": 0.3, "text": 0.3, "motion_frames": 0.3, "all": 0.2},
        "optimizer": {"learning_rate": 1e-3},
        "train": {"batch_size": 2, "max_steps": 1, "log_every": 1},
        "checkpoint": {"every": 0, "export_dtype": "fp32"},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return TrainingConfig.from_dict(data)


def initial_state(config: TrainingConfig) -> dict:
    torch.manual_seed(config.seed)  # as Trainer.build_net
    return EmoCASTNet(tiny_net_config()).state_dict()


def exported_state(out: Path, name: str = "final") -> dict:
    return torch.load(out / "exports" / name / "net.pth", weights_only=True)


@pytest.mark.parametrize("stage", ["appearance", "motion", "lip_sync", "emotion"])
def test_each_stage_runs_and_trains_only_its_parameters(setup, tmp_path, stage):
    config = make_config(setup, tmp_path / stage, stage, dropout=NO_DROPOUT)
    result = Trainer(config).train()
    assert result.final_step == 1 and np.isfinite(result.losses[0][1])
    before, after = initial_state(config), exported_state(tmp_path / stage)
    assert list(after) == list(before)
    trainable = set(_selected(config))
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed <= trainable, f"frozen weights changed: {sorted(changed - trainable)[:3]}"
    assert len(changed) > 0.9 * len(trainable)


def _selected(config: TrainingConfig) -> list[str]:
    from emocast_core.training.stages import apply_stage, plan_stage, unreachable_parameter_names

    net = EmoCASTNet.build(tiny_net_config(), device="meta")
    return apply_stage(net, plan_stage(config.stage), exclude=unreachable_parameter_names(net))


def test_loss_goes_down_on_a_small_synthetic_set(setup, tmp_path):
    config = make_config(
        setup, tmp_path / "learn", "appearance",
        dropout=NO_DROPOUT,
        optimizer={"learning_rate": 2e-3}, train={"batch_size": 4, "max_steps": 16},
    )
    trainer = Trainer(config)
    result = trainer.train()

    # Evaluate the initial and the trained network on the same fixed batch (same frames, noise, t).
    dataset = trainer.build_data()
    vae, text_encoder = trainer.build_frozen_encoders()
    batch = collate_samples([dataset[SampleKey(i % len(dataset), 100 + i)] for i in range(8)])
    encoded = trainer._encode_batch(batch, vae, TextEmbeddingCache(text_encoder), make_training_scheduler(config.noise),
                                    torch.Generator().manual_seed(0))

    def evaluate(state):
        net = EmoCASTNet(tiny_net_config())
        net.load_state_dict(state)
        with torch.no_grad():
            return EmoCASTTrainingModel(net)(encoded)["loss"].item()

    initial, trained = evaluate(initial_state(config)), evaluate(exported_state(tmp_path / "learn"))
    assert trained < 0.7 * initial, (initial, trained)
    losses = [loss for _, loss in result.losses]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.fixture(scope="module")
def stage2_run(setup, tmp_path_factory):
    """Motion stage, 3 steps in one go, with EMA, a checkpoint at step 2 and validation at step 3."""
    out = tmp_path_factory.mktemp("stage2_full")
    config = make_config(
        setup, out, "motion", train={"max_steps": 3}, checkpoint={"every": 2}, ema={"enabled": True, "decay": 0.9},
        validation={"every": 3, "num_frames": 3, "num_inference_steps": 2, "clip_length": 2},
    )
    with one_thread():  # module fixtures run before the per-test `single_thread`
        return out, config, Trainer(config).train()


def test_resume_continues_from_the_same_step_with_the_same_data(setup, stage2_run, tmp_path):
    _, full_config, full = stage2_run
    out = tmp_path / "interrupted"
    sections = dict(checkpoint={"every": 2}, ema={"enabled": True, "decay": 0.9})
    first = Trainer(make_config(setup, out, "motion", train={"max_steps": 2}, **sections)).train()
    assert [step for step, _ in first.losses] == [1, 2]
    resumed = Trainer(make_config(setup, out, "motion", train={"max_steps": 3}, **sections)).train()
    assert resumed.resumed_from.endswith("step-000002")
    assert [step for step, _ in resumed.losses] == [3]
    # The same samples, step by step (the process's own record of what it trained on) ...
    assert _samples_by_step(out) == _samples_by_step(stage2_run[0])
    # ... same noise and optimizer state: the same losses and the same final (EMA) weights.
    np.testing.assert_allclose([loss for _, loss in first.losses + resumed.losses], [loss for _, loss in full.losses], rtol=1e-5)
    reference, continued = exported_state(stage2_run[0]), exported_state(out)
    for key in reference:
        # Bit-level differences may be amplified by Adam where the second moment is ~0.
        torch.testing.assert_close(continued[key], reference[key], rtol=1e-4, atol=5e-5)


def _samples_by_step(out: Path) -> dict:
    records = [json.loads(line) for line in (out / "ranks" / "rank-0.jsonl").read_text().splitlines()]
    return {record["step"]: record["samples"] for record in records if "step" in record}


def test_stage2_export_loads_strictly_and_drives_the_pipeline(setup, stage2_run):
    out, config, result = stage2_run
    exported = exported_state(out)
    assert list(exported) == list(EmoCASTNet.build(tiny_net_config(), device="meta").state_dict())
    # The self-describing file needs no config; the plain net.pth gets it from the caller.
    net = load_emocast_net(out / "exports" / "final" / "net.safetensors")
    assert net.config.unet.block_out_channels == (32, 64)
    pth_net = load_emocast_net(out / "exports" / "final" / "net.pth", tiny_net_config())
    for key, value in net.state_dict().items():
        assert torch.equal(value, exported[key]) and torch.equal(pth_net.state_dict()[key], value)
    # A checkpoint export per saved step, and resumable state next to it.
    assert (out / "exports" / "step-000002" / "net.pth").is_file()
    assert (out / "checkpoints" / "step-000002" / "COMPLETE").is_file()

    from diffusers import AutoencoderKL

    from emocast_core.conditioning.emotion import EmotionTextEncoder
    from emocast_core.training.shards import ShardReader, read_index

    record = read_index(setup["data"])[0]
    reader = ShardReader(setup["data"])
    encoder = EmotionTextEncoder.from_pretrained(setup["models"]["text_encoder"])
    pipeline = EmoCASTPipeline(net, AutoencoderKL.from_pretrained(setup["models"]["vae"]), make_validation_scheduler(config.noise))
    frames = pipeline(
        reference_from_clip(reader, record), EmotionConditions(encoder.encode(["happy"]), encoder.unconditional()),
        audio_windows(reader.tensor(record, "audio_features").float()), 3,
        GenerationConfig(num_inference_steps=2, clip_length=2),
    )
    assert frames.shape == (3, 64, 64, 3) and torch.isfinite(frames).all()


def test_validation_videos_are_rendered_with_audio(stage2_run):
    from emocast_core.video import probe_video

    _, _, result = stage2_run
    assert len(result.validation_videos) == 1
    info = probe_video(result.validation_videos[0])
    assert info.num_frames == 3 and info.has_audio and (info.width, info.height) == (64, 64)


def test_train_command_line(setup, tmp_path):
    from emocast_core.training.cli import main

    config = make_config(setup, tmp_path / "cli", "emotion").to_dict()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert main(["train", "--config", str(path), "--set", "train.max_steps=2", "--set", "stage.face_loss_weight=2.0"]) == 0
    log = [json.loads(line) for line in (tmp_path / "cli" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2]
    saved = json.loads((tmp_path / "cli" / "training_config.json").read_text())
    assert saved["stage"]["face_loss_weight"] == 2.0 and saved["train"]["max_steps"] == 2
