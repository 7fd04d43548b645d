"""Model folder layout: resolution, alternative locations and the single "missing files" error; and the
single places that the command line, the Python API and the nodes share (layouts, tokenizer search, dtypes)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from emocast_core.devices import DTYPE_NAMES, PRECISION_CHOICES, dtype_label, dtype_named, pick_dtype
from emocast_core.loading import checkpoint_config
from emocast_core.model_files import (
    CHECKPOINT_CONFIG_FILES,
    COMPONENTS,
    LAYOUTS,
    MODEL_TABLE,
    UNET_CONFIG_FILE,
    EmoCASTModelPaths,
    MissingModelFilesError,
    checkpoint_config_files,
    is_tokenizer_folder,
    placement,
    resolve_model_paths,
    tokenizer_candidates,
)
from emocast_core.models.config import EmoCASTConfig

# The required files of a complete tree in the preferred (ComfyUI) locations.
REQUIRED_FILES = (
    "emocast/net.pth",
    "vae/sd-vae-ft-mse/config.json",
    "vae/sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
    "text_encoders/clip_l.safetensors",
    "text_encoders/clip_l_tokenizer/vocab.json",
    "text_encoders/clip_l_tokenizer/merges.txt",
    "audio_encoders/wav2vec2-base-960h/config.json",
    "audio_encoders/wav2vec2-base-960h/model.safetensors",
    "audio_encoders/wav2vec2-base-960h/preprocessor_config.json",
    "insightface/models/antelopev2/scrfd_10g_bnkps.onnx",
    "insightface/models/antelopev2/glintr100.onnx",
)
OPTIONAL_FILES = (
    "emocast/unet_config.json",
    "insightface/models/antelopev2/2d106det.onnx",
    "emocast/face_landmarker_v2_with_blendshapes.task",
    "emocast/audio_separator/Kim_Vocal_2.onnx",
)


def _make_tree(root: Path, files) -> Path:
    for relative_path in files:
        path = root / relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return root


def test_complete_tree_resolves_every_file(tmp_path):
    _make_tree(tmp_path, REQUIRED_FILES + OPTIONAL_FILES)
    paths = resolve_model_paths(tmp_path)
    assert isinstance(paths, EmoCASTModelPaths)
    assert paths.checkpoint == tmp_path / "emocast/net.pth"
    assert paths.unet_config == tmp_path / "emocast/unet_config.json"
    assert paths.vae_dir == tmp_path / "vae/sd-vae-ft-mse"
    assert paths.text_encoder_weights == tmp_path / "text_encoders/clip_l.safetensors"
    assert paths.text_encoder_config is None
    assert paths.tokenizer_dir == tmp_path / "text_encoders/clip_l_tokenizer"
    assert paths.audio_encoder_dir == tmp_path / "audio_encoders/wav2vec2-base-960h"
    assert paths.face_detector == tmp_path / "insightface/models/antelopev2/scrfd_10g_bnkps.onnx"
    assert paths.face_recognizer == tmp_path / "insightface/models/antelopev2/glintr100.onnx"
    assert paths.face_landmarks_2d106 == tmp_path / "insightface/models/antelopev2/2d106det.onnx"
    assert paths.face_landmarker_task == tmp_path / "emocast/face_landmarker_v2_with_blendshapes.task"
    assert paths.vocal_separator == tmp_path / "emocast/audio_separator/Kim_Vocal_2.onnx"


def test_optional_files_may_be_absent(tmp_path):
    paths = resolve_model_paths(_make_tree(tmp_path, REQUIRED_FILES))
    assert paths.unet_config is None
    assert paths.face_landmarks_2d106 is None
    assert paths.face_landmarker_task is None
    assert paths.vocal_separator is None


def test_three_missing_things_are_reported_in_one_error(tmp_path):
    removed = {
        "emocast/net.pth",
        "audio_encoders/wav2vec2-base-960h/preprocessor_config.json",
        "insightface/models/antelopev2/glintr100.onnx",
    }
    _make_tree(tmp_path, [f for f in REQUIRED_FILES if f not in removed])
    with pytest.raises(MissingModelFilesError) as error_info:
        resolve_model_paths(tmp_path)
    error = error_info.value
    assert {item.path for item in error.missing} == {tmp_path / f for f in removed}
    message = str(error)
    for relative_path in removed:
        assert str(tmp_path / relative_path) in message
    assert "huggingface.co/Jmaomao/EmoCAST" in message
    assert "facebook/wav2vec2-base-960h" in message
    assert "antelopev2" in message
    assert "3 required model files" in message
    assert isinstance(error, FileNotFoundError)


def test_empty_root_lists_every_required_component(tmp_path):
    with pytest.raises(MissingModelFilesError) as error_info:
        resolve_model_paths(tmp_path)
    components = {item.component for item in error_info.value.missing}
    assert components == {"checkpoint", "vae", "text_encoder", "audio_encoder", "face"}
    message = str(error_info.value)
    for source in ("stabilityai/sd-vae-ft-mse", "openai/clip-vit-large-patch14", "Jmaomao/EmoCAST"):
        assert source in message
    assert str(tmp_path / "text_encoders" / "clip_l_tokenizer" / "vocab.json") in message


def test_require_limits_what_must_exist(tmp_path):
    _make_tree(tmp_path, ["vae/sd-vae-ft-mse/config.json", "vae/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"])
    paths = resolve_model_paths(tmp_path, require=("vae",))
    assert paths.vae_dir == tmp_path / "vae/sd-vae-ft-mse"
    assert paths.checkpoint is None and paths.face_detector is None
    with pytest.raises(MissingModelFilesError, match="Kim_Vocal_2.onnx"):
        resolve_model_paths(tmp_path, require=("vae", "vocal_separator"))
    with pytest.raises(ValueError, match="unknown"):
        resolve_model_paths(tmp_path, require=("vea",))


def test_alternative_locations_are_found(tmp_path):
    _make_tree(tmp_path, [
        "emocast/net.safetensors",
        "emocast/sd-vae-ft-mse/config.json",
        "emocast/sd-vae-ft-mse/diffusion_pytorch_model.safetensors",
        "text_encoders/clip-vit-large-patch14/config.json",
        "text_encoders/clip-vit-large-patch14/model.safetensors",
        "text_encoders/clip-vit-large-patch14/vocab.json",
        "text_encoders/clip-vit-large-patch14/merges.txt",
        "emocast/wav2vec2-base-960h/config.json",
        "emocast/wav2vec2-base-960h/pytorch_model.bin",
        "emocast/wav2vec2-base-960h/preprocessor_config.json",
        "emocast/face_analysis/models/scrfd_10g_bnkps.onnx",
        "emocast/face_analysis/models/glintr100.onnx",
        "emocast/face_analysis/models/2d106det.onnx",
        "emocast/face_analysis/models/face_landmarker_v2_with_blendshapes.task",
    ])  # fmt: skip
    paths = resolve_model_paths(tmp_path)
    assert paths.checkpoint == tmp_path / "emocast/net.safetensors"
    assert paths.vae_dir == tmp_path / "emocast/sd-vae-ft-mse"
    hf_clip = tmp_path / "text_encoders/clip-vit-large-patch14"
    assert (paths.text_encoder_weights, paths.text_encoder_config, paths.tokenizer_dir) == (
        hf_clip / "model.safetensors", hf_clip / "config.json", hf_clip)
    assert paths.audio_encoder_dir == tmp_path / "emocast/wav2vec2-base-960h"
    face_dir = tmp_path / "emocast/face_analysis/models"
    assert paths.face_detector == face_dir / "scrfd_10g_bnkps.onnx"
    assert paths.face_landmarks_2d106 == face_dir / "2d106det.onnx"
    assert paths.face_landmarker_task == face_dir / "face_landmarker_v2_with_blendshapes.task"


def test_nested_antelopev2_zip_layout_is_found(tmp_path):
    files = [f.replace("antelopev2/", "antelopev2/antelopev2/") for f in REQUIRED_FILES]
    paths = resolve_model_paths(_make_tree(tmp_path, files))
    assert paths.face_recognizer == tmp_path / "insightface/models/antelopev2/antelopev2/glintr100.onnx"


def test_safetensors_checkpoint_is_preferred_over_pth(tmp_path):
    _make_tree(tmp_path, REQUIRED_FILES + ("emocast/net.safetensors",))
    assert resolve_model_paths(tmp_path).checkpoint == tmp_path / "emocast/net.safetensors"


def test_a_single_differently_named_checkpoint_is_accepted(tmp_path):
    files = [f for f in REQUIRED_FILES if f != "emocast/net.pth"]
    _make_tree(tmp_path, files + ["emocast/emocast_fp16.safetensors", "emocast/audio_separator/Kim_Vocal_2.onnx"])
    assert resolve_model_paths(tmp_path).checkpoint == tmp_path / "emocast/emocast_fp16.safetensors"


def test_several_unnamed_checkpoints_are_ambiguous(tmp_path):
    files = [f for f in REQUIRED_FILES if f != "emocast/net.pth"]
    _make_tree(tmp_path, files + ["emocast/a.safetensors", "emocast/b.pth"])
    with pytest.raises(MissingModelFilesError, match="several candidate checkpoints") as error_info:
        resolve_model_paths(tmp_path)
    assert [item.component for item in error_info.value.missing] == ["checkpoint"]
    # Naming one resolves the ambiguity.
    assert resolve_model_paths(tmp_path, checkpoint_name="b.pth").checkpoint == tmp_path / "emocast/b.pth"


def test_named_checkpoint_that_is_absent_is_reported(tmp_path):
    _make_tree(tmp_path, REQUIRED_FILES)
    with pytest.raises(MissingModelFilesError) as error_info:
        resolve_model_paths(tmp_path, checkpoint_name="other.safetensors")
    assert [item.path for item in error_info.value.missing] == [tmp_path / "emocast/other.safetensors"]


def test_partial_hf_clip_folder_reports_what_that_folder_lacks(tmp_path):
    files = [f for f in REQUIRED_FILES if not f.startswith("text_encoders/")]
    _make_tree(tmp_path, files + ["text_encoders/clip-vit-large-patch14/config.json",
                                  "text_encoders/clip-vit-large-patch14/vocab.json"])  # fmt: skip
    with pytest.raises(MissingModelFilesError) as error_info:
        resolve_model_paths(tmp_path)
    hf_clip = tmp_path / "text_encoders/clip-vit-large-patch14"
    assert {item.path for item in error_info.value.missing} == {hf_clip / "model.safetensors", hf_clip / "merges.txt"}


def test_tokenizer_falls_back_to_a_default_folder(tmp_path):
    models = tmp_path / "models"
    _make_tree(models, [f for f in REQUIRED_FILES if "clip_l_tokenizer" not in f])
    shipped = _make_tree(tmp_path / "shipped_tokenizer", ["vocab.json", "merges.txt"])
    assert resolve_model_paths(models, default_tokenizer_dir=shipped).tokenizer_dir == shipped
    with pytest.raises(MissingModelFilesError, match="merges.txt"):
        resolve_model_paths(models)


def test_several_roots_are_searched_in_order(tmp_path):
    main, extra = tmp_path / "main", tmp_path / "extra"
    _make_tree(main, [f for f in REQUIRED_FILES if not f.startswith("emocast/")])
    _make_tree(extra, ["emocast/net.pth", "vae/sd-vae-ft-mse/config.json",
                       "vae/sd-vae-ft-mse/diffusion_pytorch_model.safetensors"])  # fmt: skip
    paths = resolve_model_paths([main, str(extra)])
    assert paths.checkpoint == extra / "emocast/net.pth"
    assert paths.vae_dir == main / "vae/sd-vae-ft-mse"


def test_model_table_covers_every_component_with_sizes_and_sources():
    assert set(COMPONENTS) >= {"checkpoint", "vae", "text_encoder", "audio_encoder", "face", "vocal_separator"}
    sizes = {row.file: row.size_mb for row in MODEL_TABLE}
    assert sizes["net.pth"] == 4850
    assert sizes["glintr100.onnx"] == 261
    assert sizes["Kim_Vocal_2.onnx"] == 66.8
    assert all(row.source and row.folder and row.size_mb > 0 for row in MODEL_TABLE)



# --- one source of truth ------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def test_architecture_beside_a_checkpoint_in_the_documented_order(tmp_path):
    checkpoint = tmp_path / "emocast" / "mine.pth"
    checkpoint.parent.mkdir()
    torch.save({"weight": torch.zeros(1)}, checkpoint)  # a .pth stores no architecture
    assert checkpoint_config_files(checkpoint) == [checkpoint.with_suffix(".json"), checkpoint.parent / "config.json",
                                                   checkpoint.parent / "unet_config.json"]
    assert checkpoint_config(checkpoint) == EmoCASTConfig.sd15()  # nothing beside it
    # A unet_config.json beside it is read without being named (the ComfyUI loader relies on this) ...
    (checkpoint.parent / "unet_config.json").write_text(json.dumps({"cross_attention_dim": 1024, "sample_size": 96}))
    assert checkpoint_config(checkpoint).unet.cross_attention_dim == 1024
    # ... but a resolved one named by the caller comes first.
    named = tmp_path / "elsewhere" / "unet_config.json"
    named.parent.mkdir()
    named.write_text(json.dumps({"cross_attention_dim": 512}))
    assert checkpoint_config(checkpoint, named).unet.cross_attention_dim == 512


def test_tokenizer_search_order_and_what_counts_as_a_tokenizer(tmp_path):
    folder = tmp_path / "text_encoders"
    single_file = _make_tree(tmp_path, ["text_encoders/clip_l_fp16.safetensors"]) / "text_encoders" / "clip_l_fp16.safetensors"
    assert tokenizer_candidates(single_file) == [folder / "clip_l_fp16_tokenizer", folder / "clip_l_tokenizer",
                                                 folder / "tokenizer"]
    hf_folder = folder / "clip-vit-large-patch14"
    assert tokenizer_candidates(hf_folder) == [hf_folder, hf_folder / "tokenizer", folder / "tokenizer"]
    assert not is_tokenizer_folder(_make_tree(tmp_path / "half", ["vocab.json"]))
    assert is_tokenizer_folder(_make_tree(tmp_path / "bpe", ["vocab.json", "merges.txt"]))
    assert is_tokenizer_folder(_make_tree(tmp_path / "fast", ["tokenizer.json"]))


def test_placement_phrases_come_from_the_model_table():
    assert placement("checkpoint") == "net.pth in models/emocast/"
    assert placement("face") == "scrfd_10g_bnkps.onnx + glintr100.onnx in models/insightface/models/antelopev2/"
    assert placement("text_encoder") == ("clip_l.safetensors in models/text_encoders/ and vocab.json + merges.txt "
                                         "in models/text_encoders/clip_l_tokenizer/")
    with pytest.raises(ValueError, match="unknown model component 'vea'"):
        placement("vea")


def test_the_table_and_the_layouts_agree():
    """Every file of the user-facing table is one the resolver looks for, in the table's folder."""
    layout_files = {name for layout in LAYOUTS.values() for names in layout.files for name in names}
    for layout_name, component in (("vae", "vae"), ("audio_encoder", "audio_encoder"), ("face", "face")):
        for row in (row for row in MODEL_TABLE if row.component == component):
            assert row.folder in LAYOUTS[layout_name].folders, row
            assert {name.strip() for name in row.file.split("+")} <= layout_files, row
    assert next(row for row in MODEL_TABLE if row.component == "checkpoint").folder in LAYOUTS["checkpoint"].folders


def _string_constants(path: Path) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def test_the_nodes_hold_no_layout_of_their_own():
    """nodes/ may quote file names in tooltips and messages, but no bare file name or file ending of a
    layout: those come from `model_files.LAYOUTS`, so the command line and the nodes cannot drift apart."""
    layout_names = {name for layout in LAYOUTS.values() for names in layout.files for name in names}
    layout_names |= {suffix for layout in LAYOUTS.values() for suffix in layout.suffixes}
    layout_names |= {*CHECKPOINT_CONFIG_FILES, UNET_CONFIG_FILE, "tokenizer.json", "clip_l_tokenizer"}
    for path in sorted((REPO / "nodes").glob("*.py")):
        assert not _string_constants(path) & layout_names, path.name


def _dtype_maps(path: Path) -> list[int]:
    """Line numbers of dict displays that map to or from torch dtypes."""
    def is_dtype(node) -> bool:
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "torch"
                and isinstance(getattr(torch, node.attr, None), torch.dtype))

    return [node.lineno for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Dict)
            and sum(is_dtype(item) for item in (*node.keys, *node.values) if item is not None) >= 2]


def test_precision_names_and_dtypes_are_mapped_in_one_place():
    found = {}
    for folder in ("emocast_core", "nodes"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if _dtype_maps(path):
                found[str(path.relative_to(REPO))] = _dtype_maps(path)
    assert list(found) == ["emocast_core/devices.py"], found
    assert PRECISION_CHOICES == ("auto", *DTYPE_NAMES)
    assert dtype_named("Float16") is dtype_named("half") is torch.float16 and dtype_label(torch.bfloat16) == "bfloat16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'; choose one of fp16, bf16, fp32"):
        dtype_named("fp8")


def test_auto_precision_defers_to_the_host_choice():
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu) is torch.float32
    assert pick_dtype("auto", torch.device("cuda")) is torch.float16  # a device object needs no GPU
    assert pick_dtype("auto", cpu, auto=torch.bfloat16) is torch.bfloat16  # e.g. ComfyUI's memory manager
    assert pick_dtype("fp16", cpu, auto=torch.bfloat16) is torch.float16  # a named precision wins
    with pytest.raises(ValueError, match="unknown precision 'half'; choose auto, fp16, bf16, fp32"):
        pick_dtype("half", cpu)
