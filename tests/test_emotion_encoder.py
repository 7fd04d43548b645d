"""EmotionTextEncoder: offline loading in both layouts and encoding exactly as the released pipeline."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from tiny_clip import (
    TINY_HIDDEN_SIZE,
    TINY_NUM_HEADS,
    build_tiny_text_model,
    save_comfy_clip_l,
    write_tiny_encoder_files,
    write_tiny_tokenizer,
)

from emocast_core.conditioning.emotion import EmotionTextEncoder, PromptTruncationWarning, _config_from_text_tower


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    return write_tiny_encoder_files(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="module")
def encoder(tiny_files):
    return EmotionTextEncoder.from_pretrained(tiny_files["hf_folder"])


def test_hf_folder_and_single_file_give_identical_embeddings(tiny_files, encoder):
    single = EmotionTextEncoder.from_pretrained(
        tiny_files["single_file"], tokenizer_path=tiny_files["tokenizer"], num_attention_heads=TINY_NUM_HEADS
    )
    prompts = ["A person is talking with happy emotion.", ""]
    assert torch.equal(encoder.encode(prompts), single.encode(prompts))
    assert single.text_model.config.num_hidden_layers == 2
    assert single.text_model.config.hidden_size == TINY_HIDDEN_SIZE


@pytest.mark.parametrize(
    ("prefix", "nested"),
    [
        ("clip_l.transformer.", True),
        ("text_encoders.clip_l.transformer.", True),
        ("cond_stage_model.transformer.", True),
        ("cond_stage_model.transformer.", False),
        ("conditioner.embedders.0.transformer.", True),
    ],
)
def test_single_file_key_prefixes(tmp_path, tiny_files, encoder, prefix, nested):
    file = save_comfy_clip_l(build_tiny_text_model(), tmp_path / "checkpoint.safetensors", prefix=prefix, nested=nested)
    loaded = EmotionTextEncoder.from_pretrained(file, tokenizer_path=tiny_files["tokenizer"], num_attention_heads=4)
    assert torch.equal(loaded.encode(["sad"]), encoder.encode(["sad"]))


def test_single_file_finds_tokenizer_beside_it_and_needs_heads_for_odd_widths(tmp_path, encoder):
    write_tiny_tokenizer(tmp_path / "clip_l_tokenizer")
    file = save_comfy_clip_l(build_tiny_text_model(), tmp_path / "clip_l.safetensors")
    # Head count is invisible in tensor shapes; the CLIP rule (64-wide heads) cannot split width 32.
    with pytest.raises(ValueError, match="num_attention_heads"):
        EmotionTextEncoder.from_pretrained(file)
    loaded = EmotionTextEncoder.from_pretrained(file, num_attention_heads=TINY_NUM_HEADS)
    assert torch.equal(loaded.encode(["happy"]), encoder.encode(["happy"]))


def test_clip_l_config_is_inferred_from_tensor_shapes(encoder):
    def shaped(*shape):  # zero-memory stand-in with the right shape
        return torch.empty([1] * len(shape)).expand(*shape)

    tensors = {
        "embeddings.token_embedding.weight": shaped(49408, 768),
        "embeddings.position_embedding.weight": shaped(77, 768),
        "final_layer_norm.weight": shaped(768),
    }
    for layer in range(12):
        tensors[f"encoder.layers.{layer}.mlp.fc1.weight"] = shaped(3072, 768)
    config = _config_from_text_tower(tensors, encoder.tokenizer, None, Path("clip_l.safetensors"))
    sizes = (config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads)
    assert sizes == (49408, 768, 12, 12)
    assert (config.intermediate_size, config.max_position_embeddings, config.hidden_act) == (3072, 77, "quick_gelu")


def test_sd15_root_and_separate_tokenizer_folder(tiny_files, encoder, tmp_path):
    root = tiny_files["hf_folder"].parent
    from_root = EmotionTextEncoder.from_pretrained(root)
    assert torch.equal(from_root.encode(["angry"]), encoder.encode(["angry"]))
    other_tokenizer = write_tiny_tokenizer(tmp_path / "elsewhere")
    separate = EmotionTextEncoder.from_pretrained(tiny_files["hf_folder"], tokenizer_path=other_tokenizer)
    assert torch.equal(separate.encode(["angry"]), encoder.encode(["angry"]))


def test_full_clip_folder_like_openai_clip_vit_large_patch14(tmp_path, encoder):
    """The hub folder holds the whole CLIP (text + vision) and the tokenizer in one place."""
    from transformers import CLIPConfig, CLIPModel

    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32)
    text = encoder.text_model.config.to_dict()
    full = CLIPModel(CLIPConfig(text_config=text, vision_config=dict(vision, patch_size=16), projection_dim=32))
    text_weights = {key.removeprefix("text_model."): value for key, value in encoder.text_model.state_dict().items()}
    full.text_model.load_state_dict(text_weights)
    full.save_pretrained(tmp_path / "clip-vit-large-patch14")
    write_tiny_tokenizer(tmp_path / "clip-vit-large-patch14")
    loaded = EmotionTextEncoder.from_pretrained(tmp_path / "clip-vit-large-patch14")
    assert torch.equal(loaded.encode(["surprised"]), encoder.encode(["surprised"]))


def test_folder_without_text_weights_is_refused(tmp_path, tiny_files):
    folder = tmp_path / "wrong"
    build_tiny_text_model().save_pretrained(folder)
    from safetensors.torch import save_file

    save_file({"unrelated.weight": torch.zeros(1)}, str(folder / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks CLIP text-tower weights"):
        EmotionTextEncoder.from_pretrained(folder, tokenizer_path=tiny_files["tokenizer"])


def test_tokenizer_json_only_folder(tiny_files, encoder, tmp_path):
    encoder.tokenizer.save_pretrained(tmp_path / "tok")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "tok" / name).unlink(missing_ok=True)
    assert (tmp_path / "tok" / "tokenizer.json").is_file()
    loaded = EmotionTextEncoder.from_pretrained(tiny_files["hf_folder"], tokenizer_path=tmp_path / "tok")
    assert torch.equal(loaded.encode(["fearful"]), encoder.encode(["fearful"]))


def test_device_and_dtype_are_explicit(tiny_files):
    half = EmotionTextEncoder.from_pretrained(tiny_files["hf_folder"], device="cpu", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.device.type == "cpu"
    assert half.encode(["x"]).dtype == torch.bfloat16


def test_shapes(encoder):
    out = encoder.encode(["a", "b c", ""])
    assert out.shape == (3, 77, TINY_HIDDEN_SIZE)
    assert encoder.unconditional().shape == (1, 77, TINY_HIDDEN_SIZE)
    assert encoder.max_length == 77


def test_attention_mask_is_passed_like_the_released_pipeline(encoder):
    prompt = "A person is talking with happy emotion."
    tokens = encoder.tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    real = int(tokens["attention_mask"].sum())
    assert 0 < real < 77
    with torch.no_grad():
        with_mask = encoder.text_model(**tokens).last_hidden_state
        ids_only = encoder.text_model(input_ids=tokens["input_ids"]).last_hidden_state
    ours = encoder.encode([prompt])
    assert torch.equal(ours, with_mask)
    # Causal attention: real tokens never see padding, so they agree; padded positions differ.
    torch.testing.assert_close(ours[:, :real], ids_only[:, :real])
    assert (ours[0, real:] - ids_only[0, real:]).abs().amax(dim=-1).min() > 1e-4


def test_unconditional_is_the_empty_prompt(encoder):
    assert torch.equal(encoder.unconditional(), encoder.encode([""]))


def test_truncation_warns_with_the_number_of_dropped_tokens(encoder):
    long_prompt = " ".join(["sad"] * 30)  # 3 letters per word -> 90 tokens + start/end = 92
    with pytest.warns(PromptTruncationWarning, match=r"last 15 tokens are dropped"):
        out = encoder.encode([long_prompt])
    assert out.shape == (1, 77, TINY_HIDDEN_SIZE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode(["A person is talking with happy emotion."])  # fits: no warning


def test_missing_files_error_names_every_missing_path(tmp_path):
    folder = tmp_path / "text_encoder"
    folder.mkdir()
    with pytest.raises(FileNotFoundError) as error:
        EmotionTextEncoder.from_pretrained(folder)
    message = str(error.value)
    for expected in (
        folder / "config.json",
        folder / "model.safetensors",
        folder / "vocab.json",
        folder / "tokenizer" / "merges.txt",
        tmp_path / "tokenizer" / "tokenizer.json",
    ):
        assert str(expected) in message

    with pytest.raises(FileNotFoundError) as error:
        EmotionTextEncoder.from_pretrained(tmp_path / "clip_l.safetensors", tokenizer_path=tmp_path / "tok")
    message = str(error.value)
    assert str(tmp_path / "clip_l.safetensors") in message
    assert str(tmp_path / "tok" / "vocab.json") in message
    assert "comfy/sd1_tokenizer" in message


def test_mismatched_tokenizer_is_refused(tiny_files, tmp_path):
    big_vocab = tmp_path / "big"
    write_tiny_tokenizer(big_vocab)
    vocab = json.loads((big_vocab / "vocab.json").read_text())
    vocab.update({f"extra{index}</w>": 54 + index for index in range(10)})
    (big_vocab / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="do not belong together"):
        EmotionTextEncoder.from_pretrained(tiny_files["hf_folder"], tokenizer_path=big_vocab)


@pytest.fixture
def comfyui_sd1_tokenizer():
    import os

    comfyui_dir = os.environ.get("COMFYUI_DIR")
    # COMFYUI_DIR holds the checkout in ComfyUI/ (as the other ComfyUI tests expect); a checkout
    # given directly is accepted too.
    candidates = [Path(comfyui_dir) / sub / "comfy" / "sd1_tokenizer" for sub in ("ComfyUI", ".")] if comfyui_dir else []
    folder = next((candidate for candidate in candidates if (candidate / "vocab.json").is_file()), None)
    if folder is None:
        pytest.skip("needs COMFYUI_DIR (a folder with the ComfyUI checkout in ComfyUI/) for comfy/sd1_tokenizer")
    return folder


@pytest.mark.comfyui
def test_comfyui_sd1_tokenizer_fits_clip_l_prompts(comfyui_sd1_tokenizer):
    """ComfyUI's bundled tokenizer is the CLIP-L one; presets fit in 77 tokens with room to spare."""
    from transformers import CLIPTokenizer

    from emocast_core.conditioning.emotion_presets import EMOTION_PRESET_ALTERNATIVES, EMOTION_PRESETS

    tokenizer = CLIPTokenizer.from_pretrained(comfyui_sd1_tokenizer, local_files_only=True)
    ids = tokenizer("A person is talking with happy emotion.")["input_ids"]
    assert ids[0] == 49406 and ids[-1] == 49407 and tokenizer.pad_token_id == 49407
    for prompt in [*EMOTION_PRESETS.values(), *(p for ps in EMOTION_PRESET_ALTERNATIVES.values() for p in ps)]:
        assert len(tokenizer(prompt)["input_ids"]) <= 77
