"""`python -m emocast_core generate`: portrait + speech + emotion -> MP4.

This is the edge where files become conditions: it resolves and loads the models, runs the three
front-ends, streams the pipeline's frames into the video writer (optionally pasted back into the
full original picture) and muxes the driving audio.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional


from .guidance import GuidanceConfig
from .pipeline import EmoCASTPipeline, EmotionConditions, GenerationConfig, ProgressEvent, ReferenceConditions

OUTPUT_AUDIO_RATE = 48000  # the muxed track is decoded again at this rate, not the 16 kHz model input


@dataclass
class GenerateRequest:
    image: Path
    audio: Path
    out: Path
    emotion: Optional[str] = None  # free text or a preset name
    intensity: float = 1.0
    emotion_schedule: Optional[str] = None  # keyframe text, see conditioning.emotion_schedule
    fps: int = 25
    size: int = 512
    paste_back: bool = False
    face_index: Optional[int] = None
    on_no_face: str = "error"
    separate_vocals: bool = False
    generation: GenerationConfig = field(default_factory=GenerationConfig)


def read_image(path: Path):
    """A PIL image, upright as the camera meant it (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).copy()
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file Pillow can read") from None


def emotion_conditions(text_encoder, request: GenerateRequest, num_frames: int) -> EmotionConditions:
    from .conditioning.emotion import emotion_embedding, schedule_embeddings

    uncond = text_encoder.unconditional()
    if request.emotion_schedule:
        tokens = schedule_embeddings(text_encoder, request.emotion_schedule, num_frames, request.fps)
    else:
        tokens = emotion_embedding(text_encoder, request.emotion or "neutral", request.intensity)
    return EmotionConditions(tokens, uncond)


def generate_video(
    models,
    request: GenerateRequest,
    progress: Optional[Callable[[ProgressEvent], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> Path:
    """Make `request.out`. The file appears only when the whole video is written."""
    from .conditioning.audio import load_audio
    from .conditioning.crop import paste_back
    from .conditioning.face import prepare_reference
    from .scheduling import make_scheduler
    from .video import VideoWriter

    prepared = prepare_reference(
        read_image(request.image), models.face_analyzer, size=request.size, face_index=request.face_index, on_no_face=request.on_no_face
    )
    speech = load_audio(request.audio)
    if models.vocal_separator is not None:
        speech = models.vocal_separator.separate(speech)
    features = models.audio_encoder.encode(speech, fps=request.fps, clip_length=request.generation.clip_length)
    emotion = emotion_conditions(models.text_encoder, request, features.num_frames)

    scheduler = make_scheduler(request.generation.sampler)
    pipeline = EmoCASTPipeline(models.net, models.vae, scheduler)
    soundtrack = load_audio(request.audio, sample_rate=OUTPUT_AUDIO_RATE)
    frames = pipeline.generate(
        ReferenceConditions.from_prepared(prepared),
        emotion,
        features.windows(),
        features.num_frames,
        request.generation,
        progress=progress,
        should_cancel=should_cancel,
    )
    with VideoWriter(request.out, request.fps, audio=(soundtrack.waveform, soundtrack.sample_rate)) as writer:
        for chunk in frames:
            if request.paste_back and prepared.crop is not None:
                chunk = paste_back(chunk, prepared.crop, prepared.source_image)
            writer.write(chunk)
    return Path(request.out)


# --- command line -------------------------------------------------------------------------------


def add_generate_command(subparsers) -> None:
    from .scheduling import SCHEDULER_NAMES

    parser = subparsers.add_parser(
        "generate",
        help="make a talking-portrait video from a portrait, a speech file and an emotion",
        description="Animate PORTRAIT so that it speaks SPEECH with the given emotion, and write an MP4 with the speech as its sound track.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = parser.add_argument_group("inputs and output")
    io.add_argument("--image", type=Path, help="portrait image (any size; the face is found and cropped); with --demo: the sample portrait")
    io.add_argument("--audio", type=Path, help="speech: wav, mp3, flac, m4a, ogg, or a video's sound track; with --demo: the sample speech")
    io.add_argument("--out", required=True, type=Path, help="the MP4 to write (appears only when complete)")
    io.add_argument("--models", type=Path, help="models folder (ComfyUI's models/ or the same layout; see README); not used with --demo")
    io.add_argument("--demo", action="store_true",
                    help="use the embedded synthetic demo model (64 px drawn faces, no downloads), not the released weights")
    emotion = parser.add_argument_group("emotion")
    chosen = emotion.add_mutually_exclusive_group()
    chosen.add_argument("--emotion", help='free-text emotion, e.g. "A person is talking with happy emotion."')
    chosen.add_argument("--preset", help="one of: neutral, happy, sad, angry, surprised, fearful, disgusted, contempt")
    chosen.add_argument("--emotion-schedule", help='keyframes "TIME: EMOTION [@INTENSITY]; ...", e.g. "0: neutral; 2.5: happy @0.8"')
    emotion.add_argument("--intensity", type=float, default=1.0, help="0 = neutral, 1 = as described, up to 2 exaggerates")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=40, help="denoising steps per clip")
    sampling.add_argument("--cfg", type=float, default=3.5, help="guidance scale on all conditions together (upstream)")
    sampling.add_argument("--audio-cfg", type=float, default=None, help="extra guidance on the audio alone (one more pass per step)")
    sampling.add_argument("--emotion-cfg", type=float, default=None, help="extra guidance on the emotion text alone (one more pass per step)")
    sampling.add_argument("--cfg-fraction", type=float, default=1.0, help="guide only the first fraction of the steps")
    sampling.add_argument("--sampler", default="ddim", choices=SCHEDULER_NAMES, help="solver (ddim is upstream's)")
    sampling.add_argument("--seed", type=int, default=42, help="random seed (same seed, same video)")
    sampling.add_argument("--overlap", type=int, default=0, help="frames shared and cross-faded between clips (0 = upstream)")
    sampling.add_argument("--clip-length", type=int, default=None, help="frames generated together (16; the demo model's own with --demo)")
    sampling.add_argument("--pose-weight", type=float, default=1.0, help="audio influence on head pose / background")
    sampling.add_argument("--face-weight", type=float, default=1.0, help="audio influence on the face (without lips)")
    sampling.add_argument("--lip-weight", type=float, default=1.0, help="audio influence on the lips")
    picture = parser.add_argument_group("picture and sound")
    picture.add_argument("--fps", type=int, default=25, help="video frame rate (the model was trained at 25)")
    picture.add_argument("--size", type=int, default=None, help="model resolution (the released model: 512; the demo model: 64)")
    picture.add_argument("--paste-back", action="store_true", help="put the animated face back into the full original picture")
    picture.add_argument("--face-index", type=int, default=None, help="which face (0 = largest) when there are several")
    picture.add_argument("--no-face", choices=("error", "center"), default="error", help="what to do when no face is found")
    picture.add_argument("--separate-vocals", action="store_true", help="remove music/noise first (needs Kim_Vocal_2.onnx)")
    machine = parser.add_argument_group("machine")
    machine.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    machine.add_argument("--dtype", default="auto", choices=("auto", "fp16", "bf16", "fp32"), help="precision")
    parser.set_defaults(handler=run_generate)


def request_from_args(args: argparse.Namespace) -> GenerateRequest:
    generation = GenerationConfig(
        num_inference_steps=args.steps,
        guidance=GuidanceConfig(scale=args.cfg, audio_scale=args.audio_cfg, emotion_scale=args.emotion_cfg, active_fraction=args.cfg_fraction),
        clip_length=args.clip_length or 16,
        overlap=args.overlap,
        region_scales=(args.pose_weight, args.face_weight, args.lip_weight),
        sampler=args.sampler,
        seed=args.seed,
    )
    return GenerateRequest(
        image=args.image,
        audio=args.audio,
        out=args.out,
        emotion=args.emotion or args.preset,
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


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .devices import pick_device, pick_dtype
    from .loading import load_models
    from .model_files import resolve_model_paths

    demo = None
    if args.demo:
        from .demo.bundle import DemoBundle

        # The bundle brings its own sample inputs and the resolution / clip length it was trained at.
        demo = DemoBundle()
        if demo.missing_files():
            print(f"error: the demo bundle is incomplete; missing: {', '.join(map(str, demo.missing_files()))}", file=sys.stderr)
            return 2
        args.image, args.audio = args.image or demo.portrait, args.audio or demo.speech
        args.size, args.clip_length = args.size or demo.size, args.clip_length or demo.clip_length
    elif args.image is None or args.audio is None or args.models is None:
        print("error: --image, --audio and --models are required (or use --demo)", file=sys.stderr)
        return 2
    for path, what in ((args.image, "portrait"), (args.audio, "speech")):
        if not path.is_file():
            print(f"error: {what} file not found: {path}", file=sys.stderr)
            return 2
    request = request_from_args(args)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    if demo is not None:
        from .demo.bundle import load_demo_models

        if request.separate_vocals:
            print("error: --separate-vocals is not available with --demo", file=sys.stderr)
            return 2
        try:
            models = load_demo_models(demo, device=device, dtype=dtype)
        except (FileNotFoundError, ImportError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    else:
        require = ["checkpoint", "vae", "text_encoder", "audio_encoder", "face"]
        if request.separate_vocals:
            require.append("vocal_separator")
        try:
            paths = resolve_model_paths(args.models, require=require)
            models = load_models(paths, device=device, dtype=dtype, with_vocal_separator=request.separate_vocals)
        except (FileNotFoundError, ValueError) as error:  # MissingModelFilesError; CheckpointError is a ValueError
            print(f"error: {error}", file=sys.stderr)
            return 2

    bar = None

    def show(event: ProgressEvent) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.num_clips * event.num_steps, unit="step", desc="generating")
        bar.update(1)
        bar.set_postfix_str(f"clip {event.clip_index + 1}/{event.num_clips}")

    try:
        out = generate_video(models, request, progress=show)
    except (FileNotFoundError, ValueError) as error:  # no face, unreadable or silent audio, bad schedule...
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if bar is not None:
            bar.close()
    print(f"wrote {out}")
    return 0
