"""Tests of the audio conditioning front-end (decode -> 16 kHz -> wav2vec2 features -> windows)."""
from __future__ import annotations

import logging
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from audio_media import (
    dominant_frequency,
    espeak_speech,
    save_tiny_wav2vec2,
    tone,
    write_tone_file,
    write_video,
    write_wav,
)

from emocast_core.conditioning.audio import (
    AudioDecodeError,
    AudioEncoder,
    FrameGrid,
    FrameRateFeatureEncoder,
    FrameSpan,
    audio_windows,
    load_audio,
    load_audio_features,
    num_video_frames,
    padded_frame_count,
    padding_samples,
)
from emocast_core.conditioning.vocal_separation import KIM_VOCAL_2, MDXParameters, VocalSeparator

TOL = dict(rtol=1e-5, atol=1e-5)  # fixture README: ~1e-6 relative expected for an independent float32 run


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def random_wav2vec2_dir(tmp_path_factory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("wav2vec2") / "wav2vec2-tiny")


@pytest.fixture(scope="module")
def random_encoder(random_wav2vec2_dir) -> AudioEncoder:
    return AudioEncoder.from_pretrained(random_wav2vec2_dir)


@pytest.fixture(scope="module")
def oracle_encoder(oracle_dir) -> AudioEncoder:
    return AudioEncoder.from_pretrained(oracle_dir / "tiny_wav2vec2")


# ---------------------------------------------------------------------------------------------- parity
def test_audio_features_match_official_oracle(oracle_dir, oracle_encoder):
    folder = oracle_dir / "audio_features"
    inputs = _load_safetensors(folder / "inputs.safetensors")
    expected = _load_safetensors(folder / "expected.safetensors")
    clip_length = int(inputs["clip_length"])

    decoded = load_audio(folder / "input.wav")
    # librosa.load of 16 kHz PCM16 is int16 / 32768 exactly; so is ours.
    torch.testing.assert_close(torch.from_numpy(decoded.waveform), expected["waveform"], rtol=0, atol=0)
    np.testing.assert_array_equal(
        decoded.waveform, inputs["wav_pcm16"].numpy().astype(np.float32) / 32768.0)

    input_values = oracle_encoder.normalize(decoded.waveform)
    torch.testing.assert_close(torch.from_numpy(input_values), expected["input_values"], **TOL)

    num_frames = num_video_frames(decoded.num_samples)
    assert num_frames == int(expected["audio_length"])
    num_padded = padded_frame_count(num_frames, clip_length)
    padded = np.pad(input_values, (0, padding_samples(num_frames, clip_length)))
    torch.testing.assert_close(torch.from_numpy(padded), expected["input_values_padded"], **TOL)

    cnn = oracle_encoder.cnn_features(padded)
    torch.testing.assert_close(cnn, expected["cnn_features"], **TOL)
    aligned = FrameRateFeatureEncoder(oracle_encoder.wav2vec2.feature_extractor.conv_encoder)
    aligned.span = FrameSpan(FrameGrid(cnn.shape[1], num_padded), 0, num_padded)
    with torch.no_grad():
        interp = aligned(torch.from_numpy(padded)[None]).transpose(1, 2)
    torch.testing.assert_close(interp, expected["cnn_features_interp"], **TOL)

    hidden = torch.stack(oracle_encoder.hidden_states(padded, num_padded))[:, 0]
    torch.testing.assert_close(hidden, expected["hidden_states_all"], **TOL)

    features = oracle_encoder.encode(decoded, clip_length=clip_length)
    assert features.num_frames == int(expected["audio_length"])
    torch.testing.assert_close(features.features, expected["audio_emb"], **TOL)
    torch.testing.assert_close(features.windows(), expected["audio_windows"], **TOL)
    torch.testing.assert_close(audio_windows(expected["audio_emb"]), expected["audio_windows"], rtol=0, atol=0)

    unpadded = oracle_encoder.encode(decoded, clip_length=0)
    torch.testing.assert_close(unpadded.features, expected["audio_emb_nopad"], **TOL)


def test_pipeline_audio_matches_official_oracle(oracle_dir, oracle_encoder):
    folder = oracle_dir / "pipeline"
    expected = _load_safetensors(folder / "expected.safetensors")
    run_config = (folder / "tiny_inference.yaml").read_text()
    clip_length = int(re.search(r"^\s*n_sample_frames:\s*(\d+)", run_config, re.M).group(1))
    fps = int(re.search(r"^\s*fps:\s*(\d+)", run_config, re.M).group(1))

    decoded, features = load_audio_features(folder / "driving.wav", oracle_encoder, fps=fps, clip_length=clip_length)
    assert features.num_frames == int(expected["audio_length"])
    assert features.num_padded_frames % clip_length == 0
    torch.testing.assert_close(features.features, expected["audio_emb"], **TOL)
    torch.testing.assert_close(features.windows(), expected["audio_windows"], **TOL)
    assert features.num_samples == decoded.num_samples
    assert features.end_seconds == pytest.approx(decoded.num_samples / 16000)


# ---------------------------------------------------------------------------------------------- streamed features
def speech_like(seconds: float, seed: int = 0, sample_rate: int = 16000) -> np.ndarray:
    """Noise-modulated tones: a gliding voiced pitch and hiss in ~4 Hz syllables with pauses, (T,) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    pitch = 140.0 + 40.0 * np.sin(2 * np.pi * 0.3 * t)
    voiced = np.sin(2 * np.pi * np.cumsum(pitch) / sample_rate) + 0.3 * np.sin(4 * np.pi * np.cumsum(pitch) / sample_rate)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + 2.0 * np.sin(2 * np.pi * 0.7 * t)), 0, None)
    phrases = (np.sin(2 * np.pi * 0.2 * t) > -0.6).astype(np.float64)  # pauses between phrases
    hiss = 0.2 * rng.standard_normal(t.shape[0])
    return (0.4 * phrases * syllables * (voiced + hiss) + 1e-3 * rng.standard_normal(t.shape[0])).astype(np.float32)


def _oracle_audio_case(oracle_dir, case: str):
    """(wav path, clip_length, fps, expected tensors) of one official audio oracle."""
    folder = oracle_dir / case
    expected = _load_safetensors(folder / "expected.safetensors")
    if case == "audio_features":
        return folder / "input.wav", int(_load_safetensors(folder / "inputs.safetensors")["clip_length"]), 25, expected
    run_config = (folder / "tiny_inference.yaml").read_text()
    clip_length = int(re.search(r"^\s*n_sample_frames:\s*(\d+)", run_config, re.M).group(1))
    fps = int(re.search(r"^\s*fps:\s*(\d+)", run_config, re.M).group(1))
    return folder / "driving.wav", clip_length, fps, expected


@pytest.mark.parametrize("case", ["audio_features", "pipeline"])
def test_streamed_windows_match_official_oracle_clip_by_clip(oracle_dir, oracle_encoder, case):
    path, clip_length, fps, expected = _oracle_audio_case(oracle_dir, case)
    stream = oracle_encoder.stream(load_audio(path), fps=fps, clip_length=clip_length)
    total = expected["audio_windows"].shape[0]
    assert (stream.num_frames, stream.num_padded_frames, len(stream)) == (int(expected["audio_length"]), total, total)
    torch.testing.assert_close(stream.features(0, total), expected["audio_emb"], **TOL)
    for start in range(0, total, clip_length):
        torch.testing.assert_close(stream.windows(start, start + clip_length),
                                   expected["audio_windows"][start:start + clip_length], **TOL)
    # The pipeline's rule past the end: frames beyond the padded length reuse the last window.
    beyond = stream.windows(total - 2, total + 3)
    torch.testing.assert_close(beyond[:2], expected["audio_windows"][-2:], **TOL)
    torch.testing.assert_close(beyond[2:], expected["audio_windows"][-1:].expand(3, -1, -1, -1), **TOL)


@pytest.mark.parametrize("feat_extract_norm", ["group", "layer"])
def test_streamed_cnn_chunks_equal_the_whole_signal(tmp_path, feat_extract_norm):
    """40 s in one encoder segment, CNN in 256-row chunks (8 here), with the whole-signal GroupNorm
    statistics for wav2vec2-base-style models: the whole-audio features within float tolerance."""
    if feat_extract_norm == "group":
        encoder = AudioEncoder.from_pretrained(save_tiny_wav2vec2(tmp_path / "group"))
    else:  # the wav2vec2-large-lv60 style: LayerNorm per time step in every CNN layer, stable layer norm
        from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

        from emocast_research.synthetic.models import save_wav2vec2_folder

        torch.manual_seed(0)
        config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                                vocab_size=12, feat_extract_norm="layer", do_stable_layer_norm=True,
                                architectures=["Wav2Vec2ForCTC"])
        encoder = AudioEncoder.from_pretrained(save_wav2vec2_folder(Wav2Vec2ForCTC(config).eval(), tmp_path / "layer", "model.safetensors"))
    waveform = speech_like(40.0)
    whole = encoder.encode(waveform, clip_length=16)
    stream = encoder.stream(waveform, clip_length=16)
    assert (stream.conv_statistics is None) == (feat_extract_norm == "layer")
    assert stream.num_segments == 1 and stream.num_padded_frames == whole.num_padded_frames == 1008
    torch.testing.assert_close(stream.features(0, stream.num_padded_frames), whole.features, **TOL)
    torch.testing.assert_close(stream.windows(992, 1008), whole.windows(992, 1008), **TOL)


@pytest.mark.parametrize("seconds, clip_length, segments", [(60.0, 8, 1), (60.0, 16, 1), (60.1, 16, 2), (100.0, 16, 3)])
def test_up_to_a_minute_of_audio_is_encoded_in_one_piece(oracle_encoder, seconds, clip_length, segments):
    """Default segments: a minute of audio plus its last clip's padding is one encoder run (the
    whole-audio computation); longer audio gets 40 s segments."""
    stream = oracle_encoder.stream(tone(200.0, seconds, 16000)[0], clip_length=clip_length)
    assert stream.num_segments == segments


def _walk_like_the_pipeline(stream, clip_length: int, order: int = 1, keep: bool = True) -> torch.Tensor | None:
    """Every clip's windows, asked for as the pipeline asks (forward, or backward with order=-1); all
    of them concatenated in frame order when ``keep``."""
    from emocast_core.pipeline import EmoCASTPipeline, clip_starts

    clips = {}
    for start in clip_starts(stream.num_frames, clip_length, 0)[::order]:
        windows = EmoCASTPipeline._windows(stream, start, start + clip_length)
        if keep:
            clips[start] = windows
    return torch.cat([clips[start] for start in sorted(clips)]) if keep else None


def test_long_audio_segments_stay_close_to_the_whole_audio(oracle_encoder):
    """Past one segment the transformer sees +-context of audio instead of all of it (audio_stream's
    docstring). Measured on the official tiny wav2vec2 (random weights, so its attention is spread far
    more evenly than a trained model's): the error shrinks as the context grows and stays a small part
    of the features; frames far from every segment border are computed the same way in both."""
    waveform = speech_like(30.0)  # 752 frames, 8 segments of 4 s
    whole = oracle_encoder.encode(waveform, clip_length=16)
    whole_windows = whole.windows()[: whole.num_frames]
    errors = {}
    for context in (1.0, 8.0):
        stream = oracle_encoder.stream(waveform, clip_length=16, segment_seconds=4.0, context_seconds=context)
        assert stream.num_segments == 8
        streamed = _walk_like_the_pipeline(stream, 16)[: whole.num_frames]
        errors[context] = float((streamed - whole_windows).norm() / whole_windows.norm())
    # Measured: 4.1 % relative L2 with 1 s of context, 1.0 % with 8 s.
    assert errors[8.0] < 0.5 * errors[1.0]
    assert errors[8.0] < 0.02
    # Every frame belongs to one fixed segment: the order in which clips are asked for changes nothing.
    forward = _walk_like_the_pipeline(stream, 16)
    stream._segments.clear()
    torch.testing.assert_close(_walk_like_the_pipeline(stream, 16, order=-1), forward, rtol=0, atol=1e-6)


class LargestTensor(torch.overrides.TorchFunctionMode):
    """Records the element count of the largest tensor any torch function returns while active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for item in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(item, torch.Tensor):
                self.numel = max(self.numel, item.numel())
        return result


def test_streamed_features_never_build_whole_video_tensors(oracle_encoder):
    """Walking a video's clips as the pipeline does, the largest tensor made is the same for 20 s and
    80 s of audio, while the whole-audio path's largest tensor grows with the length."""
    largest = {}
    for seconds in (20.0, 80.0):
        waveform = speech_like(seconds, seed=1)
        with LargestTensor() as streamed:
            stream = oracle_encoder.stream(waveform, clip_length=16, segment_seconds=4.0, context_seconds=2.0)
            _walk_like_the_pipeline(stream, 16, keep=False)
        with LargestTensor() as whole:
            oracle_encoder.encode(waveform, clip_length=16).windows()
        largest[seconds] = streamed.numel, whole.numel
    assert largest[80.0][0] <= largest[20.0][0]
    assert largest[80.0][1] > 3 * largest[20.0][1]  # the probe sees what grows
    windows_of_80s = 2000 * 5 * 2 * 32  # (T_pad, 5, L, C) of the whole video
    assert largest[80.0][0] < windows_of_80s / 2


def test_stream_refuses_bad_audio_before_any_feature_work(random_encoder):
    with pytest.raises(AudioDecodeError, match="silent"):
        random_encoder.stream(np.zeros(16000, np.float32))
    with pytest.raises(AudioDecodeError, match="too short"):
        random_encoder.stream(tone(1000.0, 0.01, 16000)[0], clip_length=0)
    with pytest.raises(AudioDecodeError, match="no samples"):
        random_encoder.stream(np.zeros(0, np.float32))
    stream = random_encoder.stream(tone(300.0, 1.0, 16000)[0], clip_length=16)
    with pytest.raises(ValueError, match="outside"):
        stream.features(0, stream.num_padded_frames + 1)


# ---------------------------------------------------------------------------------------------- frame counts
@pytest.mark.parametrize(
    "num_samples, fps, frames",
    [(4800, 25, 8), (272000, 25, 425), (20800, 25, 33), (4320, 25, 7), (640, 25, 1), (1, 25, 1), (0, 25, 0),
     (4480, 25, 7),  # exact multiple of 640: upstream's float formula would give 8
     (16000, 30, 30), (16001, 30, 31), (16000, 30000 / 1001, 30), (48000, 29.97, 90)],
)
def test_num_video_frames_is_exact_ceil(num_samples, fps, frames):
    assert num_video_frames(num_samples, 16000, fps) == frames


def test_padding_samples():
    assert padding_samples(33, 16) == 15 * 640  # upstream: (16 - 33 % 16) * 640
    assert padding_samples(32, 16) == 0
    assert padding_samples(7, 0) == 0
    assert padding_samples(1, 4, fps=30) == round(3 * 16000 / 30)


@pytest.mark.parametrize("seconds, clip_length", [(0.3, 16), (17.0, 16), (0.3, 4)])
def test_encode_frame_counts(random_encoder, seconds, clip_length):
    waveform = tone(220.0, seconds, 16000)[0]
    features = random_encoder.encode(waveform, clip_length=clip_length)
    expected_frames = math.ceil(seconds * 25)
    assert features.num_frames == expected_frames
    assert features.num_padded_frames == -(-expected_frames // clip_length) * clip_length
    config = random_encoder.wav2vec2.config
    assert features.features.shape == (features.num_padded_frames, config.num_hidden_layers, config.hidden_size)
    assert torch.isfinite(features.features).all()
    assert features.windows().shape == (features.num_padded_frames, 5) + features.features.shape[1:]


def test_encode_other_fps(random_encoder):
    features = random_encoder.encode(tone(220.0, 1.0, 16000)[0], fps=30, clip_length=16)
    assert (features.num_frames, features.num_padded_frames) == (30, 32)


# ---------------------------------------------------------------------------------------------- windows
@pytest.mark.parametrize("radius", [0, 1, 2])
def test_audio_windows_clamp_to_padded_length(radius):
    features = torch.randn(6, 3, 4)
    windows = audio_windows(features, radius)
    assert windows.shape == (6, 2 * radius + 1, 3, 4)
    for t in range(6):
        for k in range(2 * radius + 1):
            torch.testing.assert_close(windows[t, k], features[min(max(t + k - radius, 0), 5)], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- loading
def test_loading_ctc_checkpoint_is_exact_and_quiet(random_wav2vec2_dir, caplog):
    from transformers import Wav2Vec2ForCTC

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.WARNING):
            encoder = AudioEncoder.from_pretrained(random_wav2vec2_dir)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    reference = Wav2Vec2ForCTC.from_pretrained(random_wav2vec2_dir, local_files_only=True).wav2vec2.state_dict()
    ours = {k.replace("feature_extractor.conv_encoder.", "feature_extractor."): v
            for k, v in encoder.wav2vec2.state_dict().items()}
    assert ours.keys() == reference.keys()
    for key, tensor in reference.items():
        torch.testing.assert_close(ours[key], tensor, rtol=0, atol=0, msg=key)


def test_loading_pytorch_bin_and_dtype(tmp_path, random_encoder):
    folder = save_tiny_wav2vec2(tmp_path / "bin", weight_file="pytorch_model.bin")
    encoder = AudioEncoder.from_pretrained(folder, device="cpu", dtype=torch.float64)
    waveform = tone(300.0, 0.5, 16000)[0]
    features = encoder.encode(waveform)
    assert features.features.dtype == torch.float64
    torch.testing.assert_close(features.features.float(), random_encoder.encode(waveform).features, rtol=1e-4, atol=1e-4)


def test_missing_model_files_are_all_listed(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        AudioEncoder.from_pretrained(tmp_path)
    message = str(error.value)
    for name in ("config.json", "preprocessor_config.json", "model.safetensors or pytorch_model.bin"):
        assert str(tmp_path / name) in message


# ---------------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("sample_rate", [8000, 22050, 44100, 48000])
def test_resampling_stereo_keeps_frequency_and_duration(sample_rate):
    stereo = tone(440.0, 1.5, sample_rate, channels=2)
    decoded = load_audio((stereo, sample_rate))
    assert decoded.sample_rate == 16000
    assert decoded.num_samples == math.ceil(stereo.shape[1] * 16000 / sample_rate)
    assert dominant_frequency(decoded.waveform, 16000) == pytest.approx(440.0, abs=1.0)
    # mono mix-down is the channel mean: 0.5 and 0.25 amplitude -> 0.375
    assert np.abs(decoded.waveform[2000:-2000]).max() == pytest.approx(0.375, rel=0.02)


def test_wav_file_at_48k_stereo(tmp_path):
    path = write_wav(tmp_path / "stereo48k.wav", tone(440.0, 1.0, 48000, channels=2), 48000)
    decoded = load_audio(path)
    assert decoded.num_samples == 16000
    assert dominant_frequency(decoded.waveform, 16000) == pytest.approx(440.0, abs=1.0)


@pytest.mark.parametrize(
    "suffix, codec_args",
    [(".mp3", ("-c:a", "libmp3lame")), (".flac", ("-c:a", "flac")), (".ogg", ("-c:a", "libvorbis")),
     (".opus", ("-c:a", "libopus")), (".m4a", ("-c:a", "aac")), (".aac", ("-c:a", "aac"))],
)
def test_decoding_compressed_formats(tmp_path, suffix, codec_args):
    path = write_tone_file(tmp_path / f"tone{suffix}", codec_args=codec_args, seconds=1.0)
    decoded = load_audio(path)
    assert decoded.sample_rate == 16000
    assert decoded.waveform.dtype == np.float32
    assert decoded.duration_seconds == pytest.approx(1.0, abs=0.08)  # codec priming/padding
    assert dominant_frequency(decoded.waveform, 16000) == pytest.approx(440.0, abs=2.0)


def test_decoding_audio_track_of_video(tmp_path):
    decoded = load_audio(write_video(tmp_path / "talk.mp4", with_audio=True, seconds=1.0))
    assert decoded.duration_seconds == pytest.approx(1.0, abs=0.08)
    assert dominant_frequency(decoded.waveform, 16000) == pytest.approx(440.0, abs=2.0)


def test_video_without_audio_is_a_clear_error(tmp_path):
    path = write_video(tmp_path / "mute.mp4", with_audio=False)
    with pytest.raises(AudioDecodeError, match="no audio stream") as error:
        load_audio(path)
    assert str(path) in str(error.value)


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "broken.wav"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioDecodeError) as error:
        load_audio(garbage)
    assert str(garbage) in str(error.value)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_audio(tmp_path / "absent.wav")


def test_silent_audio_is_refused_unless_allowed(random_encoder):
    with pytest.raises(AudioDecodeError, match="silent"):
        random_encoder.encode(np.zeros(8000, np.float32))
    hiss = (1e-5 * np.random.default_rng(0).standard_normal(8000)).astype(np.float32)
    with pytest.raises(AudioDecodeError, match="silent"):
        random_encoder.encode(hiss)
    features = random_encoder.encode(np.zeros(8000, np.float32), allow_silence=True)
    assert features.num_frames == 13 and torch.isfinite(features.features).all()


def test_comfy_audio_dict_input(random_encoder):
    batch = torch.from_numpy(np.stack([tone(440.0, 0.5, 44100, channels=2), tone(880.0, 0.5, 44100, channels=2)]))
    decoded = load_audio({"waveform": batch, "sample_rate": 44100})  # (B=2, C=2, T): batch item 0 is used
    assert decoded.num_samples == 8000
    assert dominant_frequency(decoded.waveform, 16000) == pytest.approx(440.0, abs=2.0)
    features = random_encoder.encode({"waveform": batch, "sample_rate": 44100}, clip_length=4)
    assert (features.num_frames, features.num_padded_frames) == (13, 16)
    with pytest.raises(AudioDecodeError, match="batch, channels, samples"):
        load_audio({"waveform": batch[0], "sample_rate": 44100})


def test_too_short_audio_is_a_clear_error(random_encoder):
    clicks = tone(1000.0, 0.01, 16000)[0]  # 160 samples < the CNN's 400-sample receptive field
    with pytest.raises(AudioDecodeError, match="too short"):
        random_encoder.encode(clicks, clip_length=0)
    assert random_encoder.encode(clicks, clip_length=4).num_padded_frames == 4  # padding makes it long enough
    assert random_encoder.cnn_output_length(16000) == random_encoder.cnn_features(np.ones(16000)).shape[1]


def test_crop_records_the_span_used(random_encoder):
    decoded = load_audio((tone(440.0, 2.0, 16000), 16000)).crop(0.5, 0.3)
    assert decoded.num_samples == 4800 and decoded.start_seconds == pytest.approx(0.5)
    features = random_encoder.encode(decoded)
    assert features.start_seconds == pytest.approx(0.5) and features.end_seconds == pytest.approx(0.8)
    assert features.num_frames == 8


def test_file_decoding_block_by_block_equals_the_whole_array(tmp_path):
    """Files are mixed down and resampled as they are decoded; the samples equal the one-shot path."""
    import wave

    path = write_wav(tmp_path / "stereo44k.wav", tone(440.0, 3.0, 44100, channels=2), 44100)
    with wave.open(str(path)) as handle:
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16).reshape(-1, 2).T
    from_file, from_array = load_audio(path), load_audio((pcm, 44100))
    assert from_file.num_samples == from_array.num_samples == math.ceil(pcm.shape[1] * 16000 / 44100)
    np.testing.assert_allclose(from_file.waveform, from_array.waveform, rtol=0, atol=1e-6)


@pytest.mark.parametrize("from_rate, expected_fraction", [(44100, 0.0), (44100, 0.3), (44100, 1.0), (44100, 3.0), (16000, 0.5)])
def test_stream_resampler_equals_one_shot_whatever_the_duration_guess(from_rate, expected_fraction):
    """The container's duration only sizes the output buffer: too short, missing or too long, the
    samples are those of the one-shot resampling."""
    from emocast_core.conditioning.audio_decode import _StreamResampler, resample

    signal = tone(300.0, 2.0, from_rate)[0] + 0.05 * np.random.default_rng(0).standard_normal(2 * from_rate).astype(np.float32)
    resampler = _StreamResampler(from_rate, 16000, int(expected_fraction * signal.shape[0]))
    for first in range(0, signal.shape[0], 1152):
        resampler.push(signal[first:first + 1152])
    streamed = resampler.finish()
    one_shot = resample(signal, from_rate, 16000)
    assert streamed.shape == one_shot.shape == (32000,)
    np.testing.assert_allclose(streamed, one_shot, rtol=0, atol=1e-6)


def test_integer_pcm_arrays_are_scaled_like_files():
    pcm = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    decoded = load_audio((pcm, 16000))
    np.testing.assert_array_equal(decoded.waveform, pcm.astype(np.float32) / 32768.0)


# ---------------------------------------------------------------------------------------------- speech
def test_espeak_speech_gives_time_varying_features(tmp_path, random_encoder):
    path = espeak_speech(tmp_path / "speech.wav", "Hello there. I am very happy to see you today.")
    decoded = load_audio(path)
    assert decoded.duration_seconds > 1.0
    features = random_encoder.encode(decoded)
    assert features.num_frames == math.ceil(decoded.num_samples * 25 / 16000)
    real = features.features[: features.num_frames]
    assert torch.isfinite(real).all()
    # Speech changes over time: the frame-to-frame spread is a sizeable part of the overall scale.
    assert real.std(dim=0).mean() > 0.05 * real.abs().mean()
    assert dominant_frequency(decoded.waveform, 16000) < 4000.0


# ---------------------------------------------------------------------------------------------- vocal separation
def _gain_model(path: Path, gain: float, dim_f: int, dim_t: int, fixed_batch: bool = False) -> Path:
    """An ONNX 'separator' that scales its spectrum input: output = gain * input, shapes preserved."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    batch = 1 if fixed_batch else "batch"
    spectrum_in = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 4, dim_f, dim_t])
    spectrum_out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 4, dim_f, dim_t])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "gain"], ["output"])], "gain", [spectrum_in], [spectrum_out],
        initializer=[numpy_helper.from_array(np.array(gain, np.float32), "gain")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


SMALL_MDX = MDXParameters(n_fft=256, hop_length=64, dim_f=96, dim_t=32, compensate=1.0, sample_rate=16000)


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_vocal_separator_applies_the_model(tmp_path, gain):
    separator = VocalSeparator(_gain_model(tmp_path / "gain.onnx", gain, 96, 32), SMALL_MDX)
    audio = load_audio((tone(1000.0, 1.3, 16000), 16000)).crop(0.1)
    vocals = separator.separate(audio)
    assert vocals.num_samples == audio.num_samples and vocals.sample_rate == audio.sample_rate
    assert vocals.start_seconds == audio.start_seconds
    # 1 kHz lies inside the model's band (bins 3..95 of 129 = 188 Hz .. 5.9 kHz): it passes scaled by
    # gain, across every chunk seam. Only the abrupt on/offset (broadband) at the ends loses content.
    inner = slice(SMALL_MDX.n_fft, -SMALL_MDX.n_fft)
    np.testing.assert_allclose(vocals.waveform[inner], gain * audio.waveform[inner], atol=2e-3)


def test_vocal_separator_drops_out_of_band_content(tmp_path):
    separator = VocalSeparator(_gain_model(tmp_path / "gain.onnx", 1.0, 96, 32), SMALL_MDX)
    audio = load_audio((tone(7000.0, 0.5, 16000), 16000))  # above bin 96 * 62.5 Hz = 6 kHz
    inner = slice(SMALL_MDX.n_fft, -SMALL_MDX.n_fft)  # away from the broadband on/offset
    assert np.abs(separator.separate(audio).waveform[inner]).max() < 0.01 * np.abs(audio.waveform).max()


def test_vocal_separator_kim_vocal_2_layout(tmp_path):
    model = _gain_model(tmp_path / "kim_like.onnx", 1.0, KIM_VOCAL_2.dim_f, KIM_VOCAL_2.dim_t, fixed_batch=True)
    separator = VocalSeparator(model)  # Kim_Vocal_2 settings: 44.1 kHz, n_fft 7680, hop 1024
    audio = load_audio((tone(440.0, 0.7, 16000), 16000))
    vocals = separator.separate(audio)
    assert vocals.num_samples == audio.num_samples
    inner = slice(1600, -1600)  # resampling edges aside, an in-band tone passes with the compensate gain
    np.testing.assert_allclose(vocals.waveform[inner], KIM_VOCAL_2.compensate * audio.waveform[inner], atol=5e-3)


def test_vocal_separator_rejects_wrong_layout_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        VocalSeparator(_gain_model(tmp_path / "gain.onnx", 1.0, 64, 32), SMALL_MDX)
    with pytest.raises(FileNotFoundError):
        VocalSeparator(tmp_path / "Kim_Vocal_2.onnx")


def test_silent_frames_are_the_frames_whose_sound_is_below_the_silence_peak():
    from emocast_core.conditioning.audio_decode import SILENCE_PEAK_DBFS, DecodedAudio, silent_frames

    rate, fps = 16000, 25
    per_frame = rate // fps
    waveform = np.zeros(10 * per_frame, dtype=np.float32)
    waveform[2 * per_frame + 5] = 0.5  # a click inside frame 2
    waveform[5 * per_frame:7 * per_frame] = 0.1 * np.sin(np.arange(2 * per_frame, dtype=np.float32))  # frames 5, 6
    waveform[8 * per_frame] = 0.5 * 10 ** (SILENCE_PEAK_DBFS / 20)  # below the silence peak: still silent
    silent = silent_frames(DecodedAudio(waveform, rate), fps, num_frames=12)
    assert silent.dtype == torch.bool and silent.shape == (12,)
    assert silent.tolist() == [True, True, False, True, True, False, False, True, True, True, True, True]  # 10, 11: past the end
