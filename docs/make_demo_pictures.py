"""Remake the pictures of the demo model shown at the top of README.md.

    python docs/make_demo_pictures.py                 # docs/images/demo_emotions.png and .gif
    python docs/make_demo_pictures.py --steps 40      # DDIM 40 steps instead of the command's fast preset
    python docs/make_demo_pictures.py --photo         # docs/images/demo_photo.png: a photograph

For each emotion this runs what `python -m emocast_core generate --demo --emotion ...` runs (the
bundled portrait and speech, the demo model's resolution, clip length, overlap, colour anchoring,
silence handling, motion-frame mix, sampling preset and seed, the same `generate_video` and MP4
writer) on the first seconds of the sample speech, reads the MP4's frames back and lays them out:

* a contact sheet: one row per emotion, columns = moments spread over the video;
* an animated GIF with the emotions side by side (a small shared palette, so it stays small).

The frames are shown at the model's own size (or enlarged by whole factors with nearest-neighbour
resampling), so every pixel the model made stays visible as it is. This is documentation tooling, not part of the
runtime.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IMAGES = Path(__file__).resolve().parent / "images"
SHEET_NAME = "demo_emotions.png"
GIF_NAME = "demo_emotions.gif"
PHOTO_NAME = "demo_photo.png"

# The sentence form and emotion words the demo model was trained on (see
# emocast_research/synthetic/captions.py: TRAIN_TEMPLATES, EMOTION_WORDS), as in the README command.
PROMPT_FORM = "A person is talking with {} emotion."
DEFAULT_EMOTIONS = ("happy", "sad", "angry", "surprised")

# Layout, in pixels of the final picture.
LABEL_WIDTH = 84  # emotion names left of the contact sheet's rows
HEADER_HEIGHT = 16  # times above the contact sheet's columns; emotion names above the GIF's panels
FOOTER_HEIGHT = 16  # what made the picture, under the contact sheet
BACKGROUND = (255, 255, 255)
INK = (40, 40, 40)
GIF_COLOURS = 64
GIF_FRAME_STEP = 2  # every second video frame: 12.5 frames per second is smooth enough and halves the file


@dataclass(frozen=True)
class DemoVideoSettings:
    """How the pictured videos are made: as the README command makes them (its `DEMO_SPEED` preset),
    or with `steps` DDIM steps."""

    seconds: float = 2.4  # of the sample speech, from its start
    steps: int | None = None  # None: the command's sampling preset; a number: DDIM with that many steps
    seed: int = 42  # the command's default
    fps: int = 25

    def generation(self):
        """What `generate --demo` samples with, read from the command itself (`--steps N --sampler ddim`
        when `steps` is given)."""
        from emocast_core.cli import demo_generation

        steps = () if self.steps is None else ("--steps", str(self.steps), "--sampler", "ddim")
        return demo_generation(("--seed", str(self.seed), *steps))

    def describe(self) -> str:
        from emocast_core.generate import DEMO_SPEED
        from emocast_core.pipeline import SAMPLING_PRESETS

        if self.steps is None:
            preset = SAMPLING_PRESETS[DEMO_SPEED]
            return f"the command's defaults ({preset.sampler} {preset.num_inference_steps} steps), seed {self.seed}"
        return f"DDIM {self.steps} steps, seed {self.seed}"


def write_speech_start(source: Path, seconds: float, out: Path) -> Path:
    """The first `seconds` of the WAV `source`, as a WAV at `out` (the video is as long as its speech)."""
    with wave.open(str(source)) as reader:
        params = reader.getparams()
        samples = reader.readframes(round(seconds * params.framerate))
    with wave.open(str(out), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(samples)
    return out


def generate_emotion_videos(emotions, settings: DemoVideoSettings, work: Path, device: str = "cpu",
                            image=None) -> dict[str, np.ndarray]:
    """emotion -> the (T, S, S, 3) uint8 frames of the demo command's video for that emotion;
    `image` (a path or PIL image) replaces the sample portrait, as `--image` does."""
    from emocast_core.demo.bundle import DemoBundle, load_demo_models
    from emocast_core.demo.face import demo_face_analyzer
    from emocast_core.devices import pick_device
    from emocast_core.generate import GenerateRequest, generate_video
    from emocast_core.video import read_video_frames

    bundle = DemoBundle()
    speech = write_speech_start(bundle.speech, settings.seconds, work / "speech.wav")
    models = load_demo_models(bundle, device=pick_device(device), face_analyzer=demo_face_analyzer())
    generation = settings.generation()
    videos = {}
    for emotion in emotions:
        request = GenerateRequest(image=bundle.portrait if image is None else image, audio=speech,
                                  out=work / f"{emotion}.mp4", emotion=PROMPT_FORM.format(emotion),
                                  fps=settings.fps, size=bundle.size, generation=generation)
        videos[emotion] = read_video_frames(generate_video(models, request))
    return videos


def model_input(image, size: int) -> np.ndarray:
    """The (size, size, 3) uint8 crop of the picture file `image` that the demo model is given (its face
    found and framed)."""
    from emocast_core.validation import read_image_file
    from emocast_research.synthetic.demo_check import model_crop

    return model_crop(read_image_file(image), size)


def _font(size: int = 11):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _enlarge(frame: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(frame)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def contact_sheet(videos: dict[str, np.ndarray], columns: int, scale: int, fps: int, note: str) -> Image.Image:
    """Rows = emotions, `columns` frames evenly spread from the first to the last; times on top."""
    num_frames, height, width = next(iter(videos.values())).shape[:3]
    picks = np.linspace(0, num_frames - 1, num=min(columns, num_frames)).round().astype(int)
    panel_w, panel_h = width * scale, height * scale
    sheet = Image.new("RGB", (LABEL_WIDTH + len(picks) * panel_w, HEADER_HEIGHT + len(videos) * panel_h + FOOTER_HEIGHT), BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), _font()
    for column, index in enumerate(picks):
        draw.text((LABEL_WIDTH + column * panel_w + 4, 2), f"{index / fps:.2f} s", fill=INK, font=font)
    for row, (emotion, frames) in enumerate(videos.items()):
        top = HEADER_HEIGHT + row * panel_h
        draw.text((6, top + panel_h // 2 - 6), emotion, fill=INK, font=font)
        for column, index in enumerate(picks):
            sheet.paste(_enlarge(frames[index], scale), (LABEL_WIDTH + column * panel_w, top))
    draw.text((6, sheet.height - FOOTER_HEIGHT + 2), note, fill=INK, font=font)
    return sheet


def side_by_side_frames(videos: dict[str, np.ndarray], scale: int) -> list[Image.Image]:
    """One picture per video frame: the emotions' frames in a row, each named above."""
    num_frames, height, width = next(iter(videos.values())).shape[:3]
    panel_w, panel_h = width * scale, height * scale
    font = _font()
    frames = []
    for index in range(0, num_frames, GIF_FRAME_STEP):
        frame = Image.new("RGB", (len(videos) * panel_w, HEADER_HEIGHT + panel_h), BACKGROUND)
        draw = ImageDraw.Draw(frame)
        for column, (emotion, video) in enumerate(videos.items()):
            draw.text((column * panel_w + 4, 2), emotion, fill=INK, font=font)
            frame.paste(_enlarge(video[index], scale), (column * panel_w, HEADER_HEIGHT))
        frames.append(frame)
    return frames


def save_gif(frames: list[Image.Image], path: Path, fps: int) -> None:
    """An endless GIF with one palette for all frames (per-frame palettes flicker)."""
    strip = Image.new("RGB", (frames[0].width, frames[0].height * len(frames)))
    for index, frame in enumerate(frames):
        strip.paste(frame, (0, index * frame.height))
    palette = strip.quantize(colors=GIF_COLOURS, method=Image.Quantize.MEDIANCUT)
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    indexed[0].save(path, format="GIF", save_all=True, append_images=indexed[1:], loop=0,
                    duration=round(1000 * GIF_FRAME_STEP / fps), optimize=True)


def photo_sheet(crop: np.ndarray, frames: np.ndarray, columns: int, scale: int, fps: int, note: str) -> Image.Image:
    """The crop the model is given, then `columns` frames of the video made from it."""
    row = contact_sheet({"": frames}, columns, scale, fps, note)
    sheet = Image.new("RGB", (crop.shape[1] * scale + row.width - LABEL_WIDTH + 8, row.height), BACKGROUND)
    ImageDraw.Draw(sheet).text((4, 2), "model input", fill=INK, font=_font())
    sheet.paste(_enlarge(crop, scale), (0, HEADER_HEIGHT))
    sheet.paste(row.crop((LABEL_WIDTH, 0, row.width, row.height - FOOTER_HEIGHT)), (crop.shape[1] * scale + 8, 0))
    ImageDraw.Draw(sheet).text((6, sheet.height - FOOTER_HEIGHT + 2), note, fill=INK, font=_font())
    return sheet


def make_photo_picture(out_dir: Path = IMAGES, photo=None, emotion: str = "happy",
                       settings: DemoVideoSettings = DemoVideoSettings(), columns: int = 5, scale: int = 1,
                       device: str = "cpu") -> Path:
    """What the demo model makes of the photograph `photo` (a path; default: scikit-image's
    astronaut, Eileen Collins, a public-domain NASA portrait, saved as a JPEG): `out_dir/demo_photo.png`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        if photo is None:
            from skimage import data

            photo = Path(work) / "astronaut.jpg"
            Image.fromarray(data.astronaut()).save(photo, quality=90)
        from emocast_core.demo.bundle import DemoBundle

        crop = model_input(photo, DemoBundle().size)
        frames = generate_emotion_videos((emotion,), settings, Path(work), device, image=photo)[emotion]
    note = f"photo, prompt {emotion}; {frames.shape[1]} px shown x{scale}; {settings.describe()}"
    sheet = photo_sheet(crop, frames, columns, scale, settings.fps, note)
    return _replace_atomically(lambda path: sheet.save(path, format="PNG", optimize=True), out_dir / PHOTO_NAME)


def _replace_atomically(write, path: Path) -> Path:
    """Write with `write(temporary_path)` beside `path`, then move it into place: never a half-written picture."""
    handle, temporary = tempfile.mkstemp(suffix=path.suffix, prefix=".partial-", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a picture for the docs is readable by all
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def make_demo_pictures(out_dir: Path = IMAGES, emotions=DEFAULT_EMOTIONS, settings: DemoVideoSettings = DemoVideoSettings(),
                       columns: int = 6, scale: int = 1, device: str = "cpu") -> tuple[Path, Path]:
    """Generate the demo videos and write the contact sheet and the GIF into `out_dir`; returns their paths."""
    if not emotions:
        raise ValueError("no emotions given: name at least one, e.g. happy")
    if columns < 1 or scale < 1:
        raise ValueError(f"columns and scale must be at least 1, got {columns} and {scale}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        videos = generate_emotion_videos(emotions, settings, Path(work), device)
    size = next(iter(videos.values())).shape[1]
    shown = "actual size" if scale == 1 else f"shown x{scale} (nearest neighbour)"
    note = f"EmoCAST synthetic demo model, {size} px {shown}; {settings.describe()}"
    sheet = contact_sheet(videos, columns, scale, settings.fps, note)
    sheet_path = _replace_atomically(lambda path: sheet.save(path, format="PNG", optimize=True), out_dir / SHEET_NAME)
    gif_frames = side_by_side_frames(videos, scale)
    gif_path = _replace_atomically(lambda path: save_gif(gif_frames, path, settings.fps), out_dir / GIF_NAME)
    return sheet_path, gif_path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the pictures")
    parser.add_argument("--emotions", nargs="+", default=list(DEFAULT_EMOTIONS), help="one row / panel each")
    parser.add_argument("--seconds", type=float, default=DemoVideoSettings.seconds, help="of the sample speech")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per clip (default: the command's own sampling)")
    parser.add_argument("--columns", type=int, default=6, help="frames per row of the contact sheet")
    parser.add_argument("--scale", type=int, default=1, help="nearest-neighbour enlargement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--photo", action="store_true",
                        help="make docs/images/demo_photo.png instead: the demo model on a photograph (scikit-image's astronaut)")
    args = parser.parse_args(argv)
    settings = DemoVideoSettings(seconds=args.seconds, steps=args.steps)
    if args.photo:
        path = make_photo_picture(args.out, settings=settings, scale=args.scale, device=args.device)
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        return
    for path in make_demo_pictures(args.out, tuple(args.emotions), settings, args.columns, args.scale, args.device):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
