"""Data-parallel training on the CPU: two processes (torchrun, gloo) run the project's own
`python -m emocast_core train` for two steps on a tiny network.

Data parallelism has two promises that a loss curve does not show: the processes read disjoint parts
of the sample stream, and after every step they hold the same weights. Each process writes what it
trained on and the weights it ended with to `ranks/rank-N.jsonl` (`emocast_core/training/rank_log.py`);
the test reads both files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training_fixtures import (
    blob_face_analyzer,
    one_thread,
    tiny_net_config,
    write_talking_video,
    write_tiny_models,
)

from emocast_core.conditioning.audio import AudioEncoder
from emocast_core.models.net import EmoCASTNet
from emocast_core.training.captions import CaptionSource
from emocast_core.training.config import TrainingConfig
from emocast_core.training.dataset import TalkingClipDataset
from emocast_core.training.dataset_builder import BuildOptions, DatasetBuilder
from emocast_core.training.sampler import EmotionBalancedSampler

pytest.importorskip("accelerate", reason="the trainer runs on accelerate: pip install -e '.[test]'")
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_PROCESSES = 2
MAX_STEPS = 2
SEED = 5
# Two interpreters import torch, diffusers and accelerate and train on a busy 2-core machine.
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    for index, (path, emotion) in enumerate(
        [("M001/video/front/happy/level_3/001.mp4", "happy"), ("M001/video/front/neutral/level_1/001.mp4", "neutral"),
         ("W002/video/front/sad/level_2/001.mp4", "sad")]
    ):
        write_talking_video(root / "videos" / path, emotion=emotion, seconds=1.2, fps=25, size=(96, 96), seed=index)
    models = write_tiny_models(root / "models")
    builder = DatasetBuilder(blob_face_analyzer(), AudioEncoder.from_pretrained(models["wav2vec"]), CaptionSource(), BuildOptions(size=64))
    with one_thread():
        builder.build(root / "videos", root / "data")

    out = root / "run"
    config = TrainingConfig.from_dict({
        "output_dir": str(out),
        "seed": SEED,
        "model": {"architecture": tiny_net_config().to_dict(), "vae": str(models["vae"]), "text_encoder": str(models["text_encoder"])},
        "data": {"root": str(root / "data"), "num_frames": 2, "num_motion_frames": 1, "sample_margin": 3, "num_workers": 0},
        "stage": {"name": "motion"},
        # Dropout on: some steps skip branches, which DDP must tolerate (find_unused_parameters).
        "dropout": {"reference": 0.3, "face": 0.3, "audio": 0.3, "text": 0.3, "motion_frames": 0.3, "all": 0.2},
        "optimizer": {"learning_rate": 1e-3},
        "train": {"batch_size": 1, "max_steps": MAX_STEPS, "log_every": 1},
        # A checkpoint after step 1: saving state is a collective operation every process must join.
        "checkpoint": {"every": 1, "export_dtype": "fp32"},
    })
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config.to_dict()))

    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",  # what `accelerate launch --cpu` sets: gloo, even where a GPU exists
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    # --standalone: a rendezvous on a free local port, so parallel runs never collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NUM_PROCESSES}",
               "-m", "emocast_core", "train", "--config", str(config_path)]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert completed.returncode == 0, f"distributed training failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    ranks = [[json.loads(line) for line in (out / "ranks" / f"rank-{rank}.jsonl").read_text().splitlines()]
             for rank in range(NUM_PROCESSES)]
    return {"out": out, "config": config, "ranks": ranks}


def test_each_process_trains_on_its_own_share_of_the_sample_stream(distributed_run):
    ranks, config = distributed_run["ranks"], distributed_run["config"]
    for records in ranks:
        assert [record["step"] for record in records[:-1]] == list(range(1, MAX_STEPS + 1))
        assert all(len(record["samples"]) == config.train.batch_size for record in records[:-1])
    consumed = [[tuple(sample) for record in records[:-1] for sample in record["samples"]] for records in ranks]
    assert not set(consumed[0]) & set(consumed[1]), f"both processes trained on {set(consumed[0]) & set(consumed[1])}"

    # Together they consumed the single-process stream, interleaved: rank r took positions r, r + 2, ...
    dataset = TalkingClipDataset(Path(config.data.root), num_frames=config.data.num_frames,
                                 num_motion_frames=config.data.num_motion_frames)
    sampler = EmotionBalancedSampler(dataset.labels(), config.sampling.emotion_balance, config.sampling.intensity_balance,
                                     seed=config.seed, epoch_size=config.sampling.epoch_size)
    stream = sampler.keys_from(0)
    expected = [(key.clip_index, key.seed) for key, _ in zip(stream, range(NUM_PROCESSES * MAX_STEPS))]
    assert consumed[0] == expected[0::NUM_PROCESSES] and consumed[1] == expected[1::NUM_PROCESSES]


def test_all_processes_hold_the_same_weights_and_the_export_is_them(distributed_run):
    ranks, config, out = distributed_run["ranks"], distributed_run["config"], distributed_run["out"]
    finals = [records[-1] for records in ranks]
    assert [final["final_step"] for final in finals] == [MAX_STEPS] * NUM_PROCESSES
    sums = [final["weight_sums"] for final in finals]
    assert list(sums[0]) == list(sums[1]) and len(sums[0]) > 0

    # Replicas apply the same all-reduced gradient with the same optimizer, so they agree to the
    # rounding of the float32 sums themselves (~1e-7 relative). Out-of-sync replicas differ by about
    # the learning rate (1e-3) per element after Adam's first steps, far above this bound.
    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-5 * (1.0 + abs(a))

    out_of_sync = [name for name in sums[0] if not close(sums[0][name], sums[1][name])]
    assert not out_of_sync, f"{len(out_of_sync)} tensors differ between the processes, first {out_of_sync[0]}"

    # The weights really trained (equal weights are trivial if nothing moved) ...
    torch.manual_seed(config.seed)  # as Trainer.build_net
    initial = EmoCASTNet(tiny_net_config()).state_dict()
    moved = [name for name in sums[0] if not close(sums[0][name], initial[name].double().sum().item())]
    assert len(moved) > 0.5 * len(sums[0]), f"only {len(moved)} of {len(sums[0])} trainable tensors changed"
    # ... and the main process's export is those weights.
    exported = torch.load(out / "exports" / "final" / "net.pth", weights_only=True)
    mismatched = [name for name in sums[0] if not close(sums[0][name], exported[name].double().sum().item())]
    assert not mismatched, f"the export differs from the trained weights in {mismatched[:3]}"


def test_the_main_process_alone_writes_the_log_and_the_checkpoints(distributed_run):
    out = distributed_run["out"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == list(range(1, MAX_STEPS + 1))
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in log)
    assert (out / "checkpoints" / "step-000001" / "COMPLETE").is_file()
    assert (out / "exports" / "step-000001" / "net.pth").is_file()
