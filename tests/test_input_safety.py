"""Bad input is refused before any model loads, in one line, with nothing left behind.

`BAD_INPUTS` is the one table of cases: each row is the extra `generate` options (on top of the demo
model and an output file in an empty folder), the exit code and words the one-line message must
hold. To add a case, add a row. Every row runs with model loading made impossible, so a check
that happens only after loading fails the test instead of passing slowly.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data

from emocast_core import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(SAMPLE_RATE)
        handle.writeframes(np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Input files, in a folder of their own (the output and working folders start empty)."""
    folder = tmp_path_factory.mktemp("inputs")
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.jpg")
    Image.fromarray(skimage_data.astronaut()).save(folder / "astronaut.png")
    (folder / "notes.png").write_text("this is text, not a picture\n")
    (folder / "notes.wav").write_text("this is text, not a recording\n")
    time = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    _write_wav(folder / "tone.wav", 0.3 * np.sin(2 * np.pi * 220 * time))
    _write_wav(folder / "blip.wav", 0.3 * np.sin(2 * np.pi * 220 * time[: SAMPLE_RATE // 50]))  # 20 ms
    _write_wav(folder / "silence.wav", np.zeros(SAMPLE_RATE))
    (folder / "a_file").write_text("")
    return folder


def _no_cuda_device() -> str:
    return f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: "cuda:0" on a CPU-only torch


# (id, extra options; "{in}" is the inputs folder and "{out}" the empty output folder, exit code,
#  words the message must contain)
BAD_INPUTS = [
    ("steps zero", ["--steps", "0"], 2, ["--steps", "between 1 and"]),
    ("steps not a number", ["--steps", "abc"], 2, ["--steps", "invalid int"]),
    ("negative cfg", ["--cfg", "-3"], 2, ["--cfg", "at least 0"]),
    ("nan cfg", ["--cfg", "nan"], 2, ["--cfg", "finite"]),
    ("negative audio cfg", ["--audio-cfg", "-1"], 2, ["--audio-cfg"]),
    ("cfg fraction above 1", ["--cfg-fraction", "2"], 2, ["--cfg-fraction", "between 0 and 1"]),
    ("unknown preset", ["--preset", "furious"], 2, ["--preset", "'furious'", "happy", "contempt", "--emotion"]),
    ("empty emotion text", ["--emotion", " "], 2, ["--emotion", "empty"]),
    ("intensity above 2", ["--intensity", "3"], 2, ["--intensity", "between 0 and 2"]),
    ("schedule syntax", ["--emotion-schedule", "0: happy; soon: sad"], 2, ["--emotion-schedule", "line 1"]),
    ("schedule going back in time", ["--emotion-schedule", "2: happy; 1: sad"], 2, ["--emotion-schedule", "after"]),
    ("fps zero", ["--fps", "0"], 2, ["--fps"]),
    ("size not a multiple of 64", ["--size", "100"], 2, ["--size", "multiple of 64"]),
    ("overlap as long as a clip", ["--overlap", "8"], 2, ["--overlap", "smaller than the clip length"]),
    ("negative seed", ["--seed", "-1"], 2, ["--seed"]),
    ("negative face index", ["--face-index", "-1"], 2, ["--face-index"]),
    ("face index past the faces", ["--image", "{in}/astronaut.png", "--face-index", "3"], 2, ["--face-index", "1 face"]),
    ("device missing", ["--device", _no_cuda_device()], 2, ["--device", "not available", "--device cpu"]),
    ("device misspelt", ["--device", "gpu"], 2, ["--device", "'gpu'"]),
    ("image is a URL", ["--image", "https://example.com/face.jpg"], 2, ["--image", "https://example.com/face.jpg", "download"]),
    ("audio is a URL", ["--audio", "http://example.com/speech.wav"], 2, ["--audio", "download"]),
    ("image missing", ["--image", "{in}/nobody.png"], 2, ["--image", "not found", "nobody.png"]),
    ("image is a folder", ["--image", "{in}"], 2, ["--image", "folder"]),
    ("image is not a picture", ["--image", "{in}/notes.png"], 2, ["--image", "decode"]),
    ("audio missing", ["--audio", "{in}/nothing.wav"], 2, ["--audio", "not found"]),
    ("audio is not a recording", ["--audio", "{in}/notes.wav"], 2, ["--audio", "decode"]),
    ("audio too short", ["--audio", "{in}/blip.wav"], 2, ["--audio", "at least"]),
    ("no face in the picture", ["--image", "{in}/coffee.jpg"], 2, ["no face", "--image", "--no-face center"]),
    ("out is an existing folder", ["--out", "{out}"], 2, ["--out", "folder", "video.mp4"]),
    ("out below a file", ["--out", "{in}/a_file/video.mp4"], 2, ["--out", "is a file"]),
    ("out is not an mp4", ["--out", "{out}/video.txt"], 2, ["--out", ".mp4"]),
    ("separate vocals with the demo", ["--separate-vocals"], 2, ["--separate-vocals", "demo"]),
]


def _fill(options: list[str], inputs: Path, out_folder: Path) -> list[str]:
    return [option.replace("{in}", str(inputs)).replace("{out}", str(out_folder)) for option in options]


@pytest.fixture
def no_model_loading(monkeypatch):
    """Any model load fails the test: every case must be refused before one."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    import emocast_core.demo.bundle
    import emocast_core.loading
    import emocast_core.model_files

    monkeypatch.setattr(emocast_core.demo.bundle, "load_demo_models", refuse)
    monkeypatch.setattr(emocast_core.loading, "load_models", refuse)
    monkeypatch.setattr(emocast_core.loading, "load_face_analyzer", refuse)
    monkeypatch.setattr(emocast_core.model_files, "resolve_model_paths", refuse)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An empty output folder and an empty working folder."""
    out_folder, work = tmp_path / "out", tmp_path / "work"
    out_folder.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    return out_folder, work


@pytest.mark.parametrize("options, exit_code, words", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_refused_early_in_one_line(options, exit_code, words, inputs, folders, no_model_loading, capsys):
    out_folder, work = folders
    argv = ["generate", "--demo", "--out", str(out_folder / "video.mp4"), *_fill(options, inputs, out_folder)]
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == exit_code, captured.err
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    assert "Traceback" not in captured.err and "on_no_face" not in captured.err
    assert list(out_folder.iterdir()) == [] and list(work.iterdir()) == []


def test_unwritable_output_folder_is_refused_before_loading(folders, no_model_loading, capsys, monkeypatch):
    import emocast_core.validation

    out_folder, _ = folders
    locked = out_folder / "locked"
    locked.mkdir()
    # Permissions are simulated: the tests may run as root, who can write anywhere.
    real_access = os.access
    monkeypatch.setattr(emocast_core.validation.os, "access",
                        lambda path, mode: False if Path(path) == locked and mode & os.W_OK else real_access(path, mode))
    code = cli.main(["generate", "--demo", "--out", str(locked / "new" / "video.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [f"error: --out: no permission to write in {locked}; "
                                                      "choose an output folder you can write to"]
    assert list(locked.iterdir()) == []


def test_cuda_on_a_cpu_only_torch_is_refused_by_name(folders, no_model_loading, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out_folder, _ = folders
    assert cli.main(["generate", "--demo", "--out", str(out_folder / "v.mp4"), "--device", "cuda"]) == 2
    assert "--device: cuda is not available" in capsys.readouterr().err


def test_a_failed_run_exits_1_in_one_line(folders, monkeypatch, capsys):
    import emocast_core.demo.bundle

    def broken(*args, **kwargs):
        raise RuntimeError("the accelerator fell over\nsecond line of detail")

    monkeypatch.setattr(emocast_core.demo.bundle, "load_demo_models", broken)
    out_folder, work = folders
    assert cli.main(["generate", "--demo", "--out", str(out_folder / "v.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: the accelerator fell over (run with --debug for the details)"]
    assert list(out_folder.iterdir()) == [] and list(work.iterdir()) == []


def _cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emocast_core", *args], cwd=cwd or REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_traceback_only_with_debug(tmp_path):
    args = ["generate", "--demo", "--out", str(tmp_path / "v.mp4"), "--steps", "0"]
    quiet = _cli(*args)
    assert quiet.returncode == 2 and quiet.stderr.strip().splitlines() == [
        "error: --steps must be between 1 and 1000, got 0; 40 is upstream's, 20 with dpmpp_2m/unipc"]
    for debug in (_cli(*args, "--debug"), _cli(*args, env={"EMOCAST_DEBUG": "1"}), _cli("--debug", *args)):
        assert debug.returncode == 2 and "Traceback" in debug.stderr and "InputError" in debug.stderr
    assert list(tmp_path.iterdir()) == []


# --- the same checks in the Python API ---------------------------------------------------------


def test_the_python_api_applies_the_same_checks(inputs, tmp_path, no_model_loading):
    from emocast_core.demo.bundle import DemoBundle
    from emocast_core.generate import GenerateRequest, generate_video, make_video
    from emocast_core.pipeline import GenerationConfig
    from emocast_core.validation import InputError

    def request(**changes):
        fields = dict(image=inputs / "astronaut.png", audio=inputs / "tone.wav", out=tmp_path / "v.mp4", size=64,
                      generation=GenerationConfig(num_inference_steps=1, clip_length=8))
        return GenerateRequest(**{**fields, **changes})

    with pytest.raises(InputError, match=r"^preset 'furious' is not a preset; choose one of neutral, happy") as refused:
        make_video(request(preset="furious"), demo=DemoBundle())
    assert refused.value.field == "preset"
    with pytest.raises(InputError, match="on_no_face='center'") as refused:
        make_video(request(image=inputs / "coffee.jpg"), demo=DemoBundle())
    assert refused.value.field == "image" and "--no-face" not in str(refused.value)
    with pytest.raises(InputError, match="device"):
        make_video(request(), demo=DemoBundle(), device="gpu")
    with pytest.raises(InputError, match="URL"):
        make_video(request(audio="https://example.com/a.wav"), demo=DemoBundle())
    # generate_video, for callers that load the models themselves, checks before using them.
    with pytest.raises(InputError, match=r"^emotion_schedule: line 1"):
        generate_video(None, request(emotion_schedule="0: happy; soon: sad"))
    assert list(tmp_path.iterdir()) == []


# --- interrupts --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signal_number, exit_code, line", [
    (signal.SIGINT, 130, "interrupted (Ctrl-C); nothing was written"),
    (signal.SIGTERM, 143, "terminated (SIGTERM); nothing was written"),
])
def test_interrupt_during_generation_leaves_nothing(signal_number, exit_code, line, tmp_path):
    out_folder, work = tmp_path / "out", tmp_path / "work"
    out_folder.mkdir()
    work.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "emocast_core", "generate", "--demo", "--steps", "4", "--out", str(out_folder / "v.mp4")],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    stderr = bytearray()
    third_clip = threading.Event()

    def read_stderr() -> None:
        while chunk := process.stderr.read1(4096):
            stderr.extend(chunk)
            if b"clip 3/" in stderr:  # two clips are in the video writer's partial file by now
                third_clip.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert third_clip.wait(timeout=600), bytes(stderr).decode(errors="replace")
        assert any(out_folder.iterdir()), "the partial file should exist while the video is written"
        process.send_signal(signal_number)
        # The promise is a prompt exit (about 5 s); this bound only keeps a hung run from hanging the suite.
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    text = bytes(stderr).decode(errors="replace")
    assert code == exit_code, text
    assert text.replace("\r", "\n").strip().splitlines()[-1] == line
    assert "Traceback" not in text
    assert list(out_folder.iterdir()) == [] and list(work.iterdir()) == []


# --- quiet by default --------------------------------------------------------------------------


def test_library_chatter_is_hidden_only_inside_the_command_and_restored_after():
    import warnings

    from transformers.utils import logging as transformers_logging

    from emocast_core.quiet import library_output

    before = transformers_logging.get_verbosity()
    shown = []
    with library_output(verbose=False, stream=_Lines(shown)):
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled()
        warnings.warn_explicit("a library's warning", UserWarning, "/elsewhere/library.py", 1)
        warnings.warn_explicit("our own warning\nwith detail", UserWarning, cli.__file__, 1)
    assert transformers_logging.get_verbosity() == before and transformers_logging.is_progress_bar_enabled()
    assert shown == ["warning: our own warning"]
    shown.clear()
    with library_output(verbose=True, stream=_Lines(shown)):
        warnings.warn_explicit("a library's warning", UserWarning, "/elsewhere/library.py", 2)
    assert shown == ["warning: a library's warning"]


class _Lines:
    """A text stream that keeps the lines written to it."""

    def __init__(self, lines: list):
        self.lines = lines

    def write(self, text: str) -> None:
        self.lines.extend(line for line in text.splitlines() if line)

    def flush(self) -> None:
        pass
