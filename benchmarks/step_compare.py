"""The denoising step against the previous structure, side by side: `python benchmarks/run.py step`.

"Previous" is the project as of `--baseline` (a git revision; default: the last commit before the
per-clip preparation), where every step assembled its inputs again: the reference tokens repeated
to every frame row and projected, the emotive audio attention recomputed in every audio module,
zero tensors and dtype casts for the unconditional branch, host synchronisations on the reference
rows, and one extra denoiser pass per separately guided condition. Its `emocast_core` modules that
a step uses (`guidance`, `models`, `devices`) are read from git into a temporary folder and imported
under another name, so both versions run in one process on the same weights and inputs.

For each guidance mode it reports, measured in the same process, interleaved, N rounds:

* seconds per step (process CPU time with a fixed thread count, and wall time) and their ratio;
* the work per step: FLOPs (FlopCounterMode), aten operator calls, dtype casts (`_to_copy`) and
  tensor copies (`cat`, `repeat`, `index`, `copy_`), counted with a dispatch mode;
* the work per clip: the same counts for preparing a clip (conditions, ReferenceNet, prepare);
* max |new - previous| / max |previous| of the step's guided prediction (same maths, other order).

And, at full size on the meta device (no weights, no compute), the FLOPs of one 16-frame step.
Nothing here asserts on timings.
"""
from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from workload import FIXTURE_DIR, REPO_ROOT, load_models, make_inputs, workload

from emocast_core import guidance as current
from emocast_core.models.net import EmoCASTNet

DEFAULT_BASELINE = "f549c47"  # the last commit before `DenoisingUNet.prepare`
STEP_FILES = ("emocast_core/__init__.py", "emocast_core/devices.py", "emocast_core/guidance.py")
COPY_OPS = ("cat", "repeat", "index", "copy_", "expand_copy", "repeat_interleave", "clone", "index_put_")


class OpCounter(TorchDispatchMode):
    """Counts aten operator calls by name."""

    def __init__(self):
        super().__init__()
        self.calls = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def work(fn) -> dict:
    """FLOPs and operator counts of one call."""
    from flops import register_cpu_sdpa_formula

    register_cpu_sdpa_formula()
    with torch.no_grad(), FlopCounterMode(display=False) as flops, OpCounter() as ops:
        fn()
    calls = ops.calls
    return {
        "flops": int(flops.get_total_flops()),
        "ops": sum(calls.values()),
        "casts": calls["_to_copy"],
        "copies": sum(calls[name] for name in COPY_OPS),
    }


def import_baseline(revision: str, folder: Path):
    """The baseline's `emocast_core` step modules as the package `emocast_baseline`."""
    package = folder / "emocast_baseline"
    files = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "emocast_core/models"],
                           cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in (*STEP_FILES, *files):
        text = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
        target = package / Path(name).relative_to("emocast_core")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sys.path.insert(0, str(folder))
    return importlib.import_module("emocast_baseline.guidance"), importlib.import_module("emocast_baseline.models.net")


class Side:
    """One version's per-clip preparation and per-step call on shared inputs."""

    def __init__(self, name, guidance_module, net, inputs, guidance_kwargs):
        self.name, self.g, self.net, self.inputs = name, guidance_module, net, inputs
        self.guidance = guidance_module.GuidanceConfig(**guidance_kwargs)
        self.guided = self.guidance.active_fraction > 0

    def prepare(self):
        g, net, x = self.g, self.net, self.inputs
        conditions = g.prepare_video_conditions(net, x["face"], x["text"], x["uncond"], x["region"], x["masks"])
        reference = g.reference_features(net, x["reference_latents"], conditions)
        audio_tokens = net.audioproj(x["windows"][None])
        if self.name == "new":
            return g.prepare_clip(net, conditions, x["text"], audio_tokens, reference, self.guidance, num_steps=1)
        return conditions, reference, audio_tokens

    def step(self, prepared):
        x = self.inputs
        if self.name == "new":
            return self.g.guided_prediction(self.net.denoising_unet, x["latents"], x["timestep"], prepared, self.guided)[0]
        conditions, reference, audio_tokens = prepared
        return self.g.predict_guided(self.net, x["latents"], x["timestep"], conditions, audio_tokens, x["text"], reference,
                                     self.guidance, guided=self.guided)[0]


MODES = {
    "joint CFG (upstream)": {},
    "separate audio + emotion CFG": dict(scale=3.5, audio_scale=2.0, emotion_scale=1.5),
    "unguided step (cond only)": dict(active_fraction=0.0),
}


def shared_inputs(load, frames: int, net, device="cpu"):
    dtype = net.denoising_unet.dtype
    reference, emotion, windows = make_inputs(load, frames)
    to = lambda t: t.to(device, dtype)  # noqa: E731
    generator = torch.Generator().manual_seed(3)
    side = load.latent_size
    return {
        "face": to(reference.face_embedding), "text": to(emotion.tokens[:1]), "uncond": to(emotion.uncond_tokens),
        "region": to(reference.face_region),
        "masks": [[to(m) for m in region] for region in (reference.full_mask, reference.face_mask, reference.lip_mask)],
        "reference_latents": to(torch.randn(3, 4, side, side, generator=generator)),
        "windows": to(windows[:frames]),
        "latents": to(torch.randn(1, 4, frames, side, side, generator=generator)),
        "timestep": torch.tensor(500, device=device),
    }


def full_size_flops(baseline_guidance, baseline_net_module, frames: int = 16) -> dict:
    """FLOPs of one step at SD1.5 size on the meta device, both versions."""
    load = workload("sd15")
    out = {}
    for name, g, net_module in (("previous", baseline_guidance, baseline_net_module), ("new", current, None)):
        if name == "new":
            net = EmoCASTNet.build(load.config, device="meta")
        else:
            config_module = importlib.import_module("emocast_baseline.models.config")
            net = net_module.EmoCASTNet.build(config_module.EmoCASTConfig.sd15(), device="meta")
        net.eval()
        x = shared_inputs(load, frames, net, device="meta")
        out[name] = {}
        for mode, kwargs in MODES.items():
            side = Side(name, g, net, x, kwargs)
            with torch.no_grad():
                prepared = side.prepare()
            if name == "previous":
                # The previous step branches on which rows read the reference (a host read); on the
                # meta device that mask has no values, so it is given on the CPU, as `flops.py` did.
                prepared[1].reference_rows = torch.tensor([False, True])
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                side.step(prepared)
            out[name][mode] = int(counter.get_total_flops())
    return out


def prepared_clip_mib(frames: int = 16) -> dict:
    """Device memory a prepared 16-frame clip holds at full size in float16 (meta device: shapes only)."""
    load = workload("sd15")
    net = EmoCASTNet.build(load.config, device="meta", dtype=torch.float16).eval()
    x = shared_inputs(load, frames, net, device="meta")

    def size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, dict):
            return sum(size(item) for item in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(item) for item in value)
        return sum(size(item) for item in vars(value).values()) if hasattr(value, "__dict__") else 0

    out = {}
    with torch.no_grad():
        side = Side("new", current, net, x, {})
        for mode, kwargs in MODES.items():
            side.guidance = current.GuidanceConfig(**kwargs)
            prepared = side.prepare()
            clip = prepared.guided or prepared.conditional
            out[mode] = {"total": size(clip) / 2**20, "reference_bank": size(clip.reference_kv) / 2**20,
                         "emotive_audio_kv": size(clip.emotive_audio_kv) / 2**20, "cross_attention_kv": size(clip.cross_attention) / 2**20}
    return out


def main(argv) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision of the previous structure")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps timed per round and side")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=str(REPO_ROOT / "benchmarks" / "step_results.json"))
    parser.add_argument("--no-full-size", action="store_true", help="skip the meta-device FLOPs at SD1.5 size")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        baseline_guidance, baseline_net_module = import_baseline(args.baseline, Path(folder))
        load = workload("tiny")
        net_new, _ = load_models(load, "cpu", torch.float32)
        config_module = importlib.import_module("emocast_baseline.models.config")
        net_old = baseline_net_module.EmoCASTNet.build(config_module.EmoCASTConfig.from_upstream_file(FIXTURE_DIR / "tiny_config.json"))
        net_old.load_state_dict(net_new.state_dict())
        net_old.eval()
        x = shared_inputs(load, args.frames, net_new)

        results = {"baseline": args.baseline, "frames": args.frames, "threads": args.threads, "rounds": args.rounds,
                   "steps_per_round": args.steps, "config": "tiny", "modes": {}}
        for mode, kwargs in MODES.items():
            sides = {"previous": Side("previous", baseline_guidance, net_old, x, kwargs), "new": Side("new", current, net_new, x, kwargs)}
            with torch.no_grad():
                prepared = {name: side.prepare() for name, side in sides.items()}
                outputs = {name: side.step(prepared[name]) for name, side in sides.items()}
            difference = (outputs["new"] - outputs["previous"]).abs().max().item() / outputs["previous"].abs().max().item()
            entry = {
                "max_rel_diff": difference,
                "per_step": {name: work(lambda: side.step(prepared[name])) for name, side in sides.items()},
                "per_clip": {name: work(side.prepare) for name, side in sides.items()},
                "cpu": {"previous": [], "new": []},
                "wall": {"previous": [], "new": []},
            }
            for round_index in range(args.rounds + 1):  # round 0 warms up, untimed
                order = ("previous", "new") if round_index % 2 else ("new", "previous")
                for name in order:
                    with torch.no_grad():
                        wall, cpu = time.perf_counter(), time.process_time()
                        for _ in range(args.steps):
                            sides[name].step(prepared[name])
                        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    if round_index:
                        entry["cpu"][name].append(cpu / args.steps)
                        entry["wall"][name].append(wall / args.steps)
            ratios = [old / new for old, new in zip(entry["cpu"]["previous"], entry["cpu"]["new"])]
            entry["speedup_cpu_median"] = statistics.median(ratios)
            entry["speedup_cpu_range"] = [min(ratios), max(ratios)]
            print(f"  [step] {mode}: previous {statistics.median(entry['cpu']['previous']):.3f} s, new "
                  f"{statistics.median(entry['cpu']['new']):.3f} s per step (CPU time), x{entry['speedup_cpu_median']:.2f}",
                  file=sys.stderr)
            results["modes"][mode] = entry
        if not args.no_full_size:
            results["full_size_flops_per_step"] = full_size_flops(baseline_guidance, baseline_net_module)
            results["full_size_prepared_clip_mib_fp16"] = prepared_clip_mib()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(step_report(results))


def step_report(results: dict) -> str:
    """Markdown section for docs/benchmarks.md."""
    lines = [
        f"### The denoising step vs the previous structure (tiny config, CPU, {results['threads']} thread)",
        "",
        f"`python benchmarks/run.py step`: one denoising step of a {results['frames']}-frame clip, this version against git "
        f"revision `{results['baseline']}` (every step assembled its own inputs), both imported into one process with the "
        f"same weights and inputs, {results['rounds']} interleaved rounds of {results['steps_per_round']} steps each. "
        "Time is process CPU time per step (median over rounds); the ratio is taken round by round. The comparison here "
        "is with this project's previous structure, which was measured side by side with the official pipeline at 1.035x "
        "its speed per frame (same tiny weights, DDIM 40, joint guidance); the next section times the current pipeline "
        "against the official code itself (`vs-official`).",
        "",
        "| guidance | s/step previous | s/step new | speed-up (range) | max rel. diff of the prediction |",
        "|---|---|---|---|---|",
    ]
    for mode, entry in results["modes"].items():
        lines.append(
            f"| {mode} | {statistics.median(entry['cpu']['previous']):.3f} | {statistics.median(entry['cpu']['new']):.3f} | "
            f"**{entry['speedup_cpu_median']:.2f}x** ({entry['speedup_cpu_range'][0]:.2f} - {entry['speedup_cpu_range'][1]:.2f}) | "
            f"{entry['max_rel_diff']:.1e} |"
        )
    lines += [
        "",
        "Work per step and per clip (counted on the same run: FLOPs with FlopCounterMode; aten operator calls, dtype "
        "casts and copy operators with a dispatch mode):",
        "",
        "| guidance | side | step GFLOP | step ops | step casts | step copies | clip GFLOP | clip ops | clip casts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, entry in results["modes"].items():
        for side in ("previous", "new"):
            step, clip = entry["per_step"][side], entry["per_clip"][side]
            lines.append(f"| {mode} | {side} | {step['flops'] / 1e9:.2f} | {step['ops']} | {step['casts']} | {step['copies']} | "
                         f"{clip['flops'] / 1e9:.2f} | {clip['ops']} | {clip['casts']} |")
    if "full_size_flops_per_step" in results:
        flops = results["full_size_flops_per_step"]
        lines += [
            "",
            "FLOPs of one step at full size (SD1.5 shapes, 512x512, 16 frames; meta device):",
            "",
            "| guidance | previous TFLOP | new TFLOP | new / previous |",
            "|---|---|---|---|",
        ]
        for mode in flops["new"]:
            old, new = flops["previous"][mode], flops["new"][mode]
            lines.append(f"| {mode} | {old / 1e12:.2f} | {new / 1e12:.2f} | {new / old:.3f} |")
        lines += [
            "",
            "At full size the step's FLOPs fall by only about 2 %: the per-clip work moved out of the step (the reference "
            "bank's and the text/face keys/values, the emotive audio attention) is small next to the UNet's convolutions "
            "and attention over 4096 tokens. On the tiny config, whose UNet is a few channels wide while the 768-wide "
            "emotive audio attention keeps its full size, that work dominated the step. What the step no longer does at "
            "any size: dtype casts, zero tensors, repeating the reference tokens to every frame row, host synchronisations "
            "and (with separate guidance) extra denoiser passes.",
        ]
    if "full_size_prepared_clip_mib_fp16" in results:
        memory = results["full_size_prepared_clip_mib_fp16"]
        lines += [
            "",
            "The price is device memory held for the clip. A prepared 16-frame clip at full size in float16 (meta-device "
            "shapes):",
            "",
            "| guidance | total MiB | reference bank K/V | emotive audio K/V | text/face K/V |",
            "|---|---|---|---|---|",
        ]
        for mode, entry in memory.items():
            lines.append(f"| {mode} | {entry['total']:.0f} | {entry['reference_bank']:.0f} | {entry['emotive_audio_kv']:.0f} | "
                         f"{entry['cross_attention_kv']:.0f} |")
    return "\n".join(lines) + "\n"
