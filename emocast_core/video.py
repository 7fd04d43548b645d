"""MP4 writing (H.264 + AAC) through the ffmpeg binary, and MP4 probing through PyAV.

`VideoWriter` streams frames into ffmpeg as they arrive, so a long generation never holds the whole
video in memory. The output appears under its final name only when the writer closes successfully:
until then ffmpeg writes to a hidden ``.<name>.<token>.partial.mp4`` beside it, and any exception
(``KeyboardInterrupt`` and ``SystemExit`` included) or ``abort()`` kills ffmpeg and removes every
temporary file.

With audio, frames are first encoded to a video-only temporary file and the audio is muxed in on
close, because only then is the frame count known: the audio track is trimmed, or padded with
silence, to exactly ``num_frames / fps`` seconds.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import wave
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]
# A waveform with its sample rate: ``(waveform, sample_rate)`` or ComfyUI's AUDIO dict
# ``{"waveform": (B, C, S), "sample_rate": int}``; or the path of a sound file, read by ffmpeg when muxing.
AudioInput = Union[tuple[ArrayLike, int], Mapping[str, Any], str, os.PathLike]

# Sample rates the AAC encoder accepts; anything else is resampled to 48 kHz by ffmpeg.
AAC_SAMPLE_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
AAC_FALLBACK_SAMPLE_RATE = 48000
# Frames converted to uint8 per pipe write; bounds the extra memory of converting a large float batch.
CONVERT_CHUNK_FRAMES = 16


def get_ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with ``imageio-ffmpeg`` (or the one it is configured to use)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def frames_to_uint8(frames: ArrayLike) -> np.ndarray:
    """Convert ``(T, H, W, 3)`` or ``(H, W, 3)`` frames, float in 0..1 or uint8, to a uint8 ``(T, H, W, 3)`` array.

    Float values are clamped to 0..1 and rounded, so ``x / 255`` converts back to exactly ``x``.
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach()
        if frames.dtype != torch.uint8:
            # Convert on the tensor's own device and dtype handling, then move only uint8 bytes to the CPU.
            frames = frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        array = frames.cpu().numpy()
    else:
        array = np.asarray(frames)
        if array.dtype != np.uint8:
            if not np.issubdtype(array.dtype, np.floating):
                raise TypeError(f"frames must be float (0..1) or uint8, got dtype {array.dtype}")
            array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3) or (H, W, 3), got {tuple(array.shape)}")
    return np.ascontiguousarray(array)


def _audio_to_channels_first(audio: AudioInput) -> tuple[np.ndarray, int]:
    """Return ``(waveform (C, S) float32, sample_rate)`` for mono or stereo audio in the accepted forms."""
    if isinstance(audio, Mapping):
        waveform, sample_rate = audio["waveform"], audio["sample_rate"]
    else:
        waveform, sample_rate = audio
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().float().numpy()
    waveform = np.asarray(waveform)
    if np.issubdtype(waveform.dtype, np.integer):
        waveform = waveform.astype(np.float32) / float(np.iinfo(waveform.dtype).max)
    waveform = waveform.astype(np.float32, copy=False)
    if waveform.ndim == 3:  # ComfyUI batch (B, C, S): a video has one audio track, so take the first item.
        waveform = waveform[0]
    if waveform.ndim == 1:
        waveform = waveform[None]
    elif waveform.ndim == 2 and waveform.shape[0] not in (1, 2) and waveform.shape[1] in (1, 2):
        waveform = waveform.T  # (S, C) layout
    if waveform.ndim != 2 or waveform.shape[0] not in (1, 2):
        raise ValueError(f"audio must be mono or stereo: (S,), (C, S), (S, C) or (1, C, S); got {waveform.shape}")
    sample_rate = int(sample_rate)
    if sample_rate <= 0:
        raise ValueError(f"audio sample rate must be positive, got {sample_rate}")
    return waveform, sample_rate


def fit_audio_length(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim a ``(C, S)`` waveform to ``num_samples``, or pad it with silence up to that length."""
    if waveform.shape[1] >= num_samples:
        return waveform[:, :num_samples]
    padding = np.zeros((waveform.shape[0], num_samples - waveform.shape[1]), dtype=waveform.dtype)
    return np.concatenate([waveform, padding], axis=1)


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sample_rate: int) -> None:
    """Write a ``(C, S)`` float waveform in -1..1 as 16-bit PCM WAV."""
    pcm = np.rint(np.clip(waveform, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as wav_file:
        wav_file.setnchannels(pcm.shape[0])
        wav_file.setsampwidth(2)
        wav_file.setframerate(sample_rate)
        wav_file.writeframes(np.ascontiguousarray(pcm.T).tobytes())


def _fps_to_fraction(fps: float | Fraction) -> Fraction:
    fraction = Fraction(fps).limit_denominator(1001)
    if fraction <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return fraction


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _kill_and_clean(process_holder: list[subprocess.Popen], log_holder: list, temp_paths: list[Path]) -> None:
    """Stop ffmpeg, close its log and delete the temporary files (also runs for a writer dropped unclosed)."""
    for process in process_holder:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdin is not None and not process.stdin.closed:
            try:
                process.stdin.close()
            except OSError:
                pass  # the pipe is already broken; nothing left to flush
    for log_file in log_holder:
        log_file.close()
    _remove_files(temp_paths)


class VideoWriter:
    """Stream frames into an H.264 MP4 (yuv420p, ``+faststart``), optionally muxing AAC audio.

    Use as a context manager::

        with VideoWriter("out.mp4", fps=25, audio=(waveform, 16000)) as writer:
            for window in windows:
                writer.write(window)  # (T, H, W, 3) float 0..1 or uint8, numpy or torch

    Args:
        path: final ``.mp4`` path; its folder must exist. An existing file there is replaced on success.
        fps: frame rate (float, e.g. 25 or 29.97).
        audio: driving audio as ``(waveform, sample_rate)`` (mono/stereo, float in -1..1; ``(S,)``, ``(C, S)``
            or ``(S, C)``), a ComfyUI AUDIO dict, or the path of a sound file (or a video's sound track),
            which ffmpeg reads itself when muxing, so a long track is never held in memory. It is trimmed or
            padded with silence to the video length.
        crf: x264 constant rate factor (lower is better quality; 17-23 is typical).
        preset: x264 preset (``ultrafast`` ... ``veryslow``).
        odd_size: ``"pad"`` repeats the last row/column to reach the even size yuv420p needs;
            ``"error"`` raises instead.
        audio_bitrate: AAC bitrate for ffmpeg, e.g. ``"192k"``.
        metadata: container tags written into the MP4 (e.g. ComfyUI's ``prompt`` and ``workflow`` as JSON,
            as its own SaveVideo does, so that dropping the file on ComfyUI restores the graph).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        *,
        audio: AudioInput | None = None,
        crf: int = 19,
        preset: str = "medium",
        odd_size: Literal["pad", "error"] = "pad",
        audio_bitrate: str = "192k",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        if odd_size not in ("pad", "error"):
            raise ValueError(f"odd_size must be 'pad' or 'error', got {odd_size!r}")
        self.path = Path(path)
        self.fps = _fps_to_fraction(fps)
        self.crf = int(crf)
        self.preset = preset
        self.odd_size = odd_size
        self.audio_bitrate = audio_bitrate
        self.metadata = {str(key): str(value) for key, value in (metadata or {}).items()}
        # Validate the audio now so that a bad input fails before any encoding work.
        self._audio_file: Path | None = None
        self._audio: tuple[np.ndarray, int] | None = None
        if isinstance(audio, (str, os.PathLike)):
            self._audio_file = Path(audio)
            if not self._audio_file.is_file():
                raise FileNotFoundError(f"audio file does not exist: {self._audio_file}")
        elif audio is not None:
            self._audio = _audio_to_channels_first(audio)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"output folder does not exist: {self.path.parent}")

        token = secrets.token_hex(4)
        hidden_stem = f".{self.path.stem}.{token}"
        # The partial file keeps the .mp4 suffix so ffmpeg picks the MP4 muxer from the name.
        self.partial_path = self.path.with_name(f"{hidden_stem}.partial.mp4")
        self._video_only_path = self.path.with_name(f"{hidden_stem}.video.partial.mp4")
        self._wav_path = self.path.with_name(f"{hidden_stem}.audio.partial.wav")
        self._metadata_path = self.path.with_name(f"{hidden_stem}.metadata.partial.txt")
        self._temp_paths = [self.partial_path, self._video_only_path, self._wav_path, self._metadata_path]

        self.num_frames = 0
        self.frame_size: tuple[int, int] | None = None  # (height, width) of the input frames
        self._process_holder: list[subprocess.Popen] = []
        self._log_holder: list = []  # ffmpeg's stderr file, kept in a list the finalizer can close
        self._state: Literal["open", "closed", "aborted"] = "open"
        self._finalizer = weakref.finalize(
            self, _kill_and_clean, self._process_holder, self._log_holder, list(self._temp_paths)
        )

    # Context manager -------------------------------------------------------------------------------

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    # Public API ------------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Duration of the frames written so far, in seconds."""
        return float(self.num_frames / self.fps)

    def write(self, frames: ArrayLike) -> None:
        """Append a batch ``(T, H, W, 3)`` (or one ``(H, W, 3)`` frame), float 0..1 or uint8."""
        if self._state != "open":
            raise RuntimeError(f"cannot write to a VideoWriter that is {self._state}")
        if not isinstance(frames, (np.ndarray, torch.Tensor)):
            frames = np.asarray(frames)
        total = frames.shape[0] if frames.ndim == 4 else 1
        for start in range(0, total, CONVERT_CHUNK_FRAMES):
            chunk = frames[start : start + CONVERT_CHUNK_FRAMES] if frames.ndim == 4 else frames
            self._write_uint8(frames_to_uint8(chunk))

    def close(self) -> Path:
        """Finish encoding, mux the audio and move the file to its final name. Returns the final path."""
        if self._state == "closed":
            return self.path
        if self._state == "aborted":
            raise RuntimeError("cannot close a VideoWriter that was aborted")
        try:
            if self.num_frames == 0:
                raise ValueError(f"no frames were written to {self.path}")
            self._finish_video_process()
            if self._has_audio:
                self._mux_audio()
            os.replace(self.partial_path, self.path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and delete every temporary file; the final path is left untouched."""
        if self._state == "closed":
            return
        self._state = "aborted"
        self._cleanup()

    # Internals -------------------------------------------------------------------------------------

    def _cleanup(self) -> None:
        self._finalizer()  # kills a running ffmpeg, closes its log and removes temporary files, once

    def _write_uint8(self, frames_uint8: np.ndarray) -> None:
        height, width = frames_uint8.shape[1:3]
        if self.frame_size is None:
            self.frame_size = (height, width)
            self._start_video_process(height, width)
        elif self.frame_size != (height, width):
            raise ValueError(f"frame size changed from {self.frame_size} to {(height, width)} (H, W)")
        frames_uint8 = self._make_even(frames_uint8)
        process = self._process_holder[0]
        try:
            process.stdin.write(memoryview(frames_uint8).cast("B"))
        except (BrokenPipeError, OSError) as error:
            try:
                process.wait(timeout=10)  # let ffmpeg finish writing the log that explains why it stopped
            except subprocess.TimeoutExpired:
                pass
            raise RuntimeError(f"ffmpeg stopped while receiving frames: {self._ffmpeg_log()}") from error
        self.num_frames += frames_uint8.shape[0]

    def _make_even(self, frames_uint8: np.ndarray) -> np.ndarray:
        height, width = frames_uint8.shape[1:3]
        pad_h, pad_w = height % 2, width % 2
        if not (pad_h or pad_w):
            return frames_uint8
        if self.odd_size == "error":
            raise ValueError(f"H.264 yuv420p needs even frame sizes, got {width}x{height} (odd_size='error')")
        return np.ascontiguousarray(np.pad(frames_uint8, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge"))

    def _start_video_process(self, height: int, width: int) -> None:
        even_height, even_width = height + height % 2, width + width % 2
        output_path = self._video_only_path if self._has_audio else self.partial_path
        # The tags go into the file this command writes only when no audio is muxed in afterwards.
        tags = [] if self._has_audio else self._metadata_arguments(input_index=1)
        command = [
            get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{even_width}x{even_height}",
            "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0", *tags[:4],
            "-map", "0:v:0", *tags[4:],
            "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
            # Convert with the BT.709 matrix and tag it, so players that assume BT.709 show true colours.
            "-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv420p",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            "-movflags", self._movflags, str(output_path),
        ]  # fmt: skip
        # stderr goes to a file, not a pipe: an undrained pipe could fill up and stall ffmpeg.
        log_file = tempfile.TemporaryFile()
        self._log_holder.append(log_file)
        # Its own session: a Ctrl-C in the terminal reaches Python alone, which then stops ffmpeg itself
        # and removes the partial files, instead of ffmpeg quitting first and the pipe failing mid-frame.
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log_file,
                                   start_new_session=True)
        self._process_holder.append(process)

    def _finish_video_process(self) -> None:
        process = self._process_holder[0]
        try:
            process.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the return code below reports the failure
        return_code = process.wait()
        if return_code != 0:
            raise RuntimeError(f"ffmpeg failed with exit code {return_code}: {self._ffmpeg_log()}")

    @property
    def _movflags(self) -> str:
        # use_metadata_tags keeps custom keys (prompt, workflow) that the MP4 muxer would otherwise drop.
        return "+faststart+use_metadata_tags" if self.metadata else "+faststart"

    def _metadata_arguments(self, input_index: int) -> list[str]:
        """``-f ffmetadata -i FILE -map_metadata N`` for the tags, or nothing. The tags travel in a file, not
        on the command line, whose single arguments are limited to 128 KiB (a workflow can be larger)."""
        if not self.metadata:
            return []
        lines = [";FFMETADATA1"] + [f"{_ffmetadata_escape(k)}={_ffmetadata_escape(v)}" for k, v in self.metadata.items()]
        self._metadata_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return ["-f", "ffmetadata", "-i", str(self._metadata_path), "-map_metadata", str(input_index)]

    @property
    def _has_audio(self) -> bool:
        return self._audio is not None or self._audio_file is not None

    def _mux_audio(self) -> None:
        if self._audio_file is not None:
            # ffmpeg reads the file, pads it with silence (apad) and cuts it at the video's length (-t).
            audio_input = ["-i", str(self._audio_file)]
            fit_length = ["-af", "apad", "-t", f"{float(self.num_frames / self.fps):.6f}"]
            output_rate = AAC_FALLBACK_SAMPLE_RATE
        else:
            waveform, sample_rate = self._audio
            num_samples = round(self.num_frames * sample_rate / self.fps)
            write_wav(self._wav_path, fit_audio_length(waveform, num_samples), sample_rate)
            audio_input, fit_length = ["-i", str(self._wav_path)], []
            output_rate = sample_rate if sample_rate in AAC_SAMPLE_RATES else AAC_FALLBACK_SAMPLE_RATE
        tags = self._metadata_arguments(input_index=2)
        command = [
            get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin",
            "-i", str(self._video_only_path), *audio_input, *tags[:4],
            "-map", "0:v:0", "-map", "1:a:0", *tags[4:], "-c:v", "copy", *fit_length,
            "-c:a", "aac", "-b:a", self.audio_bitrate, "-ar", str(output_rate),
            "-movflags", self._movflags, str(self.partial_path),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self._process_holder.append(process)
        _, stderr = process.communicate()
        if process.returncode != 0:
            log = stderr.decode("utf-8", "replace").strip()[-2000:]
            raise RuntimeError(f"ffmpeg failed to mux the audio (exit code {process.returncode}): {log}")
        _remove_files([self._video_only_path, self._wav_path])

    def _ffmpeg_log(self) -> str:
        if not self._log_holder or self._log_holder[0].closed:
            return "(no log)"
        log_file = self._log_holder[0]
        log_file.seek(0)
        log = log_file.read().decode("utf-8", "replace").strip()
        return log[-2000:] or "(empty log)"


def _ffmetadata_escape(text: str) -> str:
    """ffmpeg's metadata file format: '=', ';', '#', '\\' and newlines are escaped with a backslash."""
    for special in ("\\", "=", ";", "#", "\n"):
        text = text.replace(special, "\\" + special)
    return text


def write_video(
    path: str | os.PathLike,
    frames: ArrayLike,
    fps: float,
    audio: AudioInput | None = None,
    **writer_options: Any,
) -> Path:
    """Write a complete ``(T, H, W, 3)`` frame tensor (and optional audio) to an MP4; returns the path.

    ``writer_options`` go to `VideoWriter` (``crf``, ``preset``, ``odd_size``, ``audio_bitrate``, ``metadata``).
    """
    with VideoWriter(path, fps, audio=audio, **writer_options) as writer:
        writer.write(frames)
    return writer.path


@dataclass(frozen=True)
class VideoInfo:
    """What `probe_video` reads from a video file. Audio fields are ``None`` when there is no audio."""

    num_frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    has_audio: bool
    audio_duration_s: float | None
    audio_sample_rate: int | None
    video_codec: str
    audio_codec: str | None


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read frame count, rate, size, durations and codecs of a video file with PyAV.

    Durations come from the container, which for MP4 honours the edit list: an AAC track reports its
    real length, without the encoder's priming and padding samples.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        video = container.streams.video[0]
        fps = float(video.average_rate or video.guessed_rate or 0)
        num_frames = video.frames
        if not num_frames:  # containers without a frame count: count packets (no decoding)
            num_frames = sum(1 for packet in container.demux(video) if packet.size)
            container.seek(0)
        if video.duration is not None:
            duration_s = float(video.duration * video.time_base)
        elif fps:
            duration_s = num_frames / fps
        else:
            duration_s = float(container.duration or 0) / av.time_base

        audio = container.streams.audio[0] if container.streams.audio else None
        audio_duration_s = None
        if audio is not None and audio.duration is not None:
            audio_duration_s = float(audio.duration * audio.time_base)
        return VideoInfo(
            num_frames=int(num_frames),
            fps=fps,
            width=video.codec_context.width,
            height=video.codec_context.height,
            duration_s=duration_s,
            has_audio=audio is not None,
            audio_duration_s=audio_duration_s,
            audio_sample_rate=audio.sample_rate if audio is not None else None,
            video_codec=video.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None else None,
        )


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video's frames as uint8 RGB ``(T, H, W, 3)`` (all of them, or the first ``max_frames``)."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if max_frames is not None and len(frames) >= max_frames:
                break
            # PyAV converts with the matrix and range the frame is tagged with (BT.709 for our files).
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return np.stack(frames)

