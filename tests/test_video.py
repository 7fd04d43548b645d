"""MP4 writing: frame count, rate, size, colour, audio length and atomic output."""
from __future__ import annotations

import gc
import json

import av
import numpy as np
import pytest
import torch

from emocast_core.interrupts import Terminated
from emocast_core.video import (
    VideoWriter,
    frames_to_uint8,
    probe_video,
    read_video_frames,
    write_video,
    write_wav,
)

FAST = {"preset": "ultrafast", "crf": 18}
AAC_FRAME_S = 1024 / 16000  # one AAC frame at the smallest rate used here


def _flat_frames(num_frames: int, height: int, width: int, rgb=(200, 120, 40)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (num_frames, height, width, 3)).copy()


def _sine(seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def _decode_audio(path) -> tuple[np.ndarray, int]:
    """Mono float samples of the first audio stream (priming removed by the decoder, tail padding kept)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(frame.samples, -1).mean(axis=1) if frame.format.is_packed
                  else frame.to_ndarray().mean(axis=0) for frame in container.decode(stream)]  # fmt: skip
        return np.concatenate(chunks), stream.sample_rate


def test_frame_count_fps_size_and_codec_without_audio(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _flat_frames(12, 48, 64), fps=25, **FAST)
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height) == (12, 64, 48)
    assert info.fps == pytest.approx(25.0)
    assert info.duration_s == pytest.approx(12 / 25)
    assert info.video_codec == "h264"
    assert not info.has_audio and info.audio_codec is None and info.audio_duration_s is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_pixel_format_is_yuv420p_and_moov_atom_first(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _flat_frames(4, 32, 32), fps=25, **FAST)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart


def test_fractional_fps_is_kept(tmp_path):
    info = probe_video(write_video(tmp_path / "ntsc.mp4", _flat_frames(6, 32, 32), fps=30000 / 1001, **FAST))
    assert info.fps == pytest.approx(29.97, abs=1e-3)
    assert info.num_frames == 6


def test_audio_is_aac_and_exactly_as_long_as_the_frames(tmp_path):
    num_frames, fps, sample_rate = 20, 25, 16000
    audio = (_sine(num_frames / fps, sample_rate), sample_rate)
    info = probe_video(write_video(tmp_path / "talk.mp4", _flat_frames(num_frames, 32, 32), fps, audio=audio, **FAST))
    assert info.has_audio and info.audio_codec == "aac"
    assert info.audio_sample_rate == sample_rate
    assert info.audio_duration_s == pytest.approx(num_frames / fps, abs=AAC_FRAME_S)


def test_longer_audio_is_trimmed_to_the_video(tmp_path):
    audio = (_sine(3.0, 16000), 16000)
    info = probe_video(write_video(tmp_path / "trim.mp4", _flat_frames(10, 32, 32), 25, audio=audio, **FAST))
    assert info.audio_duration_s == pytest.approx(0.4, abs=AAC_FRAME_S)


def test_shorter_audio_is_padded_with_silence(tmp_path):
    sample_rate = 16000
    audio = (_sine(0.25, sample_rate), sample_rate)
    path = write_video(tmp_path / "pad.mp4", _flat_frames(25, 32, 32), 25, audio=audio, **FAST)
    info = probe_video(path)
    assert info.audio_duration_s == pytest.approx(1.0, abs=AAC_FRAME_S)
    samples, decoded_rate = _decode_audio(path)
    spoken = samples[int(0.05 * decoded_rate) : int(0.2 * decoded_rate)]
    padding = samples[int(0.4 * decoded_rate) : int(0.9 * decoded_rate)]
    assert np.abs(spoken).max() > 0.3
    assert np.abs(padding).max() < 0.01


def test_stereo_comfyui_dict_audio_and_non_aac_rate(tmp_path):
    # ComfyUI AUDIO: {"waveform": (B, C, S), "sample_rate"}; 22000 Hz is not an AAC rate, so it is resampled.
    waveform = torch.from_numpy(np.stack([_sine(0.5, 22000), _sine(0.5, 22000, 0.2)]))[None]
    audio = {"waveform": waveform, "sample_rate": 22000}
    info = probe_video(write_video(tmp_path / "stereo.mp4", _flat_frames(10, 32, 32), 25, audio=audio, **FAST))
    assert info.audio_sample_rate == 48000
    assert info.audio_duration_s == pytest.approx(0.4, abs=1024 / 48000)


def test_flat_colour_decodes_close_to_the_input(tmp_path):
    colours = [(200, 120, 40), (255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)]
    frames = np.concatenate([_flat_frames(1, 48, 64, c) for c in colours])
    decoded = read_video_frames(write_video(tmp_path / "colour.mp4", frames, 25, **FAST))
    assert decoded.shape == (5, 48, 64, 3)
    error = np.abs(decoded.astype(int) - frames.astype(int))
    assert error.max() <= 4, error.reshape(5, -1).max(axis=1)


def test_uint8_float_and_torch_inputs_give_the_same_video(tmp_path):
    rng = np.random.default_rng(0)
    frames_uint8 = rng.integers(0, 256, size=(3, 32, 48, 3), dtype=np.uint8)
    frames_float = frames_uint8.astype(np.float32) / 255.0
    np.testing.assert_array_equal(frames_to_uint8(frames_float), frames_uint8)
    np.testing.assert_array_equal(frames_to_uint8(torch.from_numpy(frames_float)), frames_uint8)
    decoded = [
        read_video_frames(write_video(tmp_path / f"{name}.mp4", frames, 25, **FAST))
        for name, frames in (("u8", frames_uint8), ("f32", frames_float), ("torch", torch.from_numpy(frames_float)))
    ]
    np.testing.assert_array_equal(decoded[0], decoded[1])
    np.testing.assert_array_equal(decoded[0], decoded[2])


def test_float_values_outside_0_1_are_clamped():
    frames = np.array([[[[-0.5, 0.5, 1.7]]]], dtype=np.float32)
    np.testing.assert_array_equal(frames_to_uint8(frames), [[[[0, 128, 255]]]])


def test_odd_size_is_padded_to_even_by_default(tmp_path):
    frames = _flat_frames(3, 47, 65, (10, 200, 90))
    path = write_video(tmp_path / "odd.mp4", frames, 25, **FAST)
    info = probe_video(path)
    assert (info.width, info.height) == (66, 48)
    # The padding repeats the edge, so the extra row and column keep the frame's colour.
    assert np.abs(read_video_frames(path)[0, -1, -1].astype(int) - [10, 200, 90]).max() <= 4


def test_odd_size_error_mode_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", _flat_frames(2, 47, 64), 25, odd_size="error", **FAST)
    assert list(tmp_path.iterdir()) == []


def test_streaming_writes_append_and_final_name_appears_only_on_close(tmp_path):
    final_path = tmp_path / "stream.mp4"
    with VideoWriter(final_path, 25, audio=(_sine(2.0, 16000), 16000), **FAST) as writer:
        for _ in range(3):
            writer.write(torch.rand(4, 32, 32, 3))
            assert not final_path.exists()
        writer.write(np.zeros((32, 32, 3), dtype=np.uint8))  # a single (H, W, 3) frame
        assert writer.num_frames == 13
        assert writer._process_holder[0].poll() is None  # frames went to a live ffmpeg, not a buffer
    info = probe_video(final_path)
    assert info.num_frames == 13
    assert info.audio_duration_s == pytest.approx(13 / 25, abs=AAC_FRAME_S)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.mp4"]


def test_frame_size_change_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="frame size changed"):
        with VideoWriter(tmp_path / "x.mp4", 25, **FAST) as writer:
            writer.write(_flat_frames(2, 32, 32))
            writer.write(_flat_frames(2, 32, 48))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_audio", [False, True])
@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, Terminated, RuntimeError])
def test_exception_inside_with_leaves_neither_final_nor_temp_file(tmp_path, with_audio, stop):
    final_path = tmp_path / "broken.mp4"
    audio = (_sine(1.0, 16000), 16000) if with_audio else None
    with pytest.raises(stop):
        with VideoWriter(final_path, 25, audio=audio, **FAST) as writer:
            writer.write(_flat_frames(5, 32, 32))
            raise stop  # e.g. the user cancels generation, or SIGTERM arrives
    assert list(tmp_path.iterdir()) == []
    assert writer._process_holder[0].poll() is not None  # ffmpeg is not left running


def test_a_writer_dropped_without_close_cleans_up(tmp_path):
    writer = VideoWriter(tmp_path / "dropped.mp4", 25, audio=(_sine(1.0, 16000), 16000), **FAST)
    writer.write(_flat_frames(5, 32, 32))
    process = writer._process_holder[0]
    del writer
    gc.collect()
    assert process.poll() is not None
    assert list(tmp_path.iterdir()) == []


def test_abort_keeps_an_existing_file_under_the_final_name(tmp_path):
    final_path = tmp_path / "previous.mp4"
    final_path.write_bytes(b"previous result")
    writer = VideoWriter(final_path, 25, **FAST)
    writer.write(_flat_frames(5, 32, 32))
    writer.abort()
    assert final_path.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["previous.mp4"]
    with pytest.raises(RuntimeError):
        writer.write(_flat_frames(1, 32, 32))


def test_successful_close_replaces_an_existing_file(tmp_path):
    final_path = tmp_path / "clip.mp4"
    final_path.write_bytes(b"old")
    write_video(final_path, _flat_frames(3, 32, 32), 25, **FAST)
    assert probe_video(final_path).num_frames == 3


def test_closing_without_frames_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "empty.mp4", 25, **FAST):
            pass
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_fail_early(tmp_path):
    with pytest.raises(ValueError, match="mono or stereo"):
        VideoWriter(tmp_path / "a.mp4", 25, audio=(np.zeros((6, 100)), 16000))
    with pytest.raises(FileNotFoundError):
        VideoWriter(tmp_path / "missing_dir" / "a.mp4", 25)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        frames_to_uint8(np.zeros((2, 8, 8, 4), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_is_reported_with_its_log_and_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="ffmpeg") as error_info:
        write_video(tmp_path / "bad.mp4", _flat_frames(40, 64, 64), 25, preset="no-such-preset")
    assert "preset" in str(error_info.value).lower()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_audio_from_a_file_is_trimmed_or_padded_to_the_video(tmp_path, seconds):
    """A sound file given by path is read by ffmpeg when muxing (never held in memory) and ends with the video."""
    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    source = tmp_path / "speech.wav"
    write_wav(source, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None], rate)
    frames = np.zeros((25, 32, 32, 3), dtype=np.uint8)  # 1 s at 25 fps
    with VideoWriter(tmp_path / "out.mp4", 25, audio=source, **FAST) as writer:
        writer.write(frames)
    info = probe_video(tmp_path / "out.mp4")
    assert info.num_frames == 25 and info.has_audio and info.audio_codec == "aac"
    assert info.audio_duration_s == pytest.approx(1.0, abs=0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "speech.wav"]


def test_a_missing_audio_file_is_refused_before_encoding(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio file does not exist"):
        VideoWriter(tmp_path / "out.mp4", 25, audio=tmp_path / "nope.wav")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("with_audio", [False, True])
def test_metadata_tags_are_written_for_comfyui(tmp_path, with_audio):
    """Custom tags (ComfyUI's prompt and workflow JSON) survive into the MP4, special characters and size
    included, with and without a sound track, and their temporary file is removed."""
    workflow = json.dumps({"nodes": [{"id": i, "title": "a=b; #c \\ d\nnext"} for i in range(3000)]})  # > 128 KiB
    tags = {"prompt": json.dumps({"1": {"class_type": "LoadImage"}}), "workflow": workflow}
    audio = (np.zeros((1, 16000), dtype=np.float32), 16000) if with_audio else None
    with VideoWriter(tmp_path / "out.mp4", 25, audio=audio, metadata=tags, **FAST) as writer:
        writer.write(np.zeros((5, 32, 32, 3), dtype=np.uint8))
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert container.metadata["prompt"] == tags["prompt"]
        assert json.loads(container.metadata["workflow"]) == json.loads(workflow)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
