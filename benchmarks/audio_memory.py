"""Peak memory over audio length, with the audio front-end: whole-audio vs streamed features.

    python benchmarks/audio_memory.py                        # 5 s, 60 s and 10 min of speech
    python benchmarks/audio_memory.py --seconds 5 60 --generate-seconds 4

Each (length, feature path) runs in a fresh subprocess on the CPU with the demo model (DDIM 1 step),
doing what `generate_video` does: decode the speech at 16 kHz, compute the audio features, decode
the sound track at 48 kHz, generate clip by clip into an MP4 with the sound track muxed in.

* ``whole``: `AudioEncoder.encode` over the whole audio and the windows of every frame, and the 48 kHz
  sound track decoded and held for muxing (what the command line and the nodes did before);
* ``streamed``: `AudioEncoder.stream`, which computes each clip's windows when the pipeline gets
  there, and the sound track muxed by ffmpeg straight from the file (what they do now);
* ``streamed, silent video``: the same without a sound track, to separate what the features path
  holds from what muxing costs.

Peak RSS (VmHWM) is reset after the models are loaded, read at the first denoising step (so it
covers decoding, the features and the first clip's conditions: "before the first frame"), reset,
and read again after the video is written ("during generation"). Generating 10 minutes of video
would take hours on a small CPU, so only the first ``--generate-seconds`` of video are generated;
then every later clip's audio windows are fetched as the pipeline would fetch them (all of the
audio goes through the features path) and the peak of that walk is reported too.

The speech is the demo bundle's sentence (espeak-ng) repeated to the length wanted, written as a
16 kHz mono PCM16 WAV. The parent process also measures how far the streamed features are from the
whole-audio ones at each length. Results: stdout (markdown), benchmarks/audio_memory.json, and the
section between the markers below in docs/benchmarks.md (`benchmarks/run.py` keeps that section).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SECTION_BEGIN = "<!-- audio-memory: begin (written by benchmarks/audio_memory.py) -->"
SECTION_END = "<!-- audio-memory: end -->"
PATHS = ("whole", "streamed", "streamed, silent video")
MiB = 2 ** 20


# --- measuring -------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """VmHWM of this process (peak resident set size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def write_speech(path: Path, seconds: float) -> Path:
    """The demo bundle's speech repeated to ``seconds``, as 16 kHz mono PCM16."""
    from emocast_core.conditioning.audio_decode import load_audio
    from emocast_core.demo.bundle import DemoBundle

    sentence = load_audio(DemoBundle().speech).waveform
    repeats = int(np.ceil(seconds * 16000 / sentence.shape[0]))
    waveform = np.tile(sentence, repeats)[: int(round(seconds * 16000))]
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(np.clip(np.round(waveform * 32767), -32768, 32767).astype(np.int16).tobytes())
    return path


def child(args) -> None:
    """One (length, path) run in this fresh process; prints one JSON line."""
    import torch
    from PIL import Image

    from emocast_core.conditioning.audio import load_audio
    from emocast_core.conditioning.emotion import emotion_embedding
    from emocast_core.conditioning.face import prepare_reference
    from emocast_core.demo.bundle import DemoBundle, load_demo_models
    from emocast_core.pipeline import EmoCASTPipeline, EmotionConditions, GenerationConfig, ReferenceConditions, clip_starts
    from emocast_core.scheduling import make_scheduler
    from emocast_core.video import VideoWriter

    torch.set_num_threads(args.threads)
    bundle = DemoBundle()
    models = load_demo_models(bundle, device=torch.device("cpu"), dtype=torch.float32)
    with Image.open(bundle.portrait) as image:
        prepared = prepare_reference(image.convert("RGB"), models.face_analyzer, size=bundle.size)
    emotion = EmotionConditions(emotion_embedding(models.text_encoder, "happy"), models.text_encoder.unconditional())
    config = GenerationConfig(num_inference_steps=1, clip_length=bundle.clip_length)
    pipeline = EmoCASTPipeline(models.net, models.vae, make_scheduler("ddim"))
    after_load = peak_rss_bytes()
    reset_peak_rss()
    start_time = time.perf_counter()

    # What generate_video does before the pipeline starts.
    speech = load_audio(args.audio)
    if args.path == "whole":
        features = models.audio_encoder.encode(speech, clip_length=config.clip_length)
        audio_windows = features.windows()
    else:
        features = models.audio_encoder.stream(speech, clip_length=config.clip_length)
        audio_windows = features
    # Before: the 48 kHz sound track decoded and held until muxing; now ffmpeg reads the file itself.
    soundtrack = load_audio(args.audio, sample_rate=48000) if args.path == "whole" else None

    peaks = {}

    def first_step(event) -> None:
        if "before_first_frame" not in peaks:
            peaks["before_first_frame"] = peak_rss_bytes()
            peaks["features_seconds"] = time.perf_counter() - start_time
            reset_peak_rss()

    generated = min(features.num_frames, int(round(args.generate_seconds * float(features.fps))))
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "memory.mp4"
        if soundtrack is not None:
            track = (soundtrack.waveform, soundtrack.sample_rate)
        else:
            track = None if args.path.endswith("silent video") else args.audio
        with VideoWriter(out, fps=int(features.fps), preset="veryfast", audio=track) as writer:
            for chunk in pipeline.generate(ReferenceConditions.from_prepared(prepared), emotion, audio_windows,
                                           generated, config, progress=first_step):
                writer.write(chunk)
        written = writer.num_frames
    peaks["during_generation"] = peak_rss_bytes()

    # The rest of the audio through the features path, clip by clip as the pipeline asks for it.
    reset_peak_rss()
    clip_length = config.clip_length
    first_not_generated = len(clip_starts(generated, clip_length, config.overlap)) * clip_length
    for clip_start in range(first_not_generated, features.num_frames, clip_length):
        EmoCASTPipeline._windows(audio_windows, clip_start, clip_start + clip_length)
    peaks["walking_the_rest"] = peak_rss_bytes()

    if args.path == "whole":
        held = features.features.nbytes + audio_windows.nbytes
    else:
        held = features.cached_bytes
    result = {
        "path": args.path,
        "audio_seconds": speech.duration_seconds,
        "frames": features.num_frames,
        "frames_generated": written,
        "clip_length": config.clip_length,
        "peak_rss_after_load": after_load,
        "peak_rss_before_first_frame": peaks["before_first_frame"],
        "peak_rss_during_generation": peaks["during_generation"],
        "peak_rss_walking_the_rest": peaks["walking_the_rest"],
        "feature_tensors_held": held,
        "waveform_16k_bytes": speech.waveform.nbytes,
        "soundtrack_48k_bytes": 0 if soundtrack is None else soundtrack.waveform.nbytes,
        "features_seconds": peaks["features_seconds"],
        "seconds": time.perf_counter() - start_time,
    }
    print("AUDIO_MEMORY_RESULT " + json.dumps(result))


def run_all(args) -> dict:
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seconds in args.seconds:
            audio = write_speech(Path(folder) / f"speech_{seconds:g}s.wav", seconds)
            for path in PATHS:
                command = [sys.executable, str(Path(__file__).resolve()), "--child", "--audio", str(audio), "--path", path,
                           "--generate-seconds", str(args.generate_seconds), "--threads", str(args.threads)]
                print(f"[audio memory] {seconds:g} s, {path} features, in a fresh process ...", file=sys.stderr)
                output = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO_ROOT).stdout
                line = next(line for line in output.splitlines() if line.startswith("AUDIO_MEMORY_RESULT "))
                result = json.loads(line.split(" ", 1)[1])
                print(f"[audio memory]   before 1st frame {result['peak_rss_before_first_frame'] / MiB:.0f} MiB, "
                      f"during generation {result['peak_rss_during_generation'] / MiB:.0f} MiB", file=sys.stderr)
                runs.append(result)
        differences = feature_differences(folder, args.seconds)
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "argv": args.argv,
            "generate_seconds": args.generate_seconds, "threads": args.threads, "runs": runs,
            "differences": differences}


def wav2vec2_models() -> dict[str, Path]:
    """The wav2vec2 folders at hand: the demo's, and the official tiny fixture's when present."""
    from emocast_core.demo.bundle import DemoBundle

    models = {"demo": DemoBundle().wav2vec_dir}
    fixture = REPO_ROOT.parent / "shared" / "fixtures" / "official" / "tiny_a" / "tiny_wav2vec2"
    if fixture.is_dir():
        models["official tiny"] = fixture
    return models


def feature_differences(folder: str, lengths) -> list[dict]:
    """Streamed windows (walked clip by clip, default segments) vs the whole-audio windows."""
    from emocast_core.conditioning.audio import AudioEncoder, load_audio
    from emocast_core.demo.bundle import DemoBundle

    clip_length = DemoBundle().clip_length
    rows = []
    for name, model in wav2vec2_models().items():
        encoder = AudioEncoder.from_pretrained(model)
        for seconds in lengths:
            speech = load_audio(Path(folder) / f"speech_{seconds:g}s.wav")
            whole = encoder.encode(speech, clip_length=clip_length)
            stream = encoder.stream(speech, clip_length=clip_length)
            squared_error, squared_norm, worst_frame = 0.0, 0.0, 0.0
            for start in range(0, whole.num_frames, clip_length):
                expected = whole.windows(start, start + clip_length)
                error = stream.windows(start, start + clip_length) - expected
                squared_error += float(error.square().sum())
                squared_norm += float(expected.square().sum())
                per_frame = error.flatten(1).norm(dim=1) / expected.flatten(1).norm(dim=1)
                worst_frame = max(worst_frame, float(per_frame.max()))
            rows.append({"model": name, "audio_seconds": seconds, "segments": stream.num_segments,
                         "relative_l2": (squared_error / squared_norm) ** 0.5, "worst_frame": worst_frame})
    return rows


# --- reporting -------------------------------------------------------------------------------------


def length_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def report(results: dict) -> str:
    runs = results["runs"]
    rows = []
    for r in runs:
        rows.append([length_label(round(r["audio_seconds"])), r["path"], r["frames"], r["frames_generated"],
                     f"{r['peak_rss_after_load'] / MiB:.0f}", f"**{r['peak_rss_before_first_frame'] / MiB:.0f}**",
                     f"**{r['peak_rss_during_generation'] / MiB:.0f}**", f"{r['peak_rss_walking_the_rest'] / MiB:.0f}",
                     f"{r['feature_tensors_held'] / MiB:.1f}", f"{r['soundtrack_48k_bytes'] / MiB:.1f}",
                     f"{r['features_seconds']:.1f}"])
    headers = ["audio", "features", "frames", "frames generated", "peak RSS after load (MiB)",
               "peak RSS before the 1st frame (MiB)", "peak RSS during generation (MiB)",
               "peak RSS walking the rest of the audio (MiB)", "feature tensors held (MiB)",
               "48 kHz sound track held (MiB)", "s to the 1st step"]
    lines = [
        SECTION_BEGIN,
        "## 2b. Memory over audio length, with the audio front-end (demo model, cpu, DDIM 1 step)",
        "",
        f"Generated by `python benchmarks/audio_memory.py{''.join(' ' + a for a in results['argv'])}` on "
        f"{results['date']} (torch threads {results['threads']}). Each row is a fresh subprocess that does what "
        "`generate_video` does: decode the speech (16 kHz mono WAV: the demo sentence repeated) at 16 kHz, compute the "
        "audio features, then generate clip by clip into an MP4 with the sound track muxed in. `whole` = the previous "
        "production path: `AudioEncoder.encode` + the windows of every frame, and the sound track decoded at 48 kHz and "
        "held until muxing; `streamed` = `AudioEncoder.stream`, with ffmpeg muxing the sound track straight from the "
        "file (the command line, Python API and nodes now). Peak RSS (VmHWM) is reset "
        "after loading the models; *before the 1st frame* covers decoding, the features and the first clip's "
        "conditions up to its first denoising step; then it is reset again and *during generation* runs to the "
        f"written MP4. Only the first {results['generate_seconds']:g} s of video are generated (10 minutes would take "
        "hours on 2 CPU cores); afterwards every later clip's audio windows are fetched as the pipeline fetches them, "
        "so all of the audio goes through the features path (*walking the rest*).",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines.append("")
    by_key = {(round(r["audio_seconds"]), r["path"]): r for r in runs}
    lengths = sorted({round(r["audio_seconds"]) for r in runs})
    if len(lengths) > 1:
        shortest, longest = lengths[0], lengths[-1]
        ratio_rows = []
        for path in PATHS:
            if (shortest, path) in by_key and (longest, path) in by_key:
                short, long_ = by_key[(shortest, path)], by_key[(longest, path)]
                ratio_rows.append(
                    f"| {path} | {long_['peak_rss_before_first_frame'] / short['peak_rss_before_first_frame']:.2f}x "
                    f"({(long_['peak_rss_before_first_frame'] - short['peak_rss_before_first_frame']) / MiB:+.0f} MiB) | "
                    f"{long_['peak_rss_during_generation'] / short['peak_rss_during_generation']:.2f}x "
                    f"({(long_['peak_rss_during_generation'] - short['peak_rss_during_generation']) / MiB:+.0f} MiB) |")
        lines += [
            f"Ratio of the peaks, {length_label(longest)} to {length_label(shortest)} of audio, measured side by side "
            "in this run:",
            "",
            "| features | before the 1st frame | during generation |",
            "|---|---|---|",
            *ratio_rows,
            "",
        ]
        lines += growth_summary(by_key, shortest, longest)
    differences = results.get("differences", [])
    if differences:
        lines += [
            "How far the streamed windows are from the whole-audio ones (relative L2 over all frames, and the worst "
            "single frame), walking the clips as the pipeline does. Up to 60 s the audio is one segment and the "
            "difference is float rounding; longer audio is encoded in 40 s segments that each see 10 s more on both "
            "sides, so attention reaches at least 10 s instead of the whole clip (`emocast_core/conditioning/"
            "audio_stream.py` says why that is acceptable). Both wav2vec2 models here have random weights, whose "
            "attention spreads far more evenly over the sequence than a trained model's; no trained wav2vec2 was "
            "available to measure.",
            "",
            "| wav2vec2 | audio | segments | relative L2 | worst frame |",
            "|---|---|---|---|---|",
        ]
        lines += [f"| {d['model']} | {length_label(d['audio_seconds'])} | {d['segments']} | {d['relative_l2']:.2e} | "
                  f"{d['worst_frame']:.2e} |" for d in differences]
        lines.append("")
    lines.append(SECTION_END)
    return "\n".join(lines)


def growth_summary(by_key: dict, shortest: int, longest: int) -> list[str]:
    """What the streamed runs still hold that grows with the audio, in words."""
    keys = [(length, path) for length in (shortest, longest) for path in PATHS]
    if not all(key in by_key for key in keys):
        return []
    streamed, silent, whole = by_key[(longest, "streamed")], by_key[(longest, PATHS[2])], by_key[(longest, "whole")]
    short_silent = by_key[(shortest, PATHS[2])]
    return [
        f"What still grows with the length under `streamed` is the audio itself: the 16 kHz samples the features are "
        f"computed from ({streamed['waveform_16k_bytes'] / MiB:.0f} MiB for {length_label(longest)}); the previous "
        f"path also held the 48 kHz sound track until muxing ({whole['soundtrack_48k_bytes'] / MiB:.0f} MiB), which "
        f"ffmpeg now reads from the file. Without a sound track "
        f"(`{PATHS[2]}`) the peaks grow by "
        f"{(silent['peak_rss_before_first_frame'] - short_silent['peak_rss_before_first_frame']) / MiB:+.0f} MiB before "
        f"the first frame and {(silent['peak_rss_during_generation'] - short_silent['peak_rss_during_generation']) / MiB:+.0f} MiB "
        f"during generation from {length_label(shortest)} to {length_label(longest)}: about the 16 kHz waveform. The audio "
        f"features held stay at {streamed['feature_tensors_held'] / MiB:.1f} MiB (the two cached segments) where the "
        f"whole-audio path holds {whole['feature_tensors_held'] / MiB:.0f} MiB of features and windows, and the "
        f"whole-audio peak before the first frame ({whole['peak_rss_before_first_frame'] / MiB:.0f} MiB) came from "
        "wav2vec2's CNN running over all samples at once (3200 vectors per second and channel).",
        "",
    ]


def saved_section(path: Path) -> str | None:
    """The audio-memory section of an existing docs page, markers included (None when absent)."""
    if not path.is_file():
        return None
    text = path.read_text()
    if SECTION_BEGIN not in text or SECTION_END not in text:
        return None
    return text[text.index(SECTION_BEGIN): text.index(SECTION_END) + len(SECTION_END)]


def write_section(path: Path, section: str) -> None:
    """Replace the section in ``path`` (or insert it before section 3 / append it)."""
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    old = saved_section(path)
    if old is not None:
        text = text.replace(old, section)
    elif "\n## 3." in text:
        index = text.index("\n## 3.") + 1
        text = text[:index] + section + "\n\n" + text[index:]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[5, 60, 600], help="audio lengths (default 5 60 600)")
    parser.add_argument("--generate-seconds", type=float, default=4.0, help="seconds of video generated per run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "benchmarks.md"), help="markdown page to update ('' = none)")
    parser.add_argument("--json", default=str(REPO_ROOT / "benchmarks" / "audio_memory.json"), help="JSON file ('' = none)")
    parser.add_argument("--from-json", default="", help="only re-render the section from a results JSON")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--audio", default="", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=PATHS, default="streamed", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    return args


def main(argv=None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        child(args)
        return
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = run_all(args)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    section = report(results)
    print(section)
    if args.output:
        write_section(Path(args.output), section)


if __name__ == "__main__":
    main()
