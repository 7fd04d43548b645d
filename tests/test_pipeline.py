"""The sampler: parity with the official multi-clip pipeline, and each opt-in feature.

Parity runs the official tiny model (`oracle_dir`) through `EmoCASTPipeline` with the fixture's
settings, read from its files so any fixture set made the same way works.
"""
from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler
from safetensors.torch import load_file

from emocast_core.guidance import GuidanceConfig
from tolerances import ELEMENTWISE, FLOAT16_BANK, FLOAT16_BANK_LATENTS, PIPELINE, assert_close_to_official
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet
from emocast_core.pipeline import (
    EmoCASTPipeline,
    EmotionConditions,
    GenerationCancelled,
    GenerationConfig,
    ReferenceConditions,
    clip_starts,
)


@pytest.fixture(scope="module")
def fixture(oracle_dir):
    config_json = json.loads((oracle_dir / "tiny_config.json").read_text())
    net = EmoCASTNet.build(EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json"))
    net.load_state_dict(load_file(oracle_dir / "tiny_net.safetensors"))
    net.eval()
    vae = AutoencoderKL.from_pretrained(oracle_dir / "tiny_vae").eval()
    inputs = load_file(oracle_dir / "pipeline" / "inputs.safetensors")
    expected = load_file(oracle_dir / "pipeline" / "expected.safetensors")
    return config_json, net, vae, inputs, expected


def _scheduler(config_json, scheduler_class=DDIMScheduler):
    kwargs = {k: v for k, v in config_json["runtime"]["scheduler"].items() if k not in ("class", "eta")}
    return scheduler_class(**kwargs)


class RecordingDDIM(DDIMScheduler):
    """Upstream's DDIM that also keeps the latents each step starts from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples: list[torch.Tensor] = []

    def step(self, model_output, timestep, sample, *args, **kwargs):
        self.samples.append(sample.detach().clone())
        return super().step(model_output, timestep, sample, *args, **kwargs)


def _conditions(inputs):
    levels = sum(1 for key in inputs if key.startswith("full_mask."))
    reference = ReferenceConditions(
        inputs["ref_pixels"],
        inputs["face_emb"],
        inputs["face_region"],
        [inputs[f"full_mask.{i}"] for i in range(levels)],
        [inputs[f"face_mask.{i}"] for i in range(levels)],
        [inputs[f"lip_mask.{i}"] for i in range(levels)],
    )
    return reference, EmotionConditions(inputs["text_emb_prompt"], inputs["text_emb_uncond"])


def _generation_config(config_json, **changes):
    runtime = config_json["runtime"]
    config = GenerationConfig(
        num_inference_steps=runtime["inference_steps"],
        guidance=GuidanceConfig(scale=runtime["cfg_scale"]),
        clip_length=runtime["n_sample_frames"],
        num_motion_frames=runtime["n_motion_frames"],
        region_scales=tuple(runtime["motion_scale"]),
        seed=runtime["seed"],
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def _run(fixture, bank_dtype="float16", progress=None, scheduler=None, **changes):
    config_json, net, vae, inputs, expected = fixture
    net.config.upstream.reference_bank_dtype = bank_dtype
    try:
        pipe = EmoCASTPipeline(net, vae, scheduler or _scheduler(config_json))
        reference, emotion = _conditions(inputs)
        num_frames = changes.pop("num_frames", int(expected["audio_length"]))
        windows = changes.pop("audio_windows", expected["audio_windows"])
        emotion = changes.pop("emotion", emotion)
        return pipe(reference, emotion, windows, num_frames, _generation_config(config_json, **changes), progress=progress)
    finally:
        net.config.upstream.reference_bank_dtype = "float16"


def test_video_matches_official_pipeline_with_float32_bank(fixture):
    video = _run(fixture, bank_dtype=None)
    expected = fixture[4]["video_bankfp32"].permute(1, 2, 3, 0)  # (c t h w) -> (t h w c)
    assert_close_to_official("video_bankfp32", video, expected, PIPELINE)


def test_video_and_steps_match_official_pipeline_with_upstream_float16_bank(fixture):
    expected = fixture[4]
    recorded = []
    video = _run(fixture, progress=lambda event: recorded.append((event.clip_index, event.step, event.timestep, event.latents.clone())))
    assert_close_to_official("video", video, expected["video"].permute(1, 2, 3, 0), FLOAT16_BANK)
    steps = fixture[0]["runtime"]["inference_steps"]
    num_clips = sum(1 for key in expected if key.endswith(".noise"))
    assert len(recorded) == num_clips * steps
    for clip, step, timestep, latents in recorded:
        prefix = f"clip{clip}.step{step}"
        assert timestep == int(expected[f"{prefix}.timestep"])
        reference = expected[f"{prefix}.prev_latents"]
        assert_close_to_official(f"{prefix}.prev_latents", latents, reference, FLOAT16_BANK_LATENTS,
                                 max(1.0, reference.abs().max().item()))


def test_clip_noise_matches_upstream_seeding(fixture):
    """Each clip starts from the noise upstream draws: one generator seeded once, one draw per clip."""
    config_json, expected = fixture[0], fixture[4]
    scheduler = _scheduler(config_json, RecordingDDIM)
    _run(fixture, scheduler=scheduler)
    steps = config_json["runtime"]["inference_steps"]
    num_clips = sum(1 for key in expected if key.endswith(".noise"))
    assert len(scheduler.samples) == num_clips * steps
    for clip in range(num_clips):
        noise = expected[f"clip{clip}.noise"]
        # init_noise_sigma is 1 for DDIM: the first step of a clip starts from the noise itself. The
        # Gaussian transform's vectorised log/sin/cos may round differently on other CPUs.
        assert_close_to_official(f"clip{clip}.noise", scheduler.samples[clip * steps], noise, ELEMENTWISE)


def test_output_is_trimmed_to_audio_frames_and_streams_clip_by_clip(fixture):
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    clip_length = config_json["runtime"]["n_sample_frames"]
    num_frames = 2 * clip_length + 1
    chunks = list(
        pipe.generate(reference, emotion, expected["audio_windows"], num_frames, _generation_config(config_json, num_inference_steps=1))
    )
    assert [len(chunk) for chunk in chunks] == [clip_length, clip_length, 1]
    assert all(chunk.device.type == "cpu" and chunk.dtype == torch.float32 for chunk in chunks)


def test_generator_keeps_no_reference_to_yielded_frames(fixture):
    """Memory stays flat with length: frames handed out are not kept by the pipeline."""
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    clip_length = config_json["runtime"]["n_sample_frames"]
    stream = pipe.generate(
        reference, emotion, expected["audio_windows"], 4 * clip_length, _generation_config(config_json, num_inference_steps=1)
    )
    released = []
    for chunk in stream:
        released.append(weakref.ref(chunk))
        del chunk
        gc.collect()
    assert len(released) == 4
    # Every chunk but the one the generator is still working from is gone.
    assert sum(ref() is not None for ref in released[:-2]) == 0


def test_overlap_changes_only_frames_from_the_first_blend_on(fixture):
    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    overlap = 1
    plain = _run(fixture, num_frames=2 * clip_length, num_inference_steps=2)
    blended = _run(fixture, num_frames=2 * clip_length, num_inference_steps=2, overlap=overlap)
    assert blended.shape == plain.shape
    # The first clip's frames before the overlap are untouched.
    assert torch.equal(blended[: clip_length - overlap], plain[: clip_length - overlap])
    assert not torch.allclose(blended[clip_length - overlap:], plain[clip_length - overlap:])


def test_clip_starts_cover_the_video():
    assert clip_starts(32, 16, 0) == [0, 16]
    assert clip_starts(33, 16, 0) == [0, 16, 32]
    assert clip_starts(30, 16, 4) == [0, 12, 24]
    assert clip_starts(1, 16, 0) == [0]


def test_per_frame_emotion_changes_the_video(fixture):
    inputs = fixture[3]
    num_frames = int(fixture[4]["audio_length"])
    constant = _run(fixture, num_inference_steps=2)
    tokens = torch.cat([inputs["text_emb_prompt"].expand(num_frames // 2, -1, -1), inputs["text_emb_uncond"].expand(num_frames - num_frames // 2, -1, -1)])
    scheduled = _run(fixture, num_inference_steps=2, emotion=EmotionConditions(tokens, inputs["text_emb_uncond"]))
    assert not torch.allclose(constant, scheduled)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "unipc", "euler"])
def test_other_solvers_produce_finite_frames(fixture, sampler):
    from emocast_core.scheduling import make_scheduler

    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, make_scheduler(sampler))
    reference, emotion = _conditions(inputs)
    video = pipe(reference, emotion, expected["audio_windows"], 5, _generation_config(config_json, num_inference_steps=4))
    assert video.shape[0] == 5 and torch.isfinite(video).all()


def test_separate_guidance_runs_extra_passes_only_when_asked(fixture):
    config_json, net, vae, inputs, expected = fixture
    calls = []
    handle = net.denoising_unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        base = _run(fixture, num_frames=3, num_inference_steps=1)
        base_calls = list(calls)
        calls.clear()
        separate = _run(fixture, num_frames=3, num_inference_steps=1, guidance=GuidanceConfig(scale=3.5, audio_scale=2.0, emotion_scale=1.5))
    finally:
        handle.remove()
    assert base_calls == [2]  # one [uncond; cond] pass
    assert calls == [4]  # one pass: [uncond; cond] plus a row without audio and one without emotion
    assert not torch.allclose(base, separate)


def test_guidance_limited_to_a_fraction_of_steps(fixture):
    calls = []
    net = fixture[1]
    handle = net.denoising_unet.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    try:
        _run(fixture, num_frames=3, num_inference_steps=4, guidance=GuidanceConfig(scale=3.5, active_fraction=0.5))
    finally:
        handle.remove()
    assert calls == [2, 2, 1, 1]


def test_cancellation_stops_between_steps(fixture):
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    steps_done = []
    with pytest.raises(GenerationCancelled):
        pipe(
            reference, emotion, expected["audio_windows"], 3, _generation_config(config_json),
            progress=lambda event: steps_done.append(event.step),
            should_cancel=lambda: len(steps_done) >= 2,
        )
    assert steps_done == [0, 1]


def test_preview_frames_are_reported(fixture):
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    previews = []
    pipe(reference, emotion, expected["audio_windows"], 2, _generation_config(config_json), progress=lambda e: previews.append(e.preview), preview_every=1)
    size = reference.pixel_values.shape[-1]
    assert previews and all(p is not None and p.shape == (size, size, 3) for p in previews)


def test_same_seed_repeats_and_other_seed_differs(fixture):
    first = _run(fixture, num_frames=3, num_inference_steps=1)
    again = _run(fixture, num_frames=3, num_inference_steps=1)
    other = _run(fixture, num_frames=3, num_inference_steps=1, seed=7)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        GenerationConfig(clip_length=4, overlap=4)
    with pytest.raises(ValueError, match="active_fraction"):
        GuidanceConfig(active_fraction=1.5)


def test_overlap_wider_than_the_new_frames_takes_motion_frames_from_earlier_clips(fixture):
    """With clip_length - overlap < num_motion_frames the frames before the next clip start inside an
    earlier clip (or at the reference); the video still has one frame per audio frame."""
    motion_frames = fixture[0]["runtime"]["n_motion_frames"]
    clip_length = motion_frames + 1
    overlap = clip_length - 1  # one new frame per clip, fewer than the motion frames
    video = _run(fixture, num_frames=clip_length + 2, num_inference_steps=1, clip_length=clip_length, overlap=overlap)
    assert video.shape[0] == clip_length + 2 and torch.isfinite(video).all()
