"""Every check on user input, in one place, run before any model is loaded.

The command line, the Python API (`emocast_core.generate`) and the ComfyUI nodes call the same
functions here. A bad input raises `InputError`: a `ValueError` that knows which setting is wrong
(`field`), what is wrong (`problem`) and how to fix it (`fix`). The texts name settings through
placeholders, ``{@steps}`` or ``{@on_no_face=center}``, that each front-end spells its own way
(`CLI_OPTIONS`: ``--no-face center``; `API_OPTIONS`: ``on_no_face='center'``; `NODE_OPTIONS`:
``on_no_face = center``), so a hint always names an option the user can actually set.
"""
from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

# Shortest driving audio: a couple of video frames, and more than wav2vec2's 25 ms receptive field.
MIN_AUDIO_SECONDS = 0.1
MAX_STEPS = 1000
MAX_FPS = 120.0
MAX_CLIP_LENGTH = 64
MAX_SEED = 2**64 - 1  # torch generators take 64-bit seeds
SILENCE_WARNING = "the speech is silent: the video shows the face with the mouth closed"
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_PLACEHOLDER = re.compile(r"\{@(\w+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class OptionNames:
    """How one front-end spells a setting: its name for each field, and "name + value" for hints."""

    names: Mapping[str, str]
    assignment: str  # e.g. "{name} {value}"
    default_name: Callable[[str], str] = str  # the field name itself

    def name(self, field_name: str) -> str:
        return self.names.get(field_name) or self.default_name(field_name)

    def render(self, template: str) -> str:
        def replace(match: re.Match) -> str:
            name = self.name(match[1])
            return name if match[2] is None else self.assignment.format(name=name, value=match[2])

        return _PLACEHOLDER.sub(replace, template)


CLI_OPTIONS = OptionNames(
    names={"on_no_face": "--no-face"},
    assignment="{name} {value}",
    default_name=lambda field_name: "--" + field_name.replace("_", "-"),
)
API_OPTIONS = OptionNames(
    names={"steps": "generation.num_inference_steps", "cfg": "generation.guidance.scale",
           "audio_cfg": "generation.guidance.audio_scale", "emotion_cfg": "generation.guidance.emotion_scale",
           "cfg_fraction": "generation.guidance.active_fraction", "overlap": "generation.overlap",
           "clip_length": "generation.clip_length", "sampler": "generation.sampler", "seed": "generation.seed",
           "pose_weight": "generation.region_scales", "face_weight": "generation.region_scales",
           "lip_weight": "generation.region_scales", "motion_reference_mix": "generation.motion_reference_mix"},
    assignment="{name}={value!r}",
)
NODE_OPTIONS = OptionNames(
    names={"sampler": "solver", "cfg_fraction": "guidance_fraction", "emotion_schedule": "schedule",
           "emotion": "text"},
    assignment="{name} = {value}",
)


class InputError(ValueError):
    """A user input that cannot work; `str()` is one line naming the problem and the fix."""

    def __init__(self, field: str, problem: str, fix: str = "", options: OptionNames = API_OPTIONS):
        self.field, self.problem, self.fix, self.options = field, problem, fix, options
        super().__init__(self.describe(options))

    def describe(self, options: OptionNames) -> str:
        text = options.render(self.problem)
        return f"{text}; {options.render(self.fix)}" if self.fix else text

    def for_options(self, options: OptionNames) -> "InputError":
        """The same error, worded for another front-end."""
        return InputError(self.field, self.problem, self.fix, options)


def _shown(value: Any) -> str:
    """A user value inside a message, with braces that could look like placeholders neutralised."""
    return str(value).replace("{@", "{ @")


# --- files -------------------------------------------------------------------------------------


def check_input_file(path: Any, field_name: str, what: str) -> Path:
    """An existing, readable file; URLs, folders and missing files are refused."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if URL_PATTERN.match(text):
        raise InputError(field_name, f"{{@{field_name}}} is a URL ({_shown(text)}), not a local file",
                         f"download the {what} first and pass the local file")
    path = Path(text).expanduser()
    if path.is_dir():
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} is a folder", f"pass the {what} file itself")
    if not path.is_file():
        raise InputError(field_name, f"{{@{field_name}}}: {what} file not found: {_shown(path)}",
                         "check the path (relative paths start at the current folder)")
    if not os.access(path, os.R_OK):
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} cannot be read (permission denied)",
                         "make it readable or copy it somewhere you can read")
    return path


def read_image_file(path: Any, field_name: str = "image"):
    """The decoded portrait as a PIL image, upright as the camera meant it (EXIF orientation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = check_input_file(path, field_name, "portrait")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not after the models are loaded
            return ImageOps.exif_transpose(image).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} is not an image Pillow can decode ({_shown(error)})",
                         "pass a PNG, JPEG or WebP portrait") from None


@dataclass(frozen=True)
class CheckedAudio:
    """Driving audio that decodes and is long enough; `silent` says it holds no speech."""

    speech: Any  # conditioning.audio_decode.DecodedAudio at 16 kHz
    silent: bool


def check_speech(decoded, field_name: str = "audio") -> CheckedAudio:
    """Length and loudness of already decoded audio (a `DecodedAudio`)."""
    from .conditioning.audio_decode import is_silent

    if decoded.duration_seconds < MIN_AUDIO_SECONDS:
        raise InputError(field_name, f"{{@{field_name}}} holds only {decoded.duration_seconds:.3f} s of audio",
                         f"use a recording of at least {MIN_AUDIO_SECONDS:g} s")
    return CheckedAudio(decoded, is_silent(decoded.waveform))


def read_speech_file(path: Any, field_name: str = "audio") -> CheckedAudio:
    """Decode the driving audio (any container FFmpeg reads) to 16 kHz mono and check it."""
    from .conditioning.audio_decode import WAV2VEC_SAMPLE_RATE, AudioDecodeError, load_audio

    path = check_input_file(path, field_name, "speech")
    try:
        decoded = load_audio(path, sample_rate=WAV2VEC_SAMPLE_RATE)
    except AudioDecodeError as error:
        raise InputError(field_name, f"{{@{field_name}}}: {_shown(error)}",
                         "pass a wav, mp3, flac, m4a or ogg file, or a video with a sound track") from None
    return check_speech(decoded, field_name)


def check_output_file(path: Any, field_name: str = "out", suffix: str = ".mp4") -> Path:
    """An output path that can be written: not a folder, ``suffix``, parent folder present or creatable."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    if URL_PATTERN.match(text):
        raise InputError(field_name, f"{{@{field_name}}} is a URL ({_shown(text)})", "name a local file")
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} is a folder",
                         f"name the file to write, e.g. {_shown(path / ('video' + suffix))}")
    if path.suffix.lower() != suffix:
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} does not end in {suffix}",
                         f"name the file ...{suffix} (the video is written as {suffix[1:].upper()})")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(field_name, f"{{@{field_name}}} {_shown(path)} exists and cannot be replaced",
                         "choose another name")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(field_name, f"{{@{field_name}}}: {_shown(existing)} is a file, so the folder "
                         f"{_shown(path.parent)} cannot be made", "choose another output folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(field_name, f"{{@{field_name}}}: no permission to write in {_shown(existing)}",
                         "choose an output folder you can write to")
    return path


# --- numbers and names -------------------------------------------------------------------------


def _number(field_name: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        kind = "a whole number" if integer else "a number"
        raise InputError(field_name, f"{{@{field_name}}} must be {kind}, got {_shown(repr(value))}")
    if not math.isfinite(value):
        raise InputError(field_name, f"{{@{field_name}}} must be a finite number, got {_shown(value)}")
    return value


def check_range(field_name: str, value: Any, low: float | None = None, high: float | None = None, *,
                integer: bool = False, meaning: str = "") -> Any:
    """``low <= value <= high`` (either bound may be None); returns the value."""
    _number(field_name, value, integer=integer)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            wanted = f"at least {low:g}"
        elif low is None:
            wanted = f"at most {high:g}"
        else:
            wanted = f"between {low:g} and {high:g}"
        raise InputError(field_name, f"{{@{field_name}}} must be {wanted}, got {_shown(value)}", meaning)
    return value


@dataclass(frozen=True)
class SamplingSettings:
    """The numbers of one generation, under the names every front-end shares."""

    steps: int = 40
    cfg: float = 3.5
    audio_cfg: Optional[float] = None
    emotion_cfg: Optional[float] = None
    cfg_fraction: float = 1.0
    sampler: str = "ddim"
    seed: int = 42
    overlap: int = 0
    clip_length: int = 16
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # pose, face, lip
    motion_reference_mix: float = 0.0

    @classmethod
    def from_config(cls, config) -> "SamplingSettings":
        """From a `pipeline.GenerationConfig`."""
        guidance = config.guidance
        return cls(
            steps=config.num_inference_steps, cfg=guidance.scale, audio_cfg=guidance.audio_scale,
            emotion_cfg=guidance.emotion_scale, cfg_fraction=guidance.active_fraction, sampler=config.sampler,
            seed=config.seed, overlap=config.overlap, clip_length=config.clip_length,
            region_weights=tuple(config.region_scales), motion_reference_mix=config.motion_reference_mix,
        )


def check_sampling(settings: SamplingSettings) -> SamplingSettings:
    """Steps, guidance, solver, seed and clip layout in their working ranges."""
    from .scheduling import SCHEDULER_NAMES

    check_range("steps", settings.steps, 1, MAX_STEPS, integer=True, meaning="40 is upstream's, 20 with dpmpp_2m/unipc")
    check_range("cfg", settings.cfg, 0, None, meaning="1 = no guidance, 3.5 is upstream's")
    for name in ("audio_cfg", "emotion_cfg"):
        if getattr(settings, name) is not None:
            check_range(name, getattr(settings, name), 0, None, meaning="0 or leave it out to turn it off")
    check_range("cfg_fraction", settings.cfg_fraction, 0, 1, meaning="1 guides every step")
    if settings.sampler not in SCHEDULER_NAMES:
        raise InputError("sampler", f"{{@sampler}} {_shown(repr(settings.sampler))} is not a solver",
                         f"choose one of {', '.join(SCHEDULER_NAMES)}")
    check_range("seed", settings.seed, 0, MAX_SEED, integer=True)
    check_range("clip_length", settings.clip_length, 1, MAX_CLIP_LENGTH, integer=True, meaning="the model was trained on 16")
    check_range("overlap", settings.overlap, 0, settings.clip_length - 1, integer=True,
                meaning=f"it must be smaller than the clip length ({settings.clip_length}); 0 is upstream's")
    if len(settings.region_weights) != 3:
        raise InputError("region_weights", "give three region weights (pose, face, lip)")
    for name, weight in zip(("pose_weight", "face_weight", "lip_weight"), settings.region_weights):
        check_range(name, weight, 0, 10, meaning="1 is upstream's")
    check_range("motion_reference_mix", settings.motion_reference_mix, 0, 1,
                meaning="0 is upstream's (motion frames as the previous clip made them), 1 starts every clip from the portrait")
    return settings


def check_picture(fps: Any, size: Any, face_index: Any = None, on_no_face: str = "error") -> None:
    """Frame rate, model size and which face to use."""
    check_range("fps", fps, 1, MAX_FPS, meaning="the model was trained at 25")
    check_range("size", size, 64, 2048, integer=True, meaning="the released model uses 512")
    if size % 64:
        raise InputError("size", f"{{@size}} must be a multiple of 64, got {_shown(size)}", "e.g. 512")
    if face_index is not None:
        check_range("face_index", face_index, 0, None, integer=True, meaning="0 = the largest face")
    if on_no_face not in ("error", "center"):
        raise InputError("on_no_face", f"{{@on_no_face}} must be error or center, got {_shown(repr(on_no_face))}")


def check_preset(name: Any, field_name: str = "preset") -> str:
    """A preset name (``happy``, an alias such as ``joy``, or ``happy#1``); returns its prompt."""
    from .conditioning.emotion_presets import EMOTION_PRESETS, preset_name, resolve_prompt

    valid = ", ".join(EMOTION_PRESETS)
    if not isinstance(name, str) or preset_name(name.partition("#")[0]) is None:
        raise InputError(field_name, f"{{@{field_name}}} {_shown(repr(name))} is not a preset",
                         f"choose one of {valid}, or describe the emotion in free text with {{@emotion}}")
    try:
        return resolve_prompt(name)
    except ValueError as error:
        raise InputError(field_name, f"{{@{field_name}}}: {_shown(error)}") from None


def check_emotion(text: Any = None, preset: Any = None, intensity: Any = 1.0, schedule: Any = None):
    """One emotion source (free text, preset or schedule) and the intensity; returns the parsed
    schedule keyframes, or None when there is no schedule."""
    from .conditioning.emotion_presets import MAX_EMOTION_INTENSITY
    from .conditioning.emotion_schedule import EmotionScheduleError, parse_emotion_schedule

    check_range("intensity", intensity, 0, MAX_EMOTION_INTENSITY,
                meaning="0 = neutral, 1 = as described, up to 2 exaggerates")
    if preset is not None:
        check_preset(preset)
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InputError("emotion", "{@emotion} is empty", "describe the emotion or choose a preset")
    if schedule is None:
        return None
    if not isinstance(schedule, str):
        raise InputError("emotion_schedule", "{@emotion_schedule} must be text")
    try:
        return parse_emotion_schedule(schedule)
    except EmotionScheduleError as error:
        raise InputError("emotion_schedule", f"{{@emotion_schedule}}: {_shown(error)}",
                         'write it as "0: neutral; 2.5: happy @0.8"') from None


def check_device(name: Any, dtype_name: Any = "auto"):
    """The torch device and dtype the names ask for, refusing ones this machine does not have."""
    from .devices import DTYPE_NAMES, DeviceUnavailableError, pick_device, pick_dtype

    if dtype_name != "auto" and dtype_name not in DTYPE_NAMES:
        raise InputError("dtype", f"{{@dtype}} {_shown(repr(dtype_name))} is not a precision",
                         f"choose auto, {', '.join(DTYPE_NAMES)}")
    try:
        device = pick_device(str(name))
    except DeviceUnavailableError as error:
        raise InputError("device", f"{{@device}}: {_shown(error)}", "use {@device=auto} or {@device=cpu}") from None
    return device, pick_dtype(dtype_name, device)


# --- the face ----------------------------------------------------------------------------------


def find_face(image: Any, analyzer, *, size: int, face_index: Optional[int] = None, on_no_face: str = "error",
              field_name: str = "image", **options):
    """`conditioning.face.prepare_reference`, with its refusals as `InputError`s."""
    from .conditioning.face import NoFaceError, prepare_reference

    try:
        return prepare_reference(image, analyzer, size=size, face_index=face_index, on_no_face=on_no_face, **options)
    except NoFaceError:
        raise InputError(field_name, f"no face found in {{@{field_name}}}",
                         "use a portrait with a clearly visible face, or {@on_no_face=center} to animate a "
                         "centre crop without identity") from None
    except IndexError as error:
        raise InputError("face_index", f"{{@face_index}}: {_shown(error)}", "0 is the largest face") from None


# --- a whole generate request ------------------------------------------------------------------


@dataclass
class CheckedRequest:
    """What `check_request` decoded, handed on so nothing is read twice."""

    image: Any  # PIL image
    audio: CheckedAudio
    keyframes: Optional[list] = field(default=None)


def check_request(request) -> CheckedRequest:
    """Every check of a `generate.GenerateRequest` that needs no model: numbers and names first (instant),
    then the output path, then decoding the image and the audio."""
    check_sampling(SamplingSettings.from_config(request.generation))
    check_picture(request.fps, request.size, request.face_index, request.on_no_face)
    keyframes = check_emotion(text=request.emotion, preset=request.preset, intensity=request.intensity,
                              schedule=request.emotion_schedule)
    sources = [name for name in ("emotion", "preset", "emotion_schedule") if getattr(request, name) is not None]
    if len(sources) > 1:
        raise InputError(sources[1], f"give only one of {' / '.join('{@' + s + '}' for s in sources)}")
    check_output_file(request.out)
    image = read_image_file(request.image)
    audio = read_speech_file(request.audio)
    return CheckedRequest(image=image, audio=audio, keyframes=keyframes)


@contextmanager
def worded_for(options: OptionNames) -> Iterator[None]:
    """Re-raise the block's `InputError`s worded for another front-end (e.g. `NODE_OPTIONS`)."""
    try:
        yield
    except InputError as error:
        raise error.for_options(options) from None
