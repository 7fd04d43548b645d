"""The EmoCAST nodes in process, on tiny models in the real folder layout.

These tests need ComfyUI importable in the running interpreter: set ``COMFYUI_DIR`` (a folder holding a
``ComfyUI/`` checkout) and run pytest with ComfyUI's Python, e.g.
``COMFYUI_DIR=/path/to/comfy /path/to/comfy/venv/bin/python -m pytest tests/test_nodes.py`` (that
environment needs the pack's requirements plus pytest, onnx and scikit-image). Otherwise they skip.
The pack is loaded as a package from this repository, as ComfyUI loads it from ``custom_nodes``.
"""
from __future__ import annotations

import math
import os
import sys
import wave
from pathlib import Path

import comfy_fixtures as cf
import numpy as np
import pytest
import torch
from comfy_in_process import import_comfyui, load_pack, node_classes

REPO = Path(__file__).resolve().parents[1]


import_comfyui()

import comfy.model_management as mm
import folder_paths


@pytest.fixture(scope="module")
def pack():
    return load_pack()


@pytest.fixture(scope="module")
def nodes(pack):
    return node_classes(pack)


@pytest.fixture(scope="module")
def models_root(tmp_path_factory, oracle_dir, nodes):
    root = tmp_path_factory.mktemp("comfy_models")
    models = cf.build_models_tree(root, oracle_dir)
    cf.write_inputs(root / "input", 0.3)
    for key in ("emocast", "vae", "text_encoders", "audio_encoders", "insightface"):
        folder_paths.add_model_folder_path(key, str(models / key))
    output = root / "output"
    output.mkdir()
    previous = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(output))
    yield root
    folder_paths.set_output_directory(previous)


def run(node, **inputs):
    """Execute as ComfyUI does: on a clone of the class carrying the hidden inputs."""
    from comfy_api.latest import io

    return node.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(**inputs)


def test_entrypoint_lists_every_node_once(nodes):
    assert list(nodes) == list(cf.NODE_INPUTS)


def test_schemas_are_stable_and_documented(nodes):
    for node_id, node in nodes.items():
        schema = node.GET_SCHEMA()
        assert schema.category.startswith("EmoCAST") and schema.display_name and schema.description
        assert [(item.id) for item in schema.inputs] == [name for name, _ in cf.NODE_INPUTS[node_id]]
        for item in schema.inputs:
            assert item.tooltip, f"{node_id}.{item.id} has no tooltip"
        assert [output.get_io_type() for output in schema.outputs] == cf.NODE_OUTPUTS[node_id]


def test_model_folder_registration_keeps_extra_paths(pack, nodes):
    paths = sys.modules["emocast_pack.nodes.paths"]
    folder_paths.add_model_folder_path("emocast", "/extra/emocast")
    paths.register_model_folders()
    registered, extensions = folder_paths.folder_names_and_paths["emocast"]
    assert "/extra/emocast" in registered and os.path.join(folder_paths.models_dir, "emocast") in registered
    assert {".safetensors", ".pth"} <= set(extensions)


def test_loaders_list_the_files_in_place(models_root, nodes):
    choices = lambda node_id, name: next(i for i in nodes[node_id].GET_SCHEMA().inputs if i.id == name).options
    assert "emocast/tiny_net.safetensors" in choices("EmoCASTModelLoader", "checkpoint")
    assert "vae/tiny_vae" in choices("EmoCASTModelLoader", "vae")
    assert "text_encoders/clip_l.safetensors" in choices("EmoCASTTextEncoderLoader", "text_encoder")
    assert "audio_encoders/tiny_wav2vec2" in choices("EmoCASTAudioEncoderLoader", "wav2vec2")
    assert "insightface/models/antelopev2" in choices("EmoCASTFaceAnalyzerLoader", "face_models")
    message = nodes["EmoCASTModelLoader"].validate_inputs(checkpoint="emocast/nope.safetensors")
    assert isinstance(message, str) and "nope.safetensors" in message


@pytest.fixture(scope="module")
def conditions(models_root, nodes):
    from PIL import Image

    image = torch.from_numpy(np.array(Image.open(models_root / "input" / cf.PORTRAIT).convert("RGB"))).float()[None] / 255
    with wave.open(str(models_root / "input" / cf.SPEECH)) as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float32) / 32768
    audio = {"waveform": torch.from_numpy(samples)[None, None].repeat(1, 2, 1), "sample_rate": rate}  # stereo
    tiny = cf.TINY_OVERRIDES
    model = run(nodes["EmoCASTModelLoader"], **tiny["EmoCASTModelLoader"]).result[0]
    text_encoder = run(nodes["EmoCASTTextEncoderLoader"], **tiny["EmoCASTTextEncoderLoader"]).result[0]
    audio_encoder = run(nodes["EmoCASTAudioEncoderLoader"], **tiny["EmoCASTAudioEncoderLoader"]).result[0]
    analyzer = run(nodes["EmoCASTFaceAnalyzerLoader"], **tiny["EmoCASTFaceAnalyzerLoader"]).result[0]
    reference, crop, mask = run(nodes["EmoCASTReferenceEncoder"], face_analyzer=analyzer, image=image, size=128,
                                face_index=0, face_expand_ratio=1.2, on_no_face="error", crop_to_face=True).result
    emotion = run(nodes["EmoCASTEmotionEncode"], text_encoder=text_encoder, preset="happy", text="", intensity=0.7).result[0]
    features, used_audio, frame_count, fps = run(
        nodes["EmoCASTAudioFeatures"], audio_encoder=audio_encoder, audio=audio, fps=25.0, start_time=0.1, duration=0.0,
        separate_vocals=True, clip_length=8).result
    return dict(model=model, text_encoder=text_encoder, reference=reference, crop=crop, mask=mask, emotion=emotion,
                features=features, audio=used_audio, frame_count=frame_count, fps=fps, rate=rate, samples=samples)


def test_conditioning_outputs(conditions):
    assert conditions["crop"].shape == (1, 128, 128, 3) and 0 <= conditions["crop"].min() <= conditions["crop"].max() <= 1
    assert conditions["mask"].shape == (1, 128, 128)
    assert conditions["frame_count"] == math.ceil(0.2 * 25) and conditions["fps"] == 25.0
    used = conditions["audio"]
    first = round(0.1 * conditions["rate"])
    assert used["sample_rate"] == conditions["rate"] and used["waveform"].shape[:2] == (1, 2)
    assert torch.equal(used["waveform"][0, 0], torch.from_numpy(conditions["samples"][first:]))


def test_emotion_schedule_gives_per_frame_tokens(nodes, conditions):
    emotion = run(nodes["EmoCASTEmotionEncode"], text_encoder=conditions["text_encoder"], preset="happy", text="",
                  intensity=1.0, schedule="0: neutral\n0.2: sad @0.5", transition=0.0).result[0]
    per_frame = emotion.conditions(10, 25.0)
    assert per_frame.tokens.shape[0] == 10
    assert torch.equal(per_frame.tokens[0], per_frame.tokens[4]) and not torch.equal(per_frame.tokens[4], per_frame.tokens[5])
    with pytest.raises(ValueError, match="empty"):
        run(nodes["EmoCASTEmotionEncode"], text_encoder=conditions["text_encoder"], preset="custom text", text="  ", intensity=1.0)


SAMPLER = dict(seed=3, steps=1, cfg=3.5, solver="ddim", overlap=0, audio_cfg=0.0, emotion_cfg=0.0, guidance_fraction=1.0,
               pose_weight=1.0, face_weight=1.0, lip_weight=1.0, motion_frames=2)


@pytest.fixture(scope="module")
def frames(nodes, conditions):
    images, fps, _latent = run(nodes["EmoCASTSampler"], model=conditions["model"], reference=conditions["reference"],
                               emotion=conditions["emotion"], audio_features=conditions["features"], **SAMPLER).result
    return images, fps


def test_sampler_makes_one_frame_per_audio_frame(frames, conditions):
    images, fps = frames
    assert images.shape == (conditions["frame_count"], 128, 128, 3) and images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0 and fps == 25.0


def _files_under(*folders: Path) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*")}


def test_interrupt_raises_comfyui_interrupt_and_writes_nothing(nodes, conditions, models_root, tmp_path, monkeypatch):
    """An interrupt asked for during the second step stops the sampler before the next one, with ComfyUI's
    own exception, and no file appears in ComfyUI's output or temp folder or in the working folder."""
    import comfy.utils

    monkeypatch.chdir(tmp_path)  # an empty working folder, so that anything written there shows
    watched = (Path(folder_paths.get_output_directory()), Path(folder_paths.get_temp_directory()), tmp_path)
    before = _files_under(*watched)
    steps_seen = []

    def interrupt_on_second_step(value, total, preview, node_id=None):
        steps_seen.append(value)
        if value == 2:
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(interrupt_on_second_step)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(nodes["EmoCASTSampler"], model=conditions["model"], reference=conditions["reference"],
                emotion=conditions["emotion"], audio_features=conditions["features"], **dict(SAMPLER, steps=20))
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert steps_seen and max(steps_seen) <= 3, f"kept sampling after the interrupt: {steps_seen}"
    assert _files_under(*watched) == before


def test_video_combine_and_paste_back(nodes, frames, conditions, models_root):
    from emocast_pack.emocast_core.video import probe_video

    images, fps = frames
    full = run(nodes["EmoCASTPasteBack"], images=images, reference=conditions["reference"], feather=0.1).result[0]
    assert full.shape == (images.shape[0], 512, 512, 3)
    output = run(nodes["EmoCASTVideoCombine"], images=full, fps=fps, filename_prefix="EmoCAST/test", crf=23,
                 audio=conditions["audio"])
    video = output.result[0]
    saved = output.ui.as_dict()["images"][0]
    path = models_root / "output" / saved["subfolder"] / saved["filename"]
    info = probe_video(path)
    assert (info.num_frames, info.width, info.height, info.has_audio) == (images.shape[0], 512, 512, True)
    assert video.get_dimensions() == (512, 512)
    assert not [p for p in path.parent.iterdir() if "partial" in p.name]


# Each sampler option, set away from its default, must change the frames: otherwise it never reached the
# pipeline. The base settings make every option matter: several clips (3 frames each), guidance on, 2 steps.
OPTION_CHANGES = {
    "seed": 4, "steps": 3, "cfg": 2.0, "solver": "dpmpp_2m", "overlap": 1, "audio_cfg": 2.0, "emotion_cfg": 1.5,
    "guidance_fraction": 0.5, "pose_weight": 0.5, "face_weight": 1.5, "lip_weight": 1.5, "motion_frames": 1,
    "colour_anchor": True, "motion_reference_mix": 0.5,
}


@pytest.fixture(scope="module")
def short_clip_features(conditions):
    features = conditions["features"]
    return type(features)(features=features.features, clip_length=3, audio=features.audio)


@pytest.fixture(scope="module")
def base_frames(nodes, conditions, short_clip_features):
    return _sample(nodes, conditions, short_clip_features, {})


def _sample(nodes, conditions, features, changes):
    options = {**SAMPLER, "steps": 2, **changes}
    images, _, _ = run(nodes["EmoCASTSampler"], model=conditions["model"], reference=conditions["reference"],
                       emotion=conditions["emotion"], audio_features=features, **options).result
    return images


# Options that leave the frames as they are by design, each with the test that shows it reaches the pipeline.
OPTIONS_TESTED_ELSEWHERE = {
    "compile": "test_compile_option_compiles_the_step",
    "denoise": "test_latent_feeds_a_second_pass_at_lower_denoise",
    "audio_off_in_silence": "test_audio_off_in_silence_reaches_the_pipeline",
}


def test_every_sampler_option_is_covered(nodes):
    widgets = {name for name, kind in cf.NODE_INPUTS["EmoCASTSampler"] if kind != "link"}
    assert set(OPTION_CHANGES) | set(OPTIONS_TESTED_ELSEWHERE) == widgets
    assert all(name in globals() for name in OPTIONS_TESTED_ELSEWHERE.values())


@pytest.mark.parametrize("option", sorted(OPTION_CHANGES))
def test_sampler_options_reach_the_pipeline(nodes, conditions, short_clip_features, base_frames, option):
    images = _sample(nodes, conditions, short_clip_features, {option: OPTION_CHANGES[option]})
    assert images.shape == base_frames.shape == (conditions["frame_count"], 128, 128, 3)
    assert torch.isfinite(images).all()
    change = (images - base_frames).abs().max().item()
    assert change > 1e-4, f"{option}={OPTION_CHANGES[option]!r} did not change the frames"


# --- compile, latents out and in, ComfyUI's samplers ---------------------------------------------------------

def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean().clamp(min=1e-12)))


def _conditioning(conditions):
    return dict(model=conditions["model"], reference=conditions["reference"], emotion=conditions["emotion"],
                audio_features=conditions["features"])


def _all_silent(features, num_frames):
    """The test speech has no pause: these features claim every frame silent, as EmoCAST Audio Features
    marks the frames of a pause."""
    import dataclasses

    return dataclasses.replace(features, silent_frames=torch.ones(num_frames, dtype=torch.bool))


def test_audio_off_in_silence_reaches_the_pipeline(nodes, conditions, short_clip_features, base_frames):
    silent = _all_silent(short_clip_features, conditions["frame_count"])
    assert torch.equal(_sample(nodes, conditions, silent, {}), base_frames)  # off: the silence is not read
    images = _sample(nodes, conditions, silent, {"audio_off_in_silence": True})
    assert (images - base_frames).abs().max().item() > 1e-4
    # Through the ComfyUI-solver node too.
    silent_conditions = {**conditions, "features": _all_silent(conditions["features"], conditions["frame_count"])}
    plain = _custom(nodes, silent_conditions, "euler")[0]
    muted = _custom(nodes, silent_conditions, "euler", audio_off_in_silence=True)[0]
    assert (muted - plain).abs().max().item() > 1e-4


def test_audio_features_mark_the_silent_frames(nodes, conditions):
    features = conditions["features"]
    assert features.silent_frames is not None and features.silent_frames.dtype == torch.bool
    assert features.silent_frames.shape == (conditions["frame_count"],)


def test_compile_option_compiles_the_step(nodes, conditions, monkeypatch):
    """The option reaches `GenerationConfig.compile`: the step goes through torch.compile (recorded here
    instead of compiled, which would take minutes on this machine)."""
    compiled = []

    def record_compile(module, **options):
        compiled.append((type(module).__name__, options))
        return module

    monkeypatch.setattr(torch, "compile", record_compile)
    run(nodes["EmoCASTSampler"], **_conditioning(conditions), **dict(SAMPLER, compile=True))
    assert compiled == [("DenoisingUNet", {"fullgraph": True, "dynamic": False})]
    compiled.clear()
    run(nodes["EmoCASTSampler"], **_conditioning(conditions), **SAMPLER)
    assert compiled == []


@pytest.fixture(scope="module")
def sampled(nodes, conditions):
    return run(nodes["EmoCASTSampler"], **_conditioning(conditions), **dict(SAMPLER, steps=3)).result


def test_sampler_latent_decodes_to_its_frames(nodes, conditions, sampled):
    """LATENT: frames as a batch, unscaled; EmoCAST Decode (chunked or tiled) gives the sampler's frames,
    and so does the same VAE decoding the latent directly, as ComfyUI's VAE Decode does."""
    images, _, latent = sampled
    samples = latent["samples"]
    assert samples.shape == (conditions["frame_count"], 4, 16, 16) and samples.dtype == torch.float32
    decoded = run(nodes["EmoCASTDecode"], model=conditions["model"], latent=latent, frames_per_batch=2, tiled=False).result[0]
    assert decoded.shape == images.shape
    assert (decoded - images).abs().max() < 1e-4  # the same decode, batched differently (tolerances.PIPELINE)
    with torch.no_grad():
        direct = (conditions["model"].vae.decode(samples[:1]).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert (direct[0] - images[0]).abs().max() < 1e-4
    tiled = run(nodes["EmoCASTDecode"], model=conditions["model"], latent=latent, frames_per_batch=1, tiled=True).result[0]
    assert tiled.shape == images.shape and _psnr(tiled, images) > 25  # seams blended (35.7 dB measured at 128 px)
    with pytest.raises(ValueError, match=r"frames as a batch \(frames, 4, h, w\)"):
        run(nodes["EmoCASTDecode"], model=conditions["model"], latent={"samples": samples[None]}, frames_per_batch=1, tiled=False)


def test_latent_feeds_a_second_pass_at_lower_denoise(nodes, conditions, sampled):
    images, _, latent = sampled
    second_pass = dict(SAMPLER, steps=2, seed=11, denoise=0.3)
    again = run(nodes["EmoCASTSampler"], **_conditioning(conditions), latent=latent, **second_pass).result[0]
    fresh = run(nodes["EmoCASTSampler"], **_conditioning(conditions), **dict(SAMPLER, steps=3, seed=11)).result[0]
    assert again.shape == images.shape and torch.isfinite(again).all()
    # It keeps what the latent holds: 16.8 dB to the first pass against 12.8 dB for a fresh sample (measured).
    assert _psnr(again, images) > _psnr(fresh, images) + 2
    with pytest.raises(ValueError, match="needs a latent to start from"):
        run(nodes["EmoCASTSampler"], **_conditioning(conditions), **second_pass)
    with pytest.raises(ValueError, match="the latent has 2 frames but the audio needs"):
        run(nodes["EmoCASTSampler"], **_conditioning(conditions), latent={"samples": latent["samples"][:2]}, **second_pass)
    with pytest.raises(ValueError, match="this reference needs 4x16x16"):
        small = {"samples": latent["samples"][:, :, :8, :8]}
        run(nodes["EmoCASTSampler"], **_conditioning(conditions), latent=small, **second_pass)


CUSTOM = dict(seed=3, cfg=3.5, overlap=0, audio_cfg=0.0, emotion_cfg=0.0, pose_weight=1.0, face_weight=1.0,
              lip_weight=1.0, motion_frames=2)


def _custom(nodes, conditions, sampler_name, scheduler="normal", steps=2, **changes):
    import comfy.samplers

    sigmas = run(nodes["EmoCASTSigmas"], scheduler=scheduler, steps=steps, denoise=changes.pop("denoise", 1.0)).result[0]
    return run(nodes["EmoCASTSamplerCustom"], **_conditioning(conditions), sampler=comfy.samplers.sampler_object(sampler_name),
               sigmas=sigmas, **{**CUSTOM, **changes}).result


def test_emocast_sigmas_follow_comfyui_schedulers(nodes):
    from emocast_pack.emocast_core.scheduling import noise_levels

    sigmas = run(nodes["EmoCASTSigmas"], scheduler="normal", steps=4, denoise=1.0).result[0]
    assert sigmas.shape == (5,) and float(sigmas[-1]) == 0.0 and bool((sigmas[:-1] > sigmas[1:]).all())
    # The first step is the zero-SNR level the model starts from (sigma ~ 4096, as diffusers caps it).
    assert abs(float(sigmas[0]) - float(noise_levels()[-1])) < 1e-3 * float(sigmas[0])
    partial = run(nodes["EmoCASTSigmas"], scheduler="normal", steps=4, denoise=0.5).result[0]
    longer = run(nodes["EmoCASTSigmas"], scheduler="normal", steps=8, denoise=1.0).result[0]
    assert torch.allclose(partial, longer[-5:])  # BasicScheduler's denoise: the last steps of a longer schedule


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde", "res_multistep", "euler_cfg_pp"])
def test_comfyui_samplers_make_finite_frames(nodes, conditions, sampler_name):
    images, fps, latent = _custom(nodes, conditions, sampler_name)
    assert images.shape == (conditions["frame_count"], 128, 128, 3) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and fps == 25.0
    assert latent["samples"].shape == (conditions["frame_count"], 4, 16, 16)


def test_comfyui_sampler_anchors_colours_when_asked(nodes, conditions):
    """The colour_anchor input reaches the pipeline through the ComfyUI-solver node too."""
    plain = _custom(nodes, conditions, "euler")[0]
    anchored = _custom(nodes, conditions, "euler", colour_anchor=True)[0]
    assert anchored.shape == plain.shape and (anchored - plain).abs().max().item() > 1e-4


def test_comfyui_sampler_mixes_the_portrait_into_motion_frames_when_asked(nodes, conditions, short_clip_features):
    """The motion_reference_mix input reaches the pipeline through the ComfyUI-solver node too (it acts from
    the second clip on, hence the 3-frame clips); out of range it is refused in the node's own words."""
    several_clips = {**conditions, "features": short_clip_features}
    plain = _custom(nodes, several_clips, "euler")[0]
    mixed = _custom(nodes, several_clips, "euler", motion_reference_mix=0.5)[0]
    assert mixed.shape == plain.shape and (mixed - plain).abs().max().item() > 1e-4
    assert torch.equal(mixed[:3], plain[:3])  # the first clip starts from the portrait either way
    with pytest.raises(ValueError, match=r"^motion_reference_mix must be between 0 and 1, got 1.5"):
        _custom(nodes, several_clips, "euler", motion_reference_mix=1.5)

def test_comfyui_euler_with_many_steps_approaches_the_builtin_euler(nodes, conditions):
    """Both integrate the same probability-flow ODE from the same noise; they differ only in where the
    steps fall (ComfyUI's "normal" spacing vs diffusers' trailing one), an error that shrinks with the step
    count. At 30 steps on the tiny model: 45.7 dB between them (measured), against 12.8 dB between two seeds."""
    ours = run(nodes["EmoCASTSampler"], **_conditioning(conditions), **dict(SAMPLER, steps=30, solver="euler")).result[0]
    comfy_euler = _custom(nodes, conditions, "euler", steps=30)[0]
    other_seed = run(nodes["EmoCASTSampler"], **_conditioning(conditions), **dict(SAMPLER, steps=30, solver="euler", seed=4)).result[0]
    assert _psnr(comfy_euler, ours) > 30
    assert _psnr(comfy_euler, ours) > _psnr(other_seed, ours) + 10


def test_comfyui_sampler_shows_latent_previews_and_stops_on_interrupt(nodes, conditions, monkeypatch):
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    monkeypatch.setattr(args, "preview_method", LatentPreviewMethod.Latent2RGB)
    seen = []

    def record(value, total, preview, node_id=None):
        seen.append((value, total, preview))

    comfy.utils.set_progress_bar_global_hook(record)
    try:
        _custom(nodes, conditions, "dpmpp_2m", steps=3)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    steps = [entry for entry in seen if entry[2] is not None]
    assert [value for value, _, _ in seen][:3] == [1, 2, 3] and seen[0][1] == 3
    assert all(preview[0] == "JPEG" and preview[1].size == (16, 16) for _, _, preview in steps[:3])

    def interrupt_on_second_step(value, total, preview, node_id=None):
        seen.append(value)
        if value == 2:
            mm.interrupt_current_processing(True)

    seen.clear()
    comfy.utils.set_progress_bar_global_hook(interrupt_on_second_step)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _custom(nodes, conditions, "euler", steps=20)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    assert seen and max(seen) <= 3, f"kept sampling after the interrupt: {seen}"


def test_comfyui_sampler_second_pass_needs_a_latent(nodes, conditions, sampled):
    images, _, latent = sampled
    with pytest.raises(ValueError, match="connect a latent to start from"):
        _custom(nodes, conditions, "euler", denoise=0.4)
    again = _custom(nodes, conditions, "euler", denoise=0.3, latent=latent, seed=11)[0]
    fresh = _custom(nodes, conditions, "euler", steps=3, seed=11)[0]
    assert _psnr(again, images) > _psnr(fresh, images) + 3  # 19.4 dB against 12.7 dB (measured)
