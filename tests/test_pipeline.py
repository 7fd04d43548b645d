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
        silent_frames = changes.pop("silent_frames", None)
        return pipe(reference, emotion, windows, num_frames, _generation_config(config_json, **changes), progress=progress,
                    silent_frames=silent_frames)
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


def test_colour_anchoring_acts_on_each_clip_before_the_next_continues_from_it(fixture):
    """Clip 1 comes out as the plain clip 1 anchored; later clips differ from the plain ones anchored,
    because they continued from anchored motion frames; and the video is closer to the portrait."""
    from emocast_core.colour_anchor import anchor_colours

    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    portrait = ((fixture[3]["ref_pixels"][0].float() + 1) / 2).permute(1, 2, 0)
    plain = _run(fixture, num_frames=2 * clip_length, num_inference_steps=2)
    anchored = _run(fixture, num_frames=2 * clip_length, num_inference_steps=2, colour_anchor=True)
    assert anchored.shape == plain.shape
    assert torch.allclose(anchored[:clip_length], anchor_colours(plain[:clip_length], portrait), atol=1e-5)
    assert not torch.allclose(anchored[clip_length:], anchor_colours(plain[clip_length:], portrait), atol=1e-3)
    assert ((anchored - portrait) ** 2).mean() < ((plain - portrait) ** 2).mean()


def test_motion_reference_mix_moves_the_motion_frames_toward_the_portrait(fixture, monkeypatch):
    """Each clip after the first continues from its motion-frame latents moved `motion_reference_mix` of the
    way toward the portrait's latent: 0 leaves them as the previous clip made them, 1 is the portrait itself
    (as for the first clip); the first clip is the same at any mix."""
    import emocast_core.pipeline as pipeline_module

    seen = []

    def recording(net, motion_latents, conditions):
        seen.append(motion_latents.detach().clone())
        return encode_motion_frames(net, motion_latents, conditions)

    encode_motion_frames = pipeline_module.encode_motion_frames
    monkeypatch.setattr(pipeline_module, "encode_motion_frames", recording)
    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    runs = {}
    for mix in (0.0, 0.5, 1.0):
        seen.clear()
        frames = _run(fixture, num_frames=2 * clip_length, num_inference_steps=2, motion_reference_mix=mix)
        runs[mix] = (frames, list(seen))
    (plain, (portrait_latents, made_latents)), (half, half_latents), (full, full_latents) = runs[0.0], runs[0.5], runs[1.0]
    assert not torch.allclose(made_latents, portrait_latents, atol=1e-3)  # clip 2 continues from generated frames
    torch.testing.assert_close(half_latents[1], (made_latents + portrait_latents) / 2)
    torch.testing.assert_close(full_latents[1], portrait_latents)
    assert torch.equal(half[:clip_length], plain[:clip_length]) and torch.equal(full[:clip_length], plain[:clip_length])
    assert not torch.allclose(half[clip_length:], plain[clip_length:])
    with pytest.raises(ValueError, match="motion_reference_mix"):
        GenerationConfig(motion_reference_mix=-0.1)


def test_silent_frames_run_without_the_audio_when_asked(fixture):
    """With audio_off_in_silence, the silent frames of a clip read no audio (a wholly silent video is the
    video made with region scales 0); a clip without silent frames is untouched; without the switch
    nothing changes."""
    from emocast_core.generate import SILENT_REGION_SCALES

    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    num_frames = 2 * clip_length
    second_clip_silent = torch.zeros(num_frames, dtype=torch.bool)
    second_clip_silent[clip_length:] = True
    plain = _run(fixture, num_frames=num_frames, num_inference_steps=2)

    def muted(silent):
        return _run(fixture, num_frames=num_frames, num_inference_steps=2, audio_off_in_silence=True, silent_frames=silent)

    asked = muted(second_clip_silent)
    assert torch.equal(asked[:clip_length], plain[:clip_length])  # the sounding clip is untouched
    assert not torch.allclose(asked[clip_length:], plain[clip_length:])
    all_silent = torch.ones(num_frames, dtype=torch.bool)
    assert torch.equal(muted(all_silent), _run(fixture, num_frames=num_frames, num_inference_steps=2,
                                               region_scales=SILENT_REGION_SCALES))
    # A pause shorter than a clip counts: one sounding frame in the second clip changes it, yet it is
    # neither the plain clip nor the wholly muted one.
    one_sounding = second_clip_silent.clone()
    one_sounding[-1] = False
    partly = muted(one_sounding)
    assert torch.equal(partly[:clip_length], plain[:clip_length])
    assert not torch.allclose(partly[clip_length:], plain[clip_length:])
    assert not torch.allclose(partly[clip_length:], asked[clip_length:])
    assert torch.equal(_run(fixture, num_frames=num_frames, num_inference_steps=2, silent_frames=second_clip_silent), plain)


def test_frame_audio_weights_say_which_frames_of_a_clip_are_silent():
    from emocast_core.pipeline import frame_audio_weights

    silence = [True, True, False, False, True]
    assert frame_audio_weights(None, 0, 4) is None
    assert frame_audio_weights(silence, 2, 4) is None  # nothing silent: the clip runs as upstream
    assert frame_audio_weights(silence, 0, 4).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert frame_audio_weights(silence, 3, 7).tolist() == [1.0, 0.0, 0.0, 0.0]  # past the end: padding, silent


def test_frame_weights_take_the_audio_out_of_single_frames():
    """In the audio attention a frame row of weight 0 comes out as with region scales 0 and a row of
    weight 1 as without weights; the other rows are not touched."""
    from emocast_core.models.attention import EmotiveAudioTransformerBlock

    torch.manual_seed(0)
    block = EmotiveAudioTransformerBlock(dim=32, num_heads=2, audio_token_dim=16, emotion_token_dim=24, emotive_head_dim=8)
    for region in block.REGIONS:  # the zero convolutions start at zero: give the branches an output
        torch.nn.init.normal_(getattr(block, f"zero_conv_{region}").weight, std=0.2)
    rows, height, width = 3, 4, 4
    hidden = torch.randn(rows, height * width, 32)
    kv = block.emotive_audio_kv(torch.randn(rows, 32, 16), torch.randn(rows, 77, 24))
    masks = [torch.ones(rows, height * width)] * 3
    with torch.no_grad():
        plain = block(hidden, height, width, kv, masks, (1.0, 0.5, 2.0))
        silent = block(hidden, height, width, kv, masks, (0.0, 0.0, 0.0))
        weighted = block(hidden, height, width, kv, masks, (1.0, 0.5, 2.0), torch.tensor([1.0, 0.0, 1.0]).view(-1, 1, 1))
    assert not torch.allclose(plain, silent)
    torch.testing.assert_close(weighted[0], plain[0])
    torch.testing.assert_close(weighted[1], silent[1])
    torch.testing.assert_close(weighted[2], plain[2])


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


# --- latents out and in, and a replaceable per-clip loop ----------------------------------------------------

def _clips(fixture, num_frames, start_latents=None, clip_sampler=None, **changes):
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    clips = list(pipe.generate_clips(reference, emotion, expected["audio_windows"], num_frames,
                                     _generation_config(config_json, **changes), start_latents=start_latents,
                                     clip_sampler=clip_sampler))
    return torch.cat([clip.frames for clip in clips]), torch.cat([clip.latents for clip in clips])


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp(min=1e-12)))


def test_video_latents_decode_to_the_video_frames(fixture):
    """The latent output is the whole video, frames as a batch in the VAE's own space: decoding it
    with the VAE alone gives the frames the pipeline emitted (also across a cross-faded overlap, where
    both are blended; decoding is not linear, hence the looser bound there)."""
    from emocast_core.video_latents import decode_video_latents

    vae = fixture[2]
    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    num_frames = clip_length + 2
    frames, latents = _clips(fixture, num_frames, num_inference_steps=1)
    size = frames.shape[1]
    assert latents.shape == (num_frames, 4, size // 8, size // 8) and latents.dtype == torch.float32
    with torch.no_grad():
        one_by_one = decode_video_latents(vae, latents, frames_per_batch=1)
        tiled = decode_video_latents(vae, latents, frames_per_batch=3, tiled=True)
    assert_close_to_official("decoded", one_by_one, frames, PIPELINE)
    # Tiles are blended at their seams (34.5 dB measured at 128 px, two tiles a side).
    assert tiled.shape == frames.shape and _psnr(tiled, frames) > 25
    blended_frames, blended_latents = _clips(fixture, num_frames, num_inference_steps=1, overlap=1)
    with torch.no_grad():
        decoded = decode_video_latents(vae, blended_latents)
    assert_close_to_official("decoded_before_blend", decoded[: clip_length - 1], blended_frames[: clip_length - 1], PIPELINE)
    # Blending decoded frames vs decoding blended latents: 31 dB measured on the tiny model's one blended frame.
    assert _psnr(decoded, blended_frames) > 25


def test_start_latents_at_full_denoise_are_pure_noise(fixture):
    """denoise 1 starts at the zero-SNR step, where no trace of the start latents is left (DDIM)."""
    frames, latents = _clips(fixture, 3, num_inference_steps=2)
    again, _ = _clips(fixture, 3, start_latents=torch.randn_like(latents) * 5, num_inference_steps=2)
    assert_close_to_official("from_latents", again, frames, PIPELINE)


def test_start_latents_with_partial_denoise_keep_the_video(fixture):
    """A second pass at low denoise re-runs only the last steps of a longer schedule from the given
    latents: it stays close to the video it started from, far closer than a fresh sample is."""
    steps_seen = []

    class Recorder:
        def __call__(self, event):
            steps_seen.append(event.timestep)

    frames, latents = _clips(fixture, 3, num_inference_steps=4)
    config_json, net, vae, inputs, expected = fixture
    pipe = EmoCASTPipeline(net, vae, _scheduler(config_json))
    reference, emotion = _conditions(inputs)
    config = _generation_config(config_json, num_inference_steps=2, denoise=0.25, seed=9)
    second = torch.cat([clip.frames for clip in pipe.generate_clips(
        reference, emotion, expected["audio_windows"], 3, config, progress=Recorder(), start_latents=latents)])
    fresh, _ = _clips(fixture, 3, num_inference_steps=4, seed=9)
    assert len(steps_seen) == 2 and max(steps_seen) < 1000 * 0.25  # the last 2 of 8 steps
    assert second.shape == frames.shape and torch.isfinite(second).all()
    # Measured on the tiny model: 19.0 dB against 13.3 dB for a fresh sample.
    assert _psnr(second, frames) > _psnr(fresh, frames) + 3


@pytest.mark.parametrize("latents, message", [
    (torch.zeros(2, 4, 16, 16), "has 2 frames but the audio needs 3"),
    (torch.zeros(3, 4, 8, 8), "are 4x8x8 but this reference needs 4x16x16"),
    (torch.zeros(3, 16, 16), "must be a batch of frames"),
])
def test_start_latents_that_do_not_fit_are_refused(fixture, latents, message):
    with pytest.raises(ValueError, match=message):
        _clips(fixture, 3, start_latents=latents, num_inference_steps=1)
    with pytest.raises(ValueError, match="denoise"):
        GenerationConfig(denoise=0.0)


class DiffusersLoop:
    """A ClipSampler written only against the hook's contract: DDIM through `predict`."""

    def __init__(self, scheduler, steps):
        self.scheduler, self.steps, self.reported = scheduler, steps, []

    def sample_clip(self, clip):
        self.scheduler.set_timesteps(self.steps)
        latents = clip.noise * self.scheduler.init_noise_sigma
        for step, timestep in enumerate(self.scheduler.timesteps):
            clip.check_cancel()
            prediction, raw = clip.predict(latents, timestep)
            assert raw.shape[0] == 2 and prediction.shape == latents.shape  # [uncond; cond] rows
            latents = self.scheduler.step(prediction, timestep, latents).prev_sample
            clip.report_step(step, self.steps, latents, int(timestep))
            self.reported.append((clip.clip_index, step))
        return latents


def test_a_clip_sampler_replaces_the_loop(fixture):
    clip_length = fixture[0]["runtime"]["n_sample_frames"]
    num_frames = clip_length + 1
    builtin, builtin_latents = _clips(fixture, num_frames, num_inference_steps=2)
    loop = DiffusersLoop(_scheduler(fixture[0]), 2)
    replaced, replaced_latents = _clips(fixture, num_frames, clip_sampler=loop, num_inference_steps=2)
    assert loop.reported == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert_close_to_official("frames", replaced, builtin, PIPELINE)
    assert_close_to_official("latents", replaced_latents, builtin_latents, PIPELINE)
    with pytest.raises(ValueError, match="guidance fraction"):
        _clips(fixture, 2, clip_sampler=loop, guidance=GuidanceConfig(active_fraction=0.5))
