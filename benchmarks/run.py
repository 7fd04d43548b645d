"""EmoCAST pipeline benchmarks: sampler speed, memory over video length, FLOPs per frame.

    python benchmarks/run.py                       # tiny config on the CPU, all sections
    python benchmarks/run.py --device cuda --config sd15
    python benchmarks/run.py --quick               # fewer repeats / steps: a smoke run
    python benchmarks/run.py full-size             # the released size for real: 1 step, 2 frames, 512x512, fp32 vs bf16
    python benchmarks/run.py full-size --device cuda   # ... and the GPU benchmark (s per s of video, peak VRAM)
    python benchmarks/run.py step                  # the denoising step vs the previous structure, side by side
    python benchmarks/run.py solvers               # PSNR vs DDIM 40 of cheaper solver settings (first clip)
    python benchmarks/run.py vs-official --official-src DIR --official-python PY   # against the official pipeline, side by side

Sections (`--sections timing,memory,flops`):

* timing  seconds per generated frame through `EmoCASTPipeline.generate` (models already loaded)
          for each sampler setting, run side by side in one process, repeated round-robin; the
          medians and their ratios to the upstream default (DDIM 40 steps, joint guidance).
* memory  peak host memory (and peak CUDA memory) while generating 5 s / 20 s / 60 s of video at
          25 fps and streaming it to an MP4 with `VideoWriter`; each length in a fresh subprocess.
          The audio windows are given (the fixture's, repeated); memory with the audio front-end
          (decoding, wav2vec2) is measured by benchmarks/audio_memory.py, whose section is kept.
* flops   FLOPs per generated frame at full size (SD1.5 shapes, 512x512, 16-frame clips, 2 motion
          frames, CFG batch 2) by module, counted with FlopCounterMode on the meta device.

Results go to stdout as markdown, to docs/benchmarks.md and to benchmarks/results.json. Nothing
here asserts on timings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from audio_memory import saved_section  # noqa: E402
from workload import REPO_ROOT, load_models, make_inputs, workload  # noqa: E402

from emocast_core.guidance import GuidanceConfig  # noqa: E402
from emocast_core.pipeline import EmoCASTPipeline, GenerationConfig  # noqa: E402
from emocast_core.scheduling import make_scheduler  # noqa: E402

FPS = 25
SEPARATE = dict(scale=3.5, audio_scale=2.0, emotion_scale=1.5)


def settings():
    from flops import Setting

    return [
        Setting("ddim@40, joint CFG (upstream)", "ddim", 40, GuidanceConfig()),
        Setting("ddim@20, joint CFG", "ddim", 20, GuidanceConfig()),
        Setting("dpmpp_2m@20, joint CFG", "dpmpp_2m", 20, GuidanceConfig()),
        Setting("unipc@20, joint CFG", "unipc", 20, GuidanceConfig()),
        Setting("ddim@40, separate audio+emotion CFG", "ddim", 40, GuidanceConfig(**SEPARATE)),
        Setting("dpmpp_2m@20, separate audio+emotion CFG", "dpmpp_2m", 20, GuidanceConfig(**SEPARATE)),
    ]


def flops_only_settings():
    from flops import Setting

    return [Setting("dpmpp_2m@20, joint CFG on first 50% of steps", "dpmpp_2m", 20, GuidanceConfig(active_fraction=0.5))]


# --- helpers -----------------------------------------------------------------------------------------


def peak_rss_bytes() -> int:
    """VmHWM of this process (peak resident set size)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux `clear_refs` 5); False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def children_peak_rss_bytes() -> int:
    """Largest VmHWM among this process's live child processes (ffmpeg), 0 if unreadable.

    (getrusage(RUSAGE_CHILDREN) is no use here: a forked child's maximum RSS includes the parent's
    pages from before its exec.)"""
    peak = 0
    try:
        pids = Path(f"/proc/self/task/{os.getpid()}/children").read_text().split()
    except OSError:
        return 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
    return peak


def machine_description(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs{memory}; Python {platform.python_version()}, torch {torch.__version__}"
    try:
        import diffusers

        text += f", diffusers {diffusers.__version__}"
    except ImportError:
        pass
    if device == "cuda" and torch.cuda.is_available():
        text += f"; GPU {torch.cuda.get_device_name()}"
    return text


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def human(flops: float) -> str:
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def table(headers, rows) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- timing ------------------------------------------------------------------------------------------


def run_timing(args, load) -> dict:
    device, dtype = args.device, args.torch_dtype
    net, vae = load_models(load, device, dtype)
    frames = args.timing_frames
    reference, emotion, windows = make_inputs(load, frames)
    chosen = settings()

    def generate(setting, steps=None):
        pipe = EmoCASTPipeline(net, vae, make_scheduler(setting.sampler))
        config = GenerationConfig(num_inference_steps=steps or setting.steps, guidance=setting.guidance, sampler=setting.sampler)
        sync(device)
        wall, cpu = time.perf_counter(), time.process_time()
        produced = sum(len(chunk) for chunk in pipe.generate(reference, emotion, windows, frames, config))
        sync(device)
        assert produced == frames
        return time.perf_counter() - wall, time.process_time() - cpu

    # Warm-up (allocator, kernels, caches): each sampler and guidance path once with 2 steps; not timed.
    for setting in chosen:
        generate(setting, steps=2)
    results = {s.label: {"wall": [], "cpu": []} for s in chosen}
    for repeat in range(args.repeats):
        # Rotate the order each round so that slow phases of a noisy machine hit every setting.
        order = chosen[repeat % len(chosen):] + chosen[: repeat % len(chosen)]
        for setting in order:
            wall, cpu = generate(setting)
            results[setting.label]["wall"].append(wall / frames)
            results[setting.label]["cpu"].append(cpu / frames)
            print(f"  [timing] round {repeat + 1}/{args.repeats} {setting.label}: {wall / frames:.3f} s/frame wall, {cpu / frames:.3f} s/frame CPU", file=sys.stderr)
    return {
        "frames_per_run": frames,
        "repeats": args.repeats,
        "settings": [{"label": s.label, "sampler": s.sampler, "steps": s.steps, "guidance": asdict(s.guidance),
                      "guided_steps": s.guided_steps, **results[s.label]} for s in chosen],
    }


# --- memory ------------------------------------------------------------------------------------------


def memory_child(args) -> None:
    """One video length in this (fresh) process; prints one JSON line."""
    from emocast_core.video import VideoWriter

    load = workload(args.config)
    device, dtype = args.device, args.torch_dtype
    net, vae = load_models(load, device, dtype)
    reference, emotion, windows = make_inputs(load, args.child_frames)
    pipe = EmoCASTPipeline(net, vae, make_scheduler("ddim"))
    config = GenerationConfig(num_inference_steps=args.memory_steps)
    after_load = peak_rss_bytes()
    reset = reset_peak_rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        cuda_after_load = torch.cuda.memory_allocated()
    start = time.perf_counter()
    rss_by_clip = []
    ffmpeg_peak = 0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.mp4"
        with VideoWriter(path, fps=FPS, preset="veryfast") as writer:
            for chunk in pipe.generate(reference, emotion, windows, args.child_frames, config):
                writer.write(chunk)
                del chunk
                rss_by_clip.append(peak_rss_bytes())
                ffmpeg_peak = max(ffmpeg_peak, children_peak_rss_bytes())
        written, size = writer.num_frames, path.stat().st_size
    result = {
        "frames": args.child_frames,
        "frames_written": written,
        "mp4_bytes": size,
        "seconds": time.perf_counter() - start,
        "peak_rss_after_load": after_load,
        "peak_rss_reset": reset,
        "peak_rss": peak_rss_bytes(),
        "peak_rss_after_first_clip": rss_by_clip[0],
        "peak_rss_after_half": rss_by_clip[len(rss_by_clip) // 2],
        "ffmpeg_peak_rss": ffmpeg_peak,  # sampled after each clip
    }
    if device == "cuda":
        result["cuda_after_load"] = cuda_after_load
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    print("MEMORY_RESULT " + json.dumps(result))


def run_memory(args) -> dict:
    runs = []
    for seconds in args.memory_seconds:
        frames = seconds * FPS
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--child-frames", str(frames),
                   "--config", args.config, "--device", args.device, "--dtype", args.dtype,
                   "--memory-steps", str(args.memory_steps), "--threads", str(args.threads)]
        print(f"  [memory] {seconds} s ({frames} frames) in a fresh process ...", file=sys.stderr)
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        line = next(line for line in output.splitlines() if line.startswith("MEMORY_RESULT "))
        result = json.loads(line.split(" ", 1)[1])
        result["audio_seconds"] = seconds
        print(f"  [memory] {seconds} s: peak RSS {result['peak_rss'] / 2**20:.0f} MiB ({result['seconds']:.0f} s)", file=sys.stderr)
        runs.append(result)
    return {"steps": args.memory_steps, "runs": runs}


# --- flops -------------------------------------------------------------------------------------------


def run_flops(args) -> dict:
    from flops import count_components, per_clip_split, per_video_split, register_cpu_sdpa_formula, video_split

    out = {}
    for name in ("sd15", "tiny"):
        try:
            load = workload(name)
        except SystemExit:
            continue
        components = count_components(load, frames=16, motion=2, device="meta")
        entry = {"components": asdict(components), "settings": []}
        for setting in settings() + flops_only_settings():
            entry["settings"].append({
                "label": setting.label,
                "per_clip": per_clip_split(components, setting),
                "per_clip_upstream_structure": per_clip_split(components, setting, upstream=True),
            })
        entry["per_video"] = per_video_split(components)
        entry["per_video_upstream_structure"] = per_video_split(components, upstream=True)
        out[name] = entry

    # Cross-check the composition (and the meta counts) against a real CPU run of the whole pipeline.
    if "tiny" in out:
        register_cpu_sdpa_formula()
        from torch.utils.flop_counter import FlopCounterMode

        from flops import ComponentFlops, Setting

        load = workload("tiny")
        net, vae = load_models(load, "cpu", torch.float32)
        frames, steps = 20, 2  # 2 clips, the second one trimmed
        reference, emotion, windows = make_inputs(load, frames)
        components = ComponentFlops(**out["tiny"]["components"])
        checks = []
        for setting in (Setting("ddim joint", "ddim", steps, GuidanceConfig()),
                        Setting("separate", "ddim", steps, GuidanceConfig(**SEPARATE)),
                        Setting("active 50%", "ddim", 4, GuidanceConfig(active_fraction=0.5))):
            pipe = EmoCASTPipeline(net, vae, make_scheduler("ddim"))
            config = GenerationConfig(num_inference_steps=setting.steps, guidance=setting.guidance)
            with torch.no_grad(), FlopCounterMode(display=False) as mode:
                for _ in pipe.generate(reference, emotion, windows, frames, config):
                    pass
            measured = int(mode.get_total_flops())
            predicted = sum(video_split(components, setting, frames).values())
            checks.append({"setting": setting.label, "steps": setting.steps, "frames": frames,
                           "measured_cpu": measured, "predicted_from_meta": predicted})
        out["tiny_cross_check"] = checks
    return out


# --- report ------------------------------------------------------------------------------------------


def report(args, results) -> str:
    command = "python benchmarks/run.py" + ("".join(" " + shlex.quote(a) for a in args.argv) if args.argv else "")
    parts = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/run.py`; rerun it to refresh this page (it overwrites the file).",
        "",
        f"* Command: `{command}`",
        f"* Date: {results['date']}",
        f"* Machine: {results['machine']}",
        f"* Device: {args.device}, dtype {args.dtype}, torch threads {args.threads}; config `{args.config}` for timing and memory",
        "",
    ]
    if "timing" in results:
        timing = results["timing"]
        load = workload(args.config)
        rows = []
        base = timing["settings"][0]
        key = "cpu" if args.device == "cpu" else "wall"
        base_median = statistics.median(base[key])
        flops_entry = results.get("flops", {}).get(args.config)
        for s in timing["settings"]:
            median = statistics.median(s[key])
            wall = statistics.median(s["wall"])
            ratios = [a / b for a, b in zip(s[key], base[key])]
            row = [s["label"], f"{median:.3f}", f"{min(s[key]):.3f} - {max(s[key]):.3f}", f"{wall:.3f}",
                   f"**{median / base_median:.2f}x**", f"{min(ratios):.2f} - {max(ratios):.2f}"]
            if flops_entry:
                pick = next(x for x in flops_entry["settings"] if x["label"] == s["label"])
                base_pick = flops_entry["settings"][0]
                row.append(f"{sum(pick['per_clip'].values()) / sum(base_pick['per_clip'].values()):.2f}x")
            rows.append(row)
        headers = ["setting", f"s/frame ({'process CPU time' if key == 'cpu' else 'wall'}), median", "range",
                   "s/frame wall, median", "ratio to ddim@40 joint", "per-round ratio range"]
        if flops_entry:
            headers.append("FLOPs ratio (same config)")
        parts += [
            f"## 1. Time per generated frame ({load.name} config, {load.image_size}x{load.image_size}, {args.device})",
            "",
            f"End to end through `EmoCASTPipeline.generate` (conditions, ReferenceNet, denoising, VAE decode; model loading "
            f"excluded) for a {timing['frames_per_run']}-frame video (one 16-frame clip, 2 motion frames), divided by "
            f"{timing['frames_per_run']}. All settings run in one process, round-robin, **N = {timing['repeats']}** rounds "
            f"(after one untimed 2-step warm-up of each); median and range over the rounds. "
            + ("On the CPU the ratio is taken on process CPU time with a fixed thread count, which is much less "
               "sensitive than wall time to other load on a shared machine; wall time is shown too. "
               if key == "cpu" else "GPU times are wall-clock with `torch.cuda.synchronize()` around each run. ")
            + "`separate` = joint scale 3.5 plus audio scale 2.0 and emotion scale 1.5 (one extra batch-1 pass each).",
            "",
            table(headers, rows),
            "",
        ]
        summary = []
        for s in timing["settings"][1:]:
            summary.append(f"{s['label'].split(',')[0]}" + (" separate" if "separate" in s["label"] else "")
                           + f" takes {statistics.median(s[key]) / base_median:.2f}x the time of ddim@40 joint")
        parts += ["In words: " + "; ".join(summary) + ".", ""]
    if "memory" in results:
        memory = results["memory"]
        rows = []
        for r in memory["runs"]:
            row = [f"{r['audio_seconds']} s", r["frames"], r["frames_written"], f"{r['seconds']:.0f}",
                   f"{r['peak_rss_after_load'] / 2**20:.0f}", f"{r['peak_rss_after_first_clip'] / 2**20:.0f}",
                   f"{r['peak_rss_after_half'] / 2**20:.0f}",
                   f"{r['peak_rss'] / 2**20:.0f}", f"{r['ffmpeg_peak_rss'] / 2**20:.0f}"]
            if "cuda_peak" in r:
                row.append(f"{r['cuda_peak'] / 2**20:.0f}")
            rows.append(row)
        headers = ["audio", "frames", "frames in MP4", "run s", "peak RSS after load (MiB)",
                   "peak RSS after 1st clip (MiB)", "peak RSS after half the clips (MiB)", "peak RSS, whole run (MiB)", "ffmpeg peak RSS (MiB)"]
        if any("cuda_peak" in r for r in memory["runs"]):
            headers.append("CUDA max allocated (MiB)")
        reset = all(r["peak_rss_reset"] for r in memory["runs"])
        parts += [
            f"## 2. Memory over video length ({args.config} config, {args.device}, DDIM {memory['steps']} step(s))",
            "",
            "Each length runs in a fresh subprocess: load the models, then generate and stream every clip into an MP4 "
            "with `VideoWriter` (libx264, preset veryfast). Peak RSS is the process's VmHWM; "
            + ("it is reset after loading (`/proc/self/clear_refs`), so the later columns show the peak during generation. "
               if reset else "it could not be reset after loading here, so loading is included in every column. ")
            + "ffmpeg is a child process; its own peak RSS (VmHWM, sampled after each clip) is reported separately. The step count does "
            "not change memory, only run time. The audio windows are given here (the fixture's, repeated to the length): "
            "section 2b measures the audio front-end too.",
            "",
            table(headers, rows),
            "",
        ]
        runs = memory["runs"]
        if len(runs) > 1:
            load = workload(args.config)
            frame_mib = load.image_size ** 2 * 3 * 4 / 2**20
            growth = (runs[-1]["peak_rss"] - runs[0]["peak_rss"]) / 2**20
            extra = runs[-1]["frames"] - runs[0]["frames"]
            parts += [
                f"From {runs[0]['audio_seconds']} s to {runs[-1]['audio_seconds']} s of audio the generation peak changes "
                f"by {growth:+.0f} MiB, while keeping the {extra} extra frames as float32 would take "
                f"{extra * frame_mib:.0f} MiB ({frame_mib:.2f} MiB per {load.image_size}x{load.image_size} frame). "
                f"Within the longest run the peak moves by {(runs[-1]['peak_rss'] - runs[-1]['peak_rss_after_half']) / 2**20:+.0f} MiB "
                "over its second half. Memory is flat in the video length; the few MiB of difference between runs were not "
                "investigated further (allocator state is the likely cause, no frames are retained).",
                "",
            ]
    # Section 2b is written by benchmarks/audio_memory.py (a run of its own); rewriting this page keeps it.
    audio_memory = saved_section(Path(args.output)) if getattr(args, "output", "") else None
    if audio_memory:
        parts += [audio_memory, ""]
    if "flops" in results:
        parts += flops_report(results["flops"])
    parts += extra_sections()
    parts += [
        "## Caveats",
        "",
        "* Timings are from a shared machine; only ratios measured side by side in one run are meant to be compared, "
        "and their per-round spread is shown. Absolute seconds will differ on other machines.",
        "* The tiny config has trained weights from the official fixture but a very small UNet (channels 32-64) at "
        "128x128: fixed per-call overheads (Python, small kernels, scheduler, VAE) weigh far more than at full size, "
        "so ratios there are not exactly the FLOPs ratios. The sd15 config (GPU) uses random weights of the right "
        "shapes: speed and memory do not depend on the values.",
        "* FLOPs count matmuls, convolutions and attention (2 FLOPs per multiply-add); element-wise ops, norms and "
        "softmax are not counted. The multistep solvers (dpmpp_2m, unipc) call the network once per step like DDIM, "
        "so at equal step counts they have the same FLOPs.",
        "",
    ]
    return "\n".join(parts)


def extra_sections() -> list[str]:
    """Sections of the separate sub-commands (`full-size`, `step`, `vs-official`, `solvers`), from their saved results."""
    from full_size import full_size_report
    from official_compare import official_report
    from solver_quality import solver_report
    from step_compare import step_report

    folder = REPO_ROOT / "benchmarks"
    parts = []
    full_size = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("full_size_*.json"))}
    if full_size:
        parts.append(full_size_report(full_size))
    for name, render in (("step_results.json", step_report), ("official_results.json", official_report),
                         ("solver_results.json", solver_report)):
        if (folder / name).is_file():
            parts.append(render(json.loads((folder / name).read_text())))
    if parts:
        parts.insert(0, ONE_FORWARD_INTRO)
    return parts


ONE_FORWARD_INTRO = (
    "## 4. One denoiser forward: per-clip work done once\n\n"
    "A clip is denoised in two calls: `DenoisingUNet.prepare` once per clip (the text/face keys and values, the "
    "reference bank's self-attention keys and values laid out per frame row, the emotive audio attention and its keys "
    "and values, masks, face-locator features, motion frames, and which rows read the reference, all in the compute "
    "dtype) and `denoising_unet(latents, t, prepared)` once per step, over all guidance branches in one batch "
    "(separate audio and emotion guidance add rows, not passes). The step has no host synchronisation and traces as "
    "one graph (`tests/test_step_compile.py`); `GenerationConfig(compile=True)` / `--compile` compiles it. The "
    "sub-commands `full-size`, `step`, `vs-official` and `solvers` measure it (each saves its results beside this script; this page "
    "is rendered from them). Results of sections 1-3 older than these were measured before the preparation existed.\n"
)


def flops_report(flops) -> list[str]:
    parts = []
    if "sd15" not in flops:
        return parts
    entry = flops["sd15"]
    c = entry["components"]
    frames = c["frames"]
    modules = ["denoiser", "denoiser_prepare", "reference_net", "vae_encode", "vae_decode", "other"]
    rows = []
    for s in entry["settings"]:
        ours, upstream = s["per_clip"], s["per_clip_upstream_structure"]
        total = sum(ours.values())
        rows.append([s["label"]] + [f"{ours.get(m, 0) / frames / 1e12:.2f}" for m in modules]
                    + [f"**{total / frames / 1e12:.1f}**", f"{sum(upstream.values()) / frames / 1e12:.1f}",
                       f"{(sum(upstream.values()) - total) / sum(upstream.values()) * 100:.2f}%"])
    base_total = sum(entry["settings"][0]["per_clip"].values())
    ratio_rows = [[s["label"], f"{sum(s['per_clip'].values()) / base_total:.2f}x"] for s in entry["settings"]]
    once = entry["per_video"]
    parts += [
        "## 3. FLOPs per generated frame at full size (SD1.5 config, 512x512)",
        "",
        "Counted with `torch.utils.flop_counter.FlopCounterMode` on the **meta device**: the network is built with "
        "`EmoCASTNet.build(EmoCASTConfig.sd15(), device=\"meta\")` and the SD1.5 VAE is constructed under "
        "`torch.device(\"meta\")`, so no weights are needed and nothing is computed. Each piece of work is counted once "
        "(16-frame clip, 2 motion frames, CFG batch 2) and combined: steps x passes per step + per-clip work, divided "
        "by 16 frames. `scaled_dot_product_attention` on meta tensors runs its math decomposition (two `bmm`), which "
        "the counter counts; on CPU tensors it runs `_scaled_dot_product_flash_attention_for_cpu`, which the "
        "counter of this torch version has no formula for (it would count attention as 0), so the CPU cross-check "
        "below registers one. No op needed a scaled-down fallback.",
        "",
        "TFLOPs per generated frame, long-video limit (per-clip work / 16; the once-per-video work is listed below):",
        "",
        table(["setting", "denoiser steps", "denoiser prepare (per clip)", "reference net", "VAE encode", "VAE decode", "other", "total (ours)",
               "total, upstream structure", "saved"], rows),
        "",
        table(["setting", "FLOPs ratio to ddim@40 joint"], ratio_rows),
        "",
        "Component counts (one call each):",
        "",
        table(["component", "FLOPs"], [
            ["denoiser, one guided step ([uncond; cond], batch 2 x 16 frames)", human(c["denoise_cfg"])],
            ["denoiser, one unguided step (cond only, batch 1)", human(c["denoise_cond"])],
            ["denoiser, one step with separate audio + emotion guidance (one batch of 4 rows)", human(c["denoise_separate"])],
            ["denoiser prepare, joint guidance batch (once per clip)", human(c.get("prepare_cfg", 0))],
            ["denoiser prepare, separate guidance batch (once per clip)", human(c.get("prepare_separate", 0))],
            ["ReferenceNet, reference image (2 guidance rows)", human(c["reference_image"])],
            ["ReferenceNet, 2 motion frames (2 guidance rows)", human(c["reference_motion"])],
            ["VAE encode, one 512x512 image", human(c["vae_encode_image"])],
            ["VAE decode, one frame", human(c["vae_decode_frame"])],
            ["audio projection, one clip", human(c["audio_projection"])],
            ["face locator, one frame", human(c["face_locator_per_frame"])],
            ["video conditions (face locator once + image projection x2)", human(c["video_conditions"])],
        ]),
        "",
        f"Once per video (ours): ReferenceNet on the reference image {human(once['reference_net'])}, VAE encode of the "
        f"reference {human(once['vae_encode'])}, conditions {human(once['other'])}.",
        "",
        "**Upstream vs ours, structurally.** Upstream runs the ReferenceNet on `[reference, motion 1, motion 2]` x 2 "
        "guidance rows (6 images) and VAE-encodes 3 images *every clip*, and runs the face locator on every frame. "
        "We compute the reference image's ReferenceNet features (and its latent, and the face-locator features) once "
        "per video and per clip only the 2 motion frames. Saved per clip: "
        f"ReferenceNet {human(c['reference_image'])}, VAE encode {human(c['vae_encode_image'])}, face locator "
        f"{human((frames - 0) * c['face_locator_per_frame'])} = {human(c['reference_image'] + c['vae_encode_image'] + frames * c['face_locator_per_frame'])} "
        f"per clip ({(c['reference_image'] + c['vae_encode_image'] + frames * c['face_locator_per_frame']) / frames / 1e12:.2f} TFLOPs per frame). "
        "The 'saved' column above puts that against the whole per-clip cost: the denoiser dominates, so the saving is "
        "small in total FLOPs; it grows in relative terms as the step count goes down.",
        "",
    ]
    if "tiny_cross_check" in flops:
        rows = [[x["setting"], x["steps"], x["frames"], human(x["measured_cpu"]), human(x["predicted_from_meta"]),
                 f"{x['measured_cpu'] / x['predicted_from_meta']:.4f}"] for x in flops["tiny_cross_check"]]
        parts += [
            "Cross-check at the tiny config: the whole pipeline run for real on the CPU under FlopCounterMode vs the "
            "same video composed from the meta-device component counts:",
            "",
            table(["setting", "steps", "frames", "measured (CPU run)", "composed (meta)", "ratio"], rows),
            "",
        ]
    return parts


# --- main --------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--config", choices=("tiny", "sd15"), default="tiny", help="config for timing and memory (FLOPs are always counted at SD1.5 size)")
    parser.add_argument("--quick", action="store_true", help="1 timing round, memory at 5 s and 20 s only: a smoke run")
    parser.add_argument("--sections", default="timing,memory,flops")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3 on CPU, 5 on CUDA; 1 with --quick)")
    parser.add_argument("--timing-frames", type=int, default=16)
    parser.add_argument("--memory-seconds", type=int, nargs="+", default=None, help="default 5 20 60")
    parser.add_argument("--memory-steps", type=int, default=None, help="denoising steps in the memory runs (default 1: memory does not depend on it)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None, help="default float32 on CPU, float16 on CUDA")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadier CPU-time ratios)")
    parser.add_argument("--output", default=str(REPO_ROOT / "docs" / "benchmarks.md"), help="markdown file ('' = stdout only)")
    parser.add_argument("--json", default=str(REPO_ROOT / "benchmarks" / "results.json"), help="JSON file ('' = none)")
    parser.add_argument("--from-json", default="", help="only re-render the markdown from a results JSON")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-frames", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    args.dtype = args.dtype or ("float16" if args.device == "cuda" else "float32")
    args.torch_dtype = getattr(torch, args.dtype)
    args.repeats = args.repeats or (1 if args.quick else (5 if args.device == "cuda" else 3))
    args.memory_steps = args.memory_steps or 1
    args.memory_seconds = args.memory_seconds or ([5, 20] if args.quick else [5, 20, 60])
    return args


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "full-size":
        from full_size import main as full_size

        full_size(argv[1:])
        return
    if argv and argv[0] == "step":
        from step_compare import main as step_compare

        step_compare(argv[1:])
        return
    if argv and argv[0] == "vs-official":
        from official_compare import main as official_compare

        official_compare(argv[1:])
        return
    if argv and argv[0] == "solvers":
        from solver_quality import main as solver_quality

        solver_quality(argv[1:])
        return
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return
    if args.from_json:
        # Re-render the report from saved results (with the command line they were made with).
        results = json.loads(Path(args.from_json).read_text())
        saved = parse_args(results["argv"])
        saved.output = args.output
        write_report(saved, results)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    if args.config == "sd15" and args.device == "cpu" and sections & {"timing", "memory"}:
        print("note: sd15 timing/memory on the CPU would take hours; running only the FLOPs section", file=sys.stderr)
        sections &= {"flops"}
    results = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine_description(args.device),
               "command": "python benchmarks/run.py " + " ".join(args.argv), "device": args.device, "dtype": args.dtype,
               "threads": args.threads, "config": args.config, "argv": args.argv}
    load = workload(args.config)
    if "flops" in sections:
        print("[flops] counting on the meta device ...", file=sys.stderr)
        results["flops"] = run_flops(args)
    if "timing" in sections:
        print("[timing] ...", file=sys.stderr)
        results["timing"] = run_timing(args, load)
    if "memory" in sections:
        print("[memory] ...", file=sys.stderr)
        results["memory"] = run_memory(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    write_report(args, results)


def write_report(args, results) -> None:
    text = report(args, results)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
