"""The pack's models inside ComfyUI's memory manager, and ComfyUI's own models inside the pack.

* Memory: the EmoCAST network is made of ComfyUI's cast layers (`comfy.ops`), reports its size, and a
  partial load (what `--lowvram` / `--novram` do) computes what a full load computes.
* VAE: ComfyUI's `VAE`, loaded by ComfyUI's own `VAELoader` from a single file, gives the frames our
  diffusers VAE gives from the same weights.

Run with ComfyUI's Python (see `comfy_in_process.py`).
"""
from __future__ import annotations

import sys

import comfy_core_model_files as ccm
import comfy_fixtures as cf
import pytest
import torch
from comfy_in_process import import_comfyui, load_pack, node_classes
from safetensors.torch import load_file
from tolerances import FLOAT16_BANK, assert_close_to_official

import_comfyui()

import comfy.model_management as mm  # noqa: E402
import folder_paths  # noqa: E402


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
    return models


def run(node, **inputs):
    from comfy_api.latest import io

    return node.PREPARE_CLASS_CLONE({io.Hidden.unique_id: "1"}).execute(**inputs)


def loaders():
    return sys.modules["emocast_pack.nodes.loaders"]


def load_tiny_model(nodes, **changes):
    return run(nodes["EmoCASTModelLoader"], **{**cf.TINY_OVERRIDES["EmoCASTModelLoader"], **changes}).result[0]


def _layers_with_weights(module: torch.nn.Module):
    return [(name, m) for name, m in module.named_modules() if next(m.parameters(recurse=False), None) is not None]


# --- memory ---------------------------------------------------------------------------------------------


def test_network_is_made_of_comfy_cast_layers_and_reports_its_size(nodes, models_root):
    from comfy.ops import CastWeightBiasOp

    model = load_tiny_model(nodes)
    layers = _layers_with_weights(model.net)
    assert layers and all(isinstance(layer, CastWeightBiasOp) for _, layer in layers)
    assert loaders().casts_own_weights(model.net_patcher.model)
    # The plain-torch VAE may not be loaded partially: it is loaded whole.
    assert not loaders().casts_own_weights(model.vae_patcher.model)
    # What ComfyUI frees other models for: every weight and buffer of the network.
    stored = sum(t.numel() * t.element_size() for t in model.net.state_dict().values())
    assert model.net_patcher.model_size() == stored > 0


def test_the_patcher_tells_the_network_where_it_computes(nodes, models_root):
    model = load_tiny_model(nodes)
    holder = model.net_patcher.model
    assert model.net.denoising_unet.device == torch.device("cpu")
    # A partial load leaves weights on the offload device; the UNets still compute where the patcher loaded them.
    holder.device = torch.device("meta")
    assert model.net.denoising_unet.device == model.net.reference_unet.device == torch.device("meta")
    holder.device = torch.device("cpu")
    assert model.net.denoising_unet.device == torch.device("cpu")


def _one_guided_call(net, oracle_dir):
    """The official oracle's denoiser call (see test_parity_net_forward.py): every module of the network runs."""
    from emocast_core.guidance import GuidanceConfig, predict_guided, prepare_video_conditions, reference_features

    inputs = load_file(oracle_dir / "net_forward" / "inputs.safetensors")
    levels = sum(1 for key in inputs if key.startswith("full_mask."))
    masks = [[inputs[f"{region}_mask.{level}"] for level in range(levels)] for region in ("full", "face", "lip")]
    frames = inputs["latents"].shape[2]
    with torch.no_grad():
        conditions = prepare_video_conditions(net, inputs["face_emb"], inputs["text_emb_prompt"], inputs["text_emb_uncond"],
                                              inputs["face_region"], masks)
        audio_tokens = net.audioproj(inputs["audio_windows"])
        reference = reference_features(net, inputs["ref_latents"], conditions)
        guided, _ = predict_guided(net, inputs["latents"], inputs["timestep"], conditions, audio_tokens,
                                   inputs["text_emb_prompt"].expand(frames, -1, -1), reference,
                                   GuidanceConfig(scale=float(inputs["cfg_scale"])), inputs["motion_scale"].tolist())
    return guided


def test_a_partial_load_computes_what_a_full_load_computes(nodes, models_root, oracle_dir):
    full = _one_guided_call(load_tiny_model(nodes).net, oracle_dir)

    model = load_tiny_model(nodes)
    patcher = model.net_patcher
    # A third of the weights fit: ComfyUI loads the largest layers whole and streams the others, as under --lowvram.
    patcher.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=patcher.model_size() // 3)
    try:
        layers = _layers_with_weights(model.net)
        streamed = [layer for _, layer in layers if layer.comfy_cast_weights]
        assert 0 < len(streamed) < len(layers) and patcher.model.model_lowvram
        # On this CPU-only machine "elsewhere" is played by another dtype: the streamed layers' weights are
        # stored in float64 while the network computes in float32, so a layer that did not bring its
        # weights to the computation's device and dtype itself would fail here. (Not the UNets' conv_in:
        # its weight is what tells a UNet the dtype it computes in.)
        dtype_keepers = {model.net.denoising_unet.conv_in, model.net.reference_unet.conv_in}
        for layer in streamed:
            if layer not in dtype_keepers:
                layer.to(torch.float64)
        partial = _one_guided_call(model.net, oracle_dir)
    finally:
        patcher.unpatch_model(device_to=torch.device("cpu"))
    assert partial.dtype == torch.float32
    # Same float32 maths on the same weights (float64 copies of float32 values are exact): only summation
    # order may differ between the cast and plain kernels. The reference features pass through upstream's
    # float16 bank, where a difference of one float32 rounding can flip a float16 rounding (seen: 1.3e-4
    # on outputs of up to 7.5 on one x86-64 machine, 0 on another), so the float16-bank tolerance applies.
    assert_close_to_official("partial-load guided prediction", partial, full, FLOAT16_BANK)


def test_load_to_device_loads_plain_models_whole(nodes, models_root, monkeypatch):
    calls = []
    monkeypatch.setattr(mm, "load_models_gpu", lambda models, **options: calls.append((list(models), options)))
    model = load_tiny_model(nodes)
    loaders().load_to_device(model.net_patcher, model.vae_patcher)
    # The network first, free to load partially; the plain-torch VAE after it, whole.
    assert calls == [([model.net_patcher], {}), ([model.vae_patcher], {"force_full_load": True})]


# --- ComfyUI's VAE ----------------------------------------------------------------------------------------

SD_VAE_NAME = ccm.SD_VAE


@pytest.fixture(scope="module")
def sd_vae(models_root):
    """SD1.5's VAE shape, random weights (see `comfy_core_model_files`)."""
    return ccm.write_sd_vae(models_root / "vae")


def _comfy_vae(name: str):
    import nodes as comfy_nodes

    (vae,) = comfy_nodes.VAELoader().load_vae(name)
    return vae


def _portrait_like(size: int) -> torch.Tensor:
    """(2, 3, S, S) smooth images in [-1, 1], so the latents are not noise."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    first = torch.stack([x, y, (x * y)], dim=0)
    second = torch.stack([torch.sin(3 * x), torch.cos(2 * y), x.abs() - 0.5], dim=0)
    return torch.stack([first, second]).clamp(-1, 1)


def test_comfy_vae_encodes_and_decodes_like_the_diffusers_vae(pack, sd_vae):
    from diffusers import AutoencoderKL

    ComfyVAEAdapter = sys.modules["emocast_pack.nodes.comfy_vae"].ComfyVAEAdapter
    comfy_vae = _comfy_vae(f"{SD_VAE_NAME}.safetensors")
    adapter = ComfyVAEAdapter(comfy_vae)
    reference = AutoencoderKL.from_pretrained(sd_vae, local_files_only=True, torch_dtype=torch.float32).eval()
    assert adapter.config.scaling_factor == pytest.approx(reference.config.scaling_factor)
    pixels = _portrait_like(64)
    with torch.no_grad():
        expected_latents = reference.encode(pixels).latent_dist.mean
        latents = adapter.encode(pixels).latent_dist.mean
        expected_images = reference.decode(expected_latents).sample
        images = adapter.decode(expected_latents).sample
        tiled = adapter.tiled_decode(expected_latents).sample
    assert latents.shape == expected_latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32
    # Both float32 on the CPU, from the same (float16-stored) weights: they differ only in the attention
    # kernels and summation order, ~1e-6 relative; 1e-4 leaves room for a different CPU's kernels.
    scale = expected_latents.abs().max()
    torch.testing.assert_close(latents / scale, expected_latents / scale, rtol=0, atol=1e-4)
    # The pipeline turns either into frames as (x / 2 + 0.5).clamp(0, 1); ComfyUI clamps itself, so the
    # frames agree where diffusers' raw output is in range and both are clamped where it is not.
    frames = lambda sample: (sample / 2 + 0.5).clamp(0, 1)
    in_range = (expected_images.abs() < 1).float().mean()
    assert in_range > 0.2  # the comparison is about real values, not only clamped ones
    torch.testing.assert_close(frames(images), frames(expected_images), rtol=0, atol=1e-4)
    # ComfyUI's tiled decode cross-fades overlapping tiles; with one 64 px tile it is the plain decode.
    torch.testing.assert_close(frames(tiled), frames(expected_images), rtol=0, atol=1e-4)


def test_loader_refuses_a_vae_that_is_not_sd_shaped(nodes, models_root):
    class VideoVAE:  # what matters of a Wan-style VAE: 16 channels, a 3-D latent
        latent_channels, downscale_ratio, latent_dim, patcher = 16, 8, 3, None

    with pytest.raises(ValueError, match="vae_model: .*16 latent channels.*vae-ft-mse"):
        load_tiny_model(nodes, vae_model=VideoVAE())


@pytest.fixture(scope="module")
def conditions(nodes, models_root):
    """Reference, emotion and audio features of the test portrait and speech, at 64 px (the SD-shaped VAE is slow)."""
    import wave

    import numpy as np
    from PIL import Image

    inputs = models_root.parent / "input"
    image = torch.from_numpy(np.array(Image.open(inputs / cf.PORTRAIT).convert("RGB"))).float()[None] / 255
    with wave.open(str(inputs / cf.SPEECH)) as handle:
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float32) / 32768
    audio = {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": rate}
    tiny = cf.TINY_OVERRIDES
    text_encoder = run(nodes["EmoCASTTextEncoderLoader"], **tiny["EmoCASTTextEncoderLoader"]).result[0]
    audio_encoder = run(nodes["EmoCASTAudioEncoderLoader"], **tiny["EmoCASTAudioEncoderLoader"]).result[0]
    analyzer = run(nodes["EmoCASTFaceAnalyzerLoader"], **tiny["EmoCASTFaceAnalyzerLoader"]).result[0]
    reference = run(nodes["EmoCASTReferenceEncoder"], face_analyzer=analyzer, image=image, size=64, face_index=0,
                    face_expand_ratio=1.2, on_no_face="error", crop_to_face=True).result[0]
    emotion = run(nodes["EmoCASTEmotionEncode"], text_encoder=text_encoder, preset="happy", text="", intensity=1.0).result[0]
    features = run(nodes["EmoCASTAudioFeatures"], audio_encoder=audio_encoder, audio=audio, fps=25.0, start_time=0.0,
                   duration=0.2, separate_vocals=False, clip_length=4).result[0]
    return dict(reference=reference, emotion=emotion, audio_features=features)


SAMPLER = dict(seed=3, steps=1, cfg=3.5, solver="ddim", overlap=0, audio_cfg=0.0, emotion_cfg=0.0, guidance_fraction=1.0,
               pose_weight=1.0, face_weight=1.0, lip_weight=1.0, motion_frames=2)


def test_sampler_with_comfy_vae_makes_the_frames_of_the_diffusers_vae(nodes, models_root, sd_vae, conditions):
    with_folder = load_tiny_model(nodes, vae=f"vae/{SD_VAE_NAME}")
    with_comfy_vae = load_tiny_model(nodes, vae="vae/tiny_vae", vae_model=_comfy_vae(f"{SD_VAE_NAME}.safetensors"))
    assert with_comfy_vae.vae_patcher is with_comfy_vae.vae.patcher  # ComfyUI's VAE keeps its own memory management
    expected = run(nodes["EmoCASTSampler"], model=with_folder, **conditions, **SAMPLER).result[0]
    frames = run(nodes["EmoCASTSampler"], model=with_comfy_vae, **conditions, **SAMPLER).result[0]
    # Two clips of 4 frames: the second continues from frames re-encoded by the VAE, so encode and decode
    # both count. The VAEs agree to ~1e-5 (see above); the network, one step, does not amplify that much,
    # but the reference features pass through upstream's float16 bank, where that difference can flip a
    # float16 rounding (seen: 1.06e-3 on one pixel with ATEN_CPU_CAPABILITY=avx2), so the float16-bank
    # tolerance applies.
    assert frames.shape == expected.shape == (5, 64, 64, 3)
    assert_close_to_official("frames with ComfyUI's VAE", frames, expected, FLOAT16_BANK)


# --- ComfyUI's CLIP -------------------------------------------------------------------------------------

CLIP_L_FILE = ccm.CLIP_L
PROMPTS = ["A person is talking with happy emotion.", ""]


@pytest.fixture(scope="module")
def clip_l_file(models_root):
    """The full-size CLIP-L text tower, random weights (see `comfy_core_model_files`)."""
    return ccm.write_clip_l(models_root / "text_encoders" / CLIP_L_FILE)


@pytest.fixture(scope="module")
def comfy_clip(clip_l_file):
    import nodes as comfy_nodes

    (clip,) = comfy_nodes.CLIPLoader().load_clip(CLIP_L_FILE, type="stable_diffusion")
    return clip


@pytest.fixture(scope="module")
def upstream_states(pack, clip_l_file):
    """What EmoCAST was conditioned on: transformers' CLIP last_hidden_state, padding masked (float32)."""
    from emocast_core.conditioning.emotion import EmotionTextEncoder

    tokenizer = sys.modules["emocast_pack.nodes.paths"].comfy_sd1_tokenizer()
    encoder = EmotionTextEncoder.from_pretrained(clip_l_file, tokenizer)
    return encoder.encode(PROMPTS), encoder.tokenize(PROMPTS)["attention_mask"].bool()


def test_text_encoder_from_comfy_clip_gives_upstreams_hidden_states(nodes, comfy_clip, upstream_states):
    expected, _ = upstream_states
    loaded = run(nodes["EmoCASTTextEncoderLoader"], text_encoder="text_encoders/clip_l.safetensors", tokenizer="auto",
                 clip=comfy_clip).result[0]
    assert loaded.encoder.dtype == mm.text_encoder_dtype(mm.text_encoder_device())  # as for the text_encoder file
    states = loaded.encoder.to(dtype=torch.float32).encode(PROMPTS)
    assert states.shape == expected.shape == (2, 77, 768)
    # The same (float16-stored) weights through the same transformers model, float32 on the CPU.
    torch.testing.assert_close(states, expected, rtol=1e-5, atol=1e-5)
    emotion = run(nodes["EmoCASTEmotionEncode"], text_encoder=loaded, preset="happy", text="", intensity=1.0).result[0]
    assert emotion.keyframe_tokens.shape == (1, 77, 768) and emotion.uncond_tokens.shape == (1, 77, 768)


def test_comfy_clips_own_encode_differs_only_on_the_padding(comfy_clip, upstream_states):
    """Why the loader runs the CLIP's weights itself instead of calling ComfyUI's encode: ComfyUI encodes
    SD1.5 prompts without the padding mask, so the tokens of the prompt agree and the padding does not."""
    expected, prompt_positions = upstream_states
    for index, prompt in enumerate(PROMPTS):
        comfy_states = comfy_clip.encode_from_tokens(comfy_clip.tokenize(prompt))
        assert comfy_states.shape == (1, 77, 768)
        real = prompt_positions[index]
        torch.testing.assert_close(comfy_states[0, real].float(), expected[index, real], rtol=1e-4, atol=1e-4)
        padding_gap = (comfy_states[0, ~real].float() - expected[index, ~real]).abs().max()
        assert padding_gap > 1e-2, "ComfyUI now masks the padding: its encode could be used directly"


def test_text_encoder_refuses_a_clip_without_a_clip_l_tower(nodes, models_root):
    class NotClip:
        def get_sd(self):
            return {"transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 3)}

    with pytest.raises(ValueError, match="clip: .*no CLIP text tower"):
        run(nodes["EmoCASTTextEncoderLoader"], text_encoder="text_encoders/clip_l.safetensors", tokenizer="auto",
            clip=NotClip())


# --- ComfyUI's AUDIO_ENCODER ----------------------------------------------------------------------------

W2V_NAME = ccm.WAV2VEC2_BASE
# Relative L2 difference per layer from upstream's features, measured 0.30-0.33 on this random wav2vec2-base.
RELATIVE_BOUND = 0.5


@pytest.fixture(scope="module")
def wav2vec2_base(models_root):
    """wav2vec2-base, random weights (see `comfy_core_model_files`)."""
    return ccm.write_wav2vec2_base(models_root / "audio_encoders")


@pytest.fixture(scope="module")
def comfy_audio_encoder(wav2vec2_base):
    from comfy_extras.nodes_audio_encoder import AudioEncoderLoader

    return AudioEncoderLoader.execute(f"{W2V_NAME}.safetensors").result[0]


def _speech(models_root, seconds: float = 0.6) -> dict:
    path = models_root.parent / "input" / "w2v_speech.wav"
    cf.write_speech(path, seconds, sample_rate=16000)
    import wave

    import numpy as np

    with wave.open(str(path)) as handle:
        samples = np.frombuffer(handle.readframes(handle.getnframes()), "<i2").astype(np.float32) / 32768
    return {"waveform": torch.from_numpy(samples)[None, None], "sample_rate": 16000}


def test_audio_features_from_comfy_audio_encoder_differ_from_upstream_by_a_bounded_amount(
        nodes, models_root, wav2vec2_base, comfy_audio_encoder):
    from emocast_core.conditioning.audio import AudioEncoder, features_from_native_rate
    from emocast_core.conditioning.audio_decode import load_audio
    from transformers import Wav2Vec2Model

    loaded = run(nodes["EmoCASTAudioEncoderLoader"], wav2vec2="audio_encoders/tiny_wav2vec2", precision="fp32",
                 vocal_separator="none", comfy_audio_encoder=comfy_audio_encoder).result[0]
    audio = _speech(models_root)
    features, _, frame_count, _ = run(nodes["EmoCASTAudioFeatures"], audio_encoder=loaded, audio=audio, fps=25.0,
                                      start_time=0.0, duration=0.0, separate_vocals=False, clip_length=8).result
    upstream = AudioEncoder.from_pretrained(wav2vec2_base).encode(load_audio(audio), fps=25.0, clip_length=8)
    ours = features.features
    assert frame_count == upstream.num_frames == 15 and ours.features.shape == upstream.features.shape == (16, 12, 768)
    # Per layer, the relative L2 difference between interpolating after the transformer (ComfyUI's encoder)
    # and before it (upstream). Measured on this random wav2vec2-base: see docs/comfyui.md; the bounds are
    # that measurement with a margin, and a floor that shows the two are not the same computation.
    difference = (ours.features.float() - upstream.features.float()).norm(dim=(0, 2))
    relative = difference / upstream.features.float().norm(dim=(0, 2))
    print("relative difference per layer:", [round(float(value), 4) for value in relative])
    assert relative.max() < RELATIVE_BOUND and relative.min() > 1e-3
    # ... and that difference is the interpolation order alone: transformers' wav2vec2 run at its own rate and
    # interpolated the same way gives ComfyUI's numbers. ComfyUI stores the encoder's weights in its text-encoder
    # dtype (float16 here), so the reference gets the same rounded weights; what is left is ComfyUI computing
    # parts of the encoder in that dtype: float16 rounding (~5e-4 relative) through 12 layers, far below the
    # 0.3 of the interpolation order.
    plain = Wav2Vec2Model.from_pretrained(wav2vec2_base).eval()
    plain.to(comfy_audio_encoder.dtype).float()
    with torch.no_grad():
        after_transformer = features_from_native_rate(
            lambda values: plain(values, output_hidden_states=True).hidden_states, load_audio(audio), fps=25.0, clip_length=8)
    torch.testing.assert_close(ours.features.float(), after_transformer.features, rtol=5e-3, atol=5e-3)


def test_audio_encoder_refuses_a_whisper_style_encoder(nodes):
    class Whisper:
        model, patcher = object(), None

    with pytest.raises(ValueError, match="comfy_audio_encoder: .*wav2vec2-base"):
        run(nodes["EmoCASTAudioEncoderLoader"], wav2vec2="audio_encoders/tiny_wav2vec2", precision="fp32",
            vocal_separator="none", comfy_audio_encoder=Whisper())
