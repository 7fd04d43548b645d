"""`python -m emocast_core generate`: portrait + speech + emotion -> MP4.

This is the edge where files become conditions. `make_video` is the whole run, shared by the
command line and Python callers: it checks every input (`validation`), looks for the face with the
small face models, and only then loads the big models and calls `generate_video`, which runs the
three front-ends, streams the pipeline's frames into the video writer (optionally pasted back into
the full original picture) and muxes the driving audio.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .devices import PRECISION_CHOICES
from .guidance import GuidanceConfig
from .pipeline import SAMPLING_PRESETS, EmoCASTPipeline, EmotionConditions, GenerationConfig, ProgressEvent, ReferenceConditions
from .validation import (
    SILENCE_WARNING,
    CheckedRequest,
    InputError,
    SamplingSettings,
    check_device,
    check_request,
    check_sampling,
    find_face,
)

# Audio influence on pose, face and lips for silent speech. wav2vec2 features of digital silence are
# unlike anything the model saw (normalisation turns the clip into exact zeros) and dissolve the face;
# without the audio's influence the mouth stays as the portrait shows it and the rest moves as usual.
SILENT_REGION_SCALES = (0.0, 0.0, 0.0)

# Frames shared and cross-faded between clips when --demo is given and --overlap is not. Without them
# the demo model's 8-frame clips jump at every border (frame change across borders 1.4-1.6 x the
# change inside clips); 2 frames bring that to about 1.0 for a third more clips (docs/demo-model.md,
# "Seams"). Only the demo: for the released weights the default stays upstream's 0.
DEMO_OVERLAP = 2
# The sampling preset when --demo is given and --speed is not: the demo model's picture at a third of
# the work (38.6 dB PSNR against `upstream` on the first clip of the sample video, through the MP4
# codec; 27 s instead of 66 s on one thread). Without --demo the default stays upstream's.
DEMO_SPEED = "fast"
# Torch's CPU threads when --demo is given and neither --threads nor OMP_NUM_THREADS is. The demo
# network is too small to keep two threads busy: on an idle 2-core machine the README command took
# 32 s and 31 CPU-s with one thread, 45 s and 46 CPU-s with two sleeping-wait threads, 25 s and 43 CPU-s
# with two spinning ones (docs/demo-model.md, "Speed"). One thread also never waits for another.
DEMO_THREADS = 1
# Colour anchoring (colour_anchor.py) when --demo is given and --colour-anchor / --no-colour-anchor is
# not. The demo network's clips copy each other's colour errors: without it the sample's background
# drifts to a brighter green (Delta E up to 9.6 between seconds) and the VAE turns its teal green from the
# first frame; with it both stay at the portrait's colours (drift under 2), and the network, continuing
# from corrected frames, follows the speech more closely (docs/demo-model.md, "Colour anchoring"). Off
# without --demo (upstream).
DEMO_COLOUR_ANCHOR = True
# Frames whose audio is silent run without the audio's influence when --demo is given and
# --audio-off-in-silence / --no-audio-off-in-silence is not: the demo network turns a pause into a
# featureless oval, even a single silent frame inside a sentence (the sample speech has a few); without
# the audio there it keeps the face (docs/demo-model.md, "What the command shows"). Off without --demo
# (upstream).
DEMO_AUDIO_OFF_IN_SILENCE = True
# The share of the portrait in every motion frame when --demo is given and --motion-reference-mix is
# not. The demo network's clips copy each other's shapes as well as their colours: without it the
# neutral face settles into angry brows, the happy face grows a dark shadow under its chin and the
# surprised face loses its hair over the sentence. A quarter of the portrait keeps them and keeps each
# prompt's expression (angry's brows stay); half of it also undid angry's brows (docs/demo-model.md,
# "Motion frames and the portrait"). Off without --demo (upstream).
DEMO_MOTION_REFERENCE_MIX = 0.25


@dataclass
class GenerateRequest:
    image: Path
    audio: Path
    out: Path
    emotion: Optional[str] = None  # free text (a preset name works too)
    preset: Optional[str] = None  # one of conditioning.emotion_presets.EMOTION_PRESETS, checked
    intensity: float = 1.0
    emotion_schedule: Optional[str] = None  # keyframe text, see conditioning.emotion_schedule
    fps: int = 25
    size: int = 512
    paste_back: bool = False
    face_index: Optional[int] = None
    on_no_face: str = "error"
    separate_vocals: bool = False
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def emotion_conditions(text_encoder, request: GenerateRequest, num_frames: int, keyframes=None) -> EmotionConditions:
    from .conditioning.emotion import emotion_embedding, schedule_embeddings

    uncond = text_encoder.unconditional()
    if request.emotion_schedule:
        tokens = schedule_embeddings(text_encoder, keyframes or request.emotion_schedule, num_frames, request.fps)
    else:
        tokens = emotion_embedding(text_encoder, request.preset or request.emotion or "neutral", request.intensity)
    return EmotionConditions(tokens, uncond)


def generate_video(
    models,
    request: GenerateRequest,
    progress: Optional[Callable[[ProgressEvent], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    checked: Optional[CheckedRequest] = None,
    reference=None,
) -> Path:
    """Make `request.out` with loaded `models`. The file appears only when the whole video is written.

    `checked` and `reference` are what `validation.check_request` and `validation.find_face` gave
    for this request (`make_video` passes them so nothing is decoded twice); by default they are
    computed here, before any generation work.

    Raises:
        InputError: a bad input, before anything is generated.
    """
    from .conditioning.audio_decode import silent_frames
    from .conditioning.crop import paste_back
    from .scheduling import make_scheduler
    from .video import VideoWriter

    checked = checked or check_request(request)
    prepared = reference or find_face(checked.image, models.face_analyzer, size=request.size,
                                      face_index=request.face_index, on_no_face=request.on_no_face)
    speech, silent = checked.audio.speech, checked.audio.silent
    generation = request.generation
    if silent:
        warnings.warn(SILENCE_WARNING, stacklevel=2)
        generation = for_silent_speech(generation)
    elif models.vocal_separator is not None:
        speech = models.vocal_separator.separate(speech)
    # Streamed: each clip's features are computed when the pipeline reaches it (flat memory for long audio).
    features = models.audio_encoder.stream(speech, fps=request.fps, clip_length=request.generation.clip_length,
                                           allow_silence=silent)
    silence = silent_frames(speech, request.fps, features.num_frames) if generation.audio_off_in_silence else None
    emotion = emotion_conditions(models.text_encoder, request, features.num_frames, checked.keyframes)

    scheduler = make_scheduler(request.generation.sampler)
    pipeline = EmoCASTPipeline(models.net, models.vae, scheduler)
    frames = pipeline.generate(
        ReferenceConditions.from_prepared(prepared),
        emotion,
        features,
        features.num_frames,
        generation,
        progress=progress,
        should_cancel=should_cancel,
        silent_frames=silence,
    )
    out = Path(request.out).expanduser()
    created_folders = _make_folders(out.parent)
    try:
        # ffmpeg reads the sound track from the file itself: a long track is never held in memory.
        with VideoWriter(out, request.fps, audio=request.audio) as writer:
            for chunk in frames:
                if request.paste_back and prepared.crop is not None:
                    chunk = paste_back(chunk, prepared.crop, prepared.source_image)
                writer.write(chunk)
    except BaseException:
        _remove_empty_folders(created_folders)
        raise
    return out


def make_video(
    request: GenerateRequest,
    *,
    models_dir: Optional[Path] = None,
    demo=None,
    device: str = "auto",
    dtype: str = "auto",
    progress: Optional[Callable[[ProgressEvent], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> Path:
    """The whole run: check every input, find the face, load the models, generate.

    Args:
        request: what to make.
        models_dir: the models folder (ComfyUI's `models/` or the same layout); not used with `demo`.
        demo: a `demo.bundle.DemoBundle` to use the embedded synthetic demo model instead.
        device, dtype: names as on the command line (`auto`, `cpu`, `cuda:1`, ...; `auto`, `fp16`, ...).

    Raises:
        InputError: a bad input, found before any model is loaded (the face check runs the face
            models only).
        MissingModelFilesError: model files are missing (every one named).
    """
    from .model_files import resolve_model_paths

    torch_device, torch_dtype = check_device(device, dtype)
    if demo is None and models_dir is None:
        raise InputError("models", "no models folder given", "pass {@models} (or use the demo model)")
    if demo is not None and request.separate_vocals:
        raise InputError("separate_vocals", "{@separate_vocals} is not available with the demo model")
    checked = check_request(request)
    if demo is not None:
        from .demo.bundle import load_demo_models
        from .demo.face import demo_face_analyzer

        analyzer = demo_face_analyzer()
    else:
        from .loading import load_face_analyzer, load_models

        require = ["checkpoint", "vae", "text_encoder", "audio_encoder", "face"]
        if request.separate_vocals:
            require.append("vocal_separator")
        paths = resolve_model_paths(models_dir, require=require)
        analyzer = load_face_analyzer(paths)
    reference = find_face(checked.image, analyzer, size=request.size, face_index=request.face_index,
                          on_no_face=request.on_no_face)
    if demo is not None:
        models = load_demo_models(demo, device=torch_device, dtype=torch_dtype, face_analyzer=analyzer)
    else:
        models = load_models(paths, device=torch_device, dtype=torch_dtype,
                             with_vocal_separator=request.separate_vocals, face_analyzer=analyzer)
    return generate_video(models, request, progress, should_cancel, checked=checked, reference=reference)


def for_silent_speech(generation: GenerationConfig) -> GenerationConfig:
    """The settings for speech that is silent: the audio no longer moves the face (see SILENT_REGION_SCALES)."""
    return dataclasses.replace(generation, region_scales=SILENT_REGION_SCALES)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; returns those it created, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _remove_empty_folders(created: list[Path]) -> None:
    """Undo `_make_folders` after a failed run, so nothing is left behind."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:
            break  # something else was put there meanwhile: leave it


# --- command line -------------------------------------------------------------------------------


def add_generate_command(subparsers) -> None:
    from .conditioning.emotion_presets import EMOTION_PRESETS
    from .scheduling import SCHEDULER_NAMES

    parser = subparsers.add_parser(
        "generate",
        help="make a talking-portrait video from a portrait, a speech file and an emotion",
        description="Animate PORTRAIT so that it speaks SPEECH with the given emotion, and write an MP4 with the speech as "
                    "its sound track. Every input is checked before any model is loaded.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # Paths stay strings until validation reads them: Path() would turn "https://x" into "https:/x".
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--image", help="portrait image (any size; the face is found and cropped); with --demo: the sample portrait")
    io.add_argument("--audio", help="speech: wav, mp3, flac, m4a, ogg, or a video's sound track (silence gives a closed "
                                    "mouth); with --demo: the sample speech")
    io.add_argument("--out", required=True, help="the MP4 to write (appears only when complete; missing folders are made)")
    io.add_argument("--models", help="models folder (ComfyUI's models/ or the same layout; see README); not used with --demo")
    io.add_argument("--demo", action="store_true",
                    help="use the embedded synthetic demo model (small, drawn faces, no downloads), not the released weights")
    emotion = parser.add_argument_group("emotion")
    chosen = emotion.add_mutually_exclusive_group()
    chosen.add_argument("--emotion", help='free-text emotion, e.g. "A person is talking with happy emotion."')
    chosen.add_argument("--preset", help=f"one of: {', '.join(EMOTION_PRESETS)}")
    chosen.add_argument("--emotion-schedule", help='keyframes "TIME: EMOTION [@INTENSITY]; ...", e.g. "0: neutral; 2.5: happy @0.8"')
    emotion.add_argument("--intensity", type=float, default=1.0, help="0 = neutral, 1 = as described, up to 2 exaggerates")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--speed", choices=tuple(SAMPLING_PRESETS), default=argparse.SUPPRESS,
                          help="sampling preset: " + "; ".join(f"{name} = {preset.description}" for name, preset in SAMPLING_PRESETS.items())
                          + f" (default: upstream; {DEMO_SPEED} with --demo; --steps, --sampler and --cfg-fraction override it)")
    sampling.add_argument("--steps", type=int, default=argparse.SUPPRESS, help="denoising steps per clip (default: the --speed preset's)")
    sampling.add_argument("--cfg", type=float, default=3.5, help="guidance scale on all conditions together (upstream)")
    sampling.add_argument("--audio-cfg", type=float, default=None, help="extra guidance on the audio alone (one more pass per step)")
    sampling.add_argument("--emotion-cfg", type=float, default=None, help="extra guidance on the emotion text alone (one more pass per step)")
    sampling.add_argument("--cfg-fraction", type=float, default=argparse.SUPPRESS, help="guide only the first fraction of the steps (default: the --speed preset's)")
    sampling.add_argument("--sampler", default=argparse.SUPPRESS, choices=SCHEDULER_NAMES, help="solver (default: the --speed preset's; ddim is upstream's)")
    sampling.add_argument("--seed", type=int, default=42, help="random seed (same seed, same video)")
    sampling.add_argument("--overlap", type=int, default=argparse.SUPPRESS,
                          help=f"frames shared and cross-faded between clips (default: 0 = upstream; {DEMO_OVERLAP} with --demo)")
    sampling.add_argument("--colour-anchor", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                          help="hold every frame to the portrait's colours, so colour errors are not carried from clip "
                               "to clip (default: off = upstream; on with --demo)")
    sampling.add_argument("--audio-off-in-silence", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                          help="frames whose audio is silent run without the audio's influence (default: off = "
                               "upstream; on with --demo)")
    sampling.add_argument("--motion-reference-mix", type=float, default=argparse.SUPPRESS,
                          help="share of the portrait mixed into the frames each clip continues from, 0 to 1, so a "
                               f"shape gone wrong is not carried from clip to clip (default: 0 = upstream; "
                               f"{DEMO_MOTION_REFERENCE_MIX:g} with --demo)")
    sampling.add_argument("--clip-length", type=int, default=None, help="frames generated together (16; the demo model's own with --demo)")
    sampling.add_argument("--pose-weight", type=float, default=1.0, help="audio influence on head pose / background")
    sampling.add_argument("--face-weight", type=float, default=1.0, help="audio influence on the face (without lips)")
    sampling.add_argument("--lip-weight", type=float, default=1.0, help="audio influence on the lips")
    picture = parser.add_argument_group("picture and sound")
    picture.add_argument("--fps", type=int, default=25, help="video frame rate (the model was trained at 25)")
    picture.add_argument("--size", type=int, default=None, help="model resolution (the released model: 512; the demo model: its own, see docs/demo-model.md)")
    picture.add_argument("--paste-back", action="store_true", help="put the animated face back into the full original picture")
    picture.add_argument("--face-index", type=int, default=None, help="which face (0 = largest) when there are several")
    picture.add_argument("--no-face", choices=("error", "center"), default="error", help="what to do when no face is found")
    picture.add_argument("--separate-vocals", action="store_true", help="remove music/noise first (needs Kim_Vocal_2.onnx)")
    machine = parser.add_argument_group("machine")
    machine.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    machine.add_argument("--dtype", default="auto", choices=PRECISION_CHOICES, help="precision")
    machine.add_argument("--compile", action="store_true",
                         help="compile the denoising step with torch.compile (faster steps on a GPU; the first clip pays the compile time)")
    parser.set_defaults(handler=run_generate)


def request_from_args(args: argparse.Namespace) -> GenerateRequest:
    """The request the options describe; the sampling numbers are checked first, since the config
    objects refuse bad ones with messages that name no option."""
    region_weights = (args.pose_weight, args.face_weight, args.lip_weight)
    overlap = getattr(args, "overlap", 0)
    motion_reference_mix = getattr(args, "motion_reference_mix", 0.0)
    # The --speed preset fills what the options leave unset.
    # (Unset options are absent from `args`: argparse.SUPPRESS keeps "default: None" out of --help.)
    preset = SAMPLING_PRESETS[getattr(args, "speed", "upstream")]
    steps = getattr(args, "steps", preset.num_inference_steps)
    sampler = getattr(args, "sampler", preset.sampler)
    cfg_fraction = getattr(args, "cfg_fraction", preset.guidance.active_fraction)
    check_sampling(SamplingSettings(
        steps=steps, cfg=args.cfg, audio_cfg=args.audio_cfg, emotion_cfg=args.emotion_cfg,
        cfg_fraction=cfg_fraction, sampler=sampler, seed=args.seed, overlap=overlap,
        clip_length=args.clip_length or 16, region_weights=region_weights, motion_reference_mix=motion_reference_mix,
    ))
    generation = GenerationConfig(
        num_inference_steps=steps,
        guidance=GuidanceConfig(scale=args.cfg, audio_scale=args.audio_cfg, emotion_scale=args.emotion_cfg, active_fraction=cfg_fraction),
        clip_length=args.clip_length or 16,
        overlap=overlap,
        region_scales=region_weights,
        sampler=sampler,
        seed=args.seed,
        compile=args.compile,
        colour_anchor=getattr(args, "colour_anchor", False),
        audio_off_in_silence=getattr(args, "audio_off_in_silence", False),
        motion_reference_mix=motion_reference_mix,
    )
    return GenerateRequest(
        image=args.image,
        audio=args.audio,
        out=args.out,
        emotion=args.emotion,
        preset=args.preset,
        intensity=args.intensity,
        emotion_schedule=args.emotion_schedule,
        fps=args.fps,
        size=args.size or 512,
        paste_back=args.paste_back,
        face_index=args.face_index,
        on_no_face=args.no_face,
        separate_vocals=args.separate_vocals,
        generation=generation,
    )


def fill_demo_options(args: argparse.Namespace, bundle) -> None:
    """What `--demo` means for the options left out: the bundle's sample portrait and speech and the
    resolution / clip length it was trained at, and the demo's sampling defaults (the DEMO_* above)."""
    args.image, args.audio = args.image or str(bundle.portrait), args.audio or str(bundle.speech)
    args.size, args.clip_length = args.size or bundle.size, args.clip_length or bundle.clip_length
    # (capped so that a short --clip-length still works; an asked --overlap is checked as given)
    args.overlap = getattr(args, "overlap", max(0, min(DEMO_OVERLAP, args.clip_length - 1)))
    args.speed = getattr(args, "speed", DEMO_SPEED)
    args.colour_anchor = getattr(args, "colour_anchor", DEMO_COLOUR_ANCHOR)
    args.audio_off_in_silence = getattr(args, "audio_off_in_silence", DEMO_AUDIO_OFF_IN_SILENCE)
    args.motion_reference_mix = getattr(args, "motion_reference_mix", DEMO_MOTION_REFERENCE_MIX)


def run_generate(args: argparse.Namespace) -> int:
    """The `generate` command. Bad inputs raise `InputError`, which `cli.main` reports in one line."""
    from tqdm import tqdm

    demo = None
    if args.demo:
        from .demo.bundle import DemoBundle

        demo = DemoBundle()
        if demo.missing_files():
            raise InputError("demo", "the demo bundle is incomplete; missing: "
                             + ", ".join(str(path) for path in demo.missing_files()), "reinstall the package")
        fill_demo_options(args, demo)
        if getattr(args, "threads", None) is None and not os.environ.get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(DEMO_THREADS)
    else:
        missing = [f"--{name}" for name in ("image", "audio", "models") if getattr(args, name) is None]
        if missing:
            raise InputError(missing[0].lstrip("-"), f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                             "required", "pass them, or use --demo for the embedded demo model")
    request = request_from_args(args)

    bar = None

    def show(event: ProgressEvent) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.num_clips * event.num_steps, unit="step", desc="generating")
        bar.update(1)
        bar.set_postfix_str(f"clip {event.clip_index + 1}/{event.num_clips}")

    try:
        out = make_video(request, models_dir=args.models, demo=demo, device=args.device, dtype=args.dtype, progress=show)
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {out}")
    return 0
