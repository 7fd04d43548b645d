"""What the README's demo command shows a person, in numbers (`demo-model --steps check`).

For each trained emotion this runs the README's main command itself,
``python -m emocast_core generate --demo --emotion "A person is talking with <emotion> emotion."``,
in a child process with the command's own defaults (sample portrait and speech, steps, solver,
clip length, overlap, threads), times it, reads the MP4 back and measures:

* seconds and CPU-seconds of the command (the child's own rusage, so other work on the machine does
  not count);
* seams: `evaluation.temporal.seam_ratio`, the frame-to-frame change across clip borders over the
  change inside clips (about 1: no visible jump);
* lip sync: `evaluation.temporal.mouth_audio_correlation` (how dark the mouth region is against the
  speech envelope; weight-free);
* colour drift: CIELAB distance (Delta E 1976) between the mean colour of the first second and of
  each later second; the largest is reported (a person notices about 2-3; the first demo model drifted
  by about 13);
* upside-down frames: the indices of frames whose edges match the vertically flipped portrait crop
  better than the crop itself. An indicator of where to look, not a count: it finds faces turned
  over by a pause in the speech, but also flags upright ones when the portrait's hair or a chin
  shadow dominates the edges (docs/demo-model.md);
* identity: skin, hair and background colours of the frames (`demo.drawn_faces.SyntheticRecognizer`)
  against the portrait's: the mean error, and how often the sample person is the closest among the
  run's held-out people;
* emotion: the learning benchmark's frame reader (saved by the evaluate step) on every frame: the share
  of frames read as the prompt's emotion and the emotion read most often; and, to show what the
  reader itself makes of this face, its reading of the sample person's own drawings (the portrait,
  and each emotion drawn at full intensity, cut as the model frames them: `reader_on_drawings`);
* silence: the command once more on the sample speech with digital silence added before it, between
  two words and after it (`PAUSES`): how far the frames during silence move from the portrait compared
  with the frames during speech (`silence_change_ratio`, about 1 or below: the face holds; a face that
  breaks up while the sound is silent scores well above 1), and how open the mouth is then.

The numbers go to ``eval/demo_check.json`` and into docs/demo-model.md.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from emocast_core.conditioning.audio_decode import DecodedAudio, load_audio
from emocast_core.conditioning.audio_decode import silent_frames as core_silent_frames
from emocast_core.demo.bundle import DemoBundle
from emocast_core.demo.drawn_faces import SyntheticRecognizer
from emocast_core.demo.face import demo_face_analyzer
from emocast_core.cli import demo_generation
from emocast_core.validation import find_face, read_image_file
from emocast_core.video import read_video_frames, write_wav

from ..evaluation.temporal import mouth_audio_correlation, seam_ratio
from .corpus import identity_from_dict
from .faces import EMOTIONS, FaceState, Identity, portrait_of, render_face
from .speech import insert_silences, mouth_openings

PROMPT_FORM = "A person is talking with {} emotion."  # the README command's wording
# Seconds of digital silence added to the sample speech for the silence run: before it, between two
# words, after it (a recording's lead-in, a pause, the end of the last clip).
PAUSES = {"lead": 0.4, "pause": 0.5, "tail": 0.8}
PAUSE_EMOTION = "happy"


def run_demo_command(emotion: str, out: Path, extra_args=()) -> dict:
    """The README command for `emotion` in a child process -> its wall and CPU seconds."""
    command = [sys.executable, "-m", "emocast_core", "generate", "--demo", "--emotion", PROMPT_FORM.format(emotion),
               "--out", str(out), *extra_args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


def colour_drift(frames: np.ndarray, fps: float) -> float:
    """Largest Delta E 1976 between the mean CIELAB colour of the first second and of any later second."""
    per_second = max(1, int(round(fps)))
    means = []
    for start in range(0, len(frames) - per_second + 1, per_second):
        window = frames[start:start + per_second].astype(np.float32) / 255.0
        lab = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2LAB) for frame in window])
        means.append(lab.reshape(-1, 3).mean(axis=0))
    if len(means) < 2:
        return 0.0
    return float(max(np.linalg.norm(mean - means[0]) for mean in means[1:]))


def edge_pattern(image: np.ndarray) -> np.ndarray:
    """Unit-norm, zero-mean map of where the picture's edges are (blurred Sobel magnitude of the grey
    levels, without the outer eighth on each side): the brows, eyes and mouth, not the colours."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    magnitude = cv2.GaussianBlur(magnitude, (0, 0), 2.0)
    border = magnitude.shape[0] // 8
    values = magnitude[border:-border, border:-border].ravel()
    values = values - values.mean()
    return values / (np.linalg.norm(values) + 1e-6)


def upside_down_frames(frames: np.ndarray, reference: np.ndarray) -> list[int]:
    """Indices of the frames whose edges match the vertically flipped reference better than the
    reference. Edges, not colours: a drawn face's oval is nearly the same upside down, its features
    are not, and a shifted background hue must not count."""
    upright, flipped = edge_pattern(reference), edge_pattern(reference[::-1].copy())
    flagged = []
    for index, frame in enumerate(frames):
        pattern = edge_pattern(frame)
        if pattern @ flipped > pattern @ upright:
            flagged.append(index)
    return flagged


def silent_frames(waveform: np.ndarray, rate: int, fps: float, num_frames: int) -> np.ndarray:
    """(num_frames,) bool: the frames whose stretch of sound ([i / fps, (i + 1) / fps)) is silent, by the
    rule the command itself uses for `--audio-off-in-silence` (digital silence counts, speech does not)."""
    return core_silent_frames(DecodedAudio(np.asarray(waveform, dtype=np.float32), rate), fps, num_frames).numpy()


def change_from(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(T,) mean absolute difference (0-255) of each frame from the reference picture."""
    return np.abs(frames.astype(np.float32) - reference.astype(np.float32)[None]).mean(axis=(1, 2, 3))


def check_silence(out: Path, speech: np.ndarray, rate: int, fps: float, reference: np.ndarray, extra_args=()) -> dict:
    """The demo command on `speech` with `PAUSES` of digital silence added; how the face holds during them."""
    padded = insert_silences(speech, PAUSES["lead"], PAUSES["tail"], PAUSES["pause"], sample_rate=rate)
    sound = out.with_suffix(".wav")
    write_wav(sound, padded[None], rate)
    timing = run_demo_command(PAUSE_EMOTION, out, ("--audio", str(sound), *extra_args))
    frames = read_video_frames(out)
    silent = silent_frames(padded, rate, fps, len(frames))
    change = change_from(frames, reference)
    openings = mouth_openings(padded, len(frames), fps, rate)  # the speech's own loudness, 0 when silent
    speaking = ~silent & (openings > 0)
    ratio = float(change[silent].mean() / max(change[speaking].mean(), 1e-6)) if silent.any() and speaking.any() else None
    return {
        **timing, "emotion": PAUSE_EMOTION, "pauses_seconds": PAUSES, "frames": len(frames),
        "silent_frames": int(silent.sum()),
        "change_silent": round(float(change[silent].mean()), 2) if silent.any() else None,
        "change_speaking": round(float(change[speaking].mean()), 2) if speaking.any() else None,
        "silence_change_ratio": None if ratio is None else round(ratio, 3),
        "upside_down_frames_in_silence": [index for index in upside_down_frames(frames, reference) if silent[index]],
    }


DRAWN_OPENINGS = (0.0, 0.3, 0.6)  # mouth openings of the drawings the reader is shown: closed, speaking


def reader_on_drawings(frame_reader, person: Identity, size: int) -> dict:
    """What the frame reader reads on `person`'s own drawings (the sample person,
    `demo_bundle.sample_person`), cut as the model frames them: the portrait's emotion probabilities,
    and per emotion (drawn at intensity 1 with the mouth at `DRAWN_OPENINGS`) the emotion read most
    often. A reading of the videos means only as much as the reader gets these right."""
    from .evaluation import in_model_framing  # torch and the pipeline: only when a reader is given

    portrait_probabilities = frame_reader.read(in_model_framing(portrait_of(person, size)[None], person))[1][0]
    drawn = {}
    for emotion in EMOTIONS:
        frames = np.stack([render_face(person, FaceState(opening, emotion, 1.0), size) for opening in DRAWN_OPENINGS])
        read = frame_reader.read(in_model_framing(frames, person))[1].argmax(axis=1)
        drawn[emotion] = [EMOTIONS[int(index)] for index in read]
    return {"portrait": {name: round(float(value), 3) for name, value in zip(EMOTIONS, portrait_probabilities)},
            "drawn": drawn, "openings": list(DRAWN_OPENINGS)}


def model_crop(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a portrait (drawn or a photograph) as the demo command frames it."""
    pixels = find_face(image, demo_face_analyzer(), size=size).pixel_values[0]
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def check_demo(work: Path | None = None, emotions=EMOTIONS, frame_reader=None, audio: Path | None = None,
               extra_args=()) -> dict:
    """Run and measure the README command per emotion; `work` (a learning-benchmark folder) adds the
    identity test against its held-out people and receives eval/demo_check.json. `audio` (a 16-bit
    speech file) replaces the sample speech and `extra_args` are added to the command (the tests use both to
    stay short; the reported figures use neither)."""
    bundle = DemoBundle()
    manifest = bundle.manifest()
    fps = manifest["generation"]["fps"]
    # The settings the command runs with these extra arguments (its clip layout is what the seams are measured on).
    generation = demo_generation(extra_args)
    clip_length, overlap = generation.clip_length, generation.overlap
    audio_args = ("--audio", str(audio)) if audio is not None else ()
    decoded = load_audio(audio or bundle.speech)  # what the command hears, at wav2vec's 16 kHz
    speech, rate = decoded.waveform, decoded.sample_rate
    reference = model_crop(read_image_file(bundle.portrait), bundle.size)
    recognizer, analyzer = SyntheticRecognizer(), demo_face_analyzer()

    def attributes(frame):
        faces = analyzer.detect(frame)
        return recognizer.attributes(frame, faces[0].bbox if faces else None)

    people = {"sample": attributes(reference)}
    held_out = Path(work) / "corpus" / "held_out" if work is not None else None
    has_held_out = held_out is not None and (held_out / "clips.jsonl").is_file()
    if has_held_out:
        rows = [json.loads(line) for line in (held_out / "clips.jsonl").read_text().splitlines()]
        for row in rows:
            if row["speaker"] not in people:
                drawn = portrait_of(identity_from_dict(row["identity"]), bundle.size)
                people[row["speaker"]] = attributes(model_crop(drawn, bundle.size))
        # The sample portrait is one of the held-out people: drop that duplicate.
        people = {name: value for name, value in people.items()
                  if name == "sample" or np.abs(value - people["sample"]).mean() > 1e-3}

    drawings = None
    if frame_reader is not None and has_held_out:
        from .demo_bundle import sample_person  # torch and diffusers: only when a reader is given

        drawings = reader_on_drawings(frame_reader, sample_person(held_out), bundle.size)

    results = {}
    with tempfile.TemporaryDirectory() as folder:
        # With a work folder the videos are kept (eval/demo_videos/) for a person to look at.
        videos = Path(work) / "eval" / "demo_videos" if work is not None else Path(folder)
        videos.mkdir(parents=True, exist_ok=True)
        for emotion in emotions:
            out = videos / f"{emotion}.mp4"
            timing = run_demo_command(emotion, out, (*audio_args, *extra_args))
            frames = read_video_frames(out)
            colours = [attributes(frame) for frame in frames]
            errors = [float(np.abs(colour - people["sample"]).mean()) for colour in colours]
            closest = [min(people, key=lambda name: np.abs(colour - people[name]).mean()) == "sample" for colour in colours]
            result = {
                **timing,
                "frames": len(frames), "size": int(frames.shape[1]),
                "seam_ratio": round(seam_ratio(frames, clip_length, overlap) or 0.0, 3),
                "mouth_audio_r": round(mouth_audio_correlation(frames, speech, rate, fps), 3),
                "colour_drift_delta_e": round(colour_drift(frames, fps), 2),
                "upside_down_frames": upside_down_frames(frames, reference),
                "identity_colour_error": round(float(np.mean(errors)), 4),
                "identity_closest_share": round(float(np.mean(closest)), 3) if len(people) > 1 else None,
            }
            if frame_reader is not None:
                probabilities = frame_reader.read(frames)[1]
                read = probabilities.argmax(axis=1)
                result["emotion_read_share"] = round(float((read == EMOTIONS.index(emotion)).mean()), 3)
                result["emotion_read_most"] = EMOTIONS[int(np.bincount(read, minlength=len(EMOTIONS)).argmax())]
            results[emotion] = result
        silence = check_silence(videos / "silences.mp4", speech, rate, fps, reference, extra_args)
    report = {"settings": {"clip_length": clip_length, "overlap": overlap, "size": bundle.size,
                           "colour_anchor": generation.colour_anchor,
                           "audio_off_in_silence": generation.audio_off_in_silence,
                           "motion_reference_mix": generation.motion_reference_mix,
                           "people_compared": len(people), "extra_args": [*audio_args, *extra_args]},
              "videos": results, "silence": silence, "reader_on_drawings": drawings}
    if work is not None:
        (Path(work) / "eval").mkdir(parents=True, exist_ok=True)
        (Path(work) / "eval" / "demo_check.json").write_text(json.dumps(report, indent=2) + "\n")
    return report

