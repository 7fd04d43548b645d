"""Checkpoint loading, conversion and their error messages, on the official tiny network."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from emocast_core.checkpoint import (
    CheckpointError,
    convert_checkpoint,
    load_emocast_net,
    load_emocast_weights,
    load_state_dict,
    read_checkpoint_config,
    read_checkpoint_metadata,
)
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet

REPO_ROOT = Path(__file__).resolve().parents[1]
EMOCAST_ONLY = ("attn_audioemo", "postnorm_audioemo", "to_k_ip", "to_v_ip")


@pytest.fixture(scope="module")
def tiny_config(oracle_dir) -> EmoCASTConfig:
    return EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json")


@pytest.fixture(scope="module")
def tiny_weights(oracle_dir) -> dict:
    return load_state_dict(oracle_dir / "tiny_net.safetensors")


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory, tiny_weights) -> Path:
    path = tmp_path_factory.mktemp("pth") / "net.pth"
    torch.save(tiny_weights, path)
    return path


def _meta_net(config: EmoCASTConfig) -> EmoCASTNet:
    return EmoCASTNet.build(config, device="meta")


def _assert_same_tensors(loaded: dict, expected: dict, dtype=None):
    assert loaded.keys() == expected.keys()
    for key, tensor in expected.items():
        want = tensor if dtype is None else tensor.to(dtype)
        assert loaded[key].dtype == want.dtype, key
        assert torch.equal(loaded[key], want), key


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


def test_pth_to_safetensors_fp32_is_bit_exact(tmp_path, tiny_pth, tiny_weights, tiny_config):
    dst = convert_checkpoint(tiny_pth, tmp_path / "net.safetensors", dtype="fp32", config=tiny_config)
    _assert_same_tensors(load_state_dict(dst), tiny_weights)
    metadata = read_checkpoint_metadata(dst)
    assert metadata["format"] == "emocast-net"
    assert metadata["dtype"] == "float32"
    assert read_checkpoint_config(dst) == tiny_config
    assert "upstream" not in json.loads(metadata["config"])  # run-time switches are not stored
    assert sorted(os.listdir(tmp_path)) == ["net.safetensors"]  # no temporary left behind


def test_fp16_conversion_halves_the_file_and_equals_a_cast(tmp_path, tiny_pth, tiny_weights, tiny_config):
    dst = convert_checkpoint(tiny_pth, tmp_path / "net_fp16.safetensors", dtype="fp16", config=tiny_config)
    _assert_same_tensors(load_state_dict(dst), tiny_weights, torch.float16)
    assert read_checkpoint_metadata(dst)["dtype"] == "float16"
    ratio = dst.stat().st_size / tiny_pth.stat().st_size
    assert 0.45 <= ratio <= 0.55


def test_bf16_conversion_and_self_describing_load(tmp_path, tiny_pth, tiny_weights, tiny_config):
    dst = convert_checkpoint(tiny_pth, tmp_path / "net_bf16.safetensors", dtype="bf16", config=tiny_config)
    _assert_same_tensors(load_state_dict(dst), tiny_weights, torch.bfloat16)
    net = load_emocast_net(dst)  # no config given: the one in the metadata
    assert net.config.unet == tiny_config.unet
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    assert not net.training


def test_load_emocast_net_casts_per_tensor_and_leaves_nothing_on_meta(tiny_pth, tiny_weights, tiny_config):
    net = load_emocast_net(tiny_pth, tiny_config, dtype="fp16")
    tensors = dict(net.state_dict())
    assert all(not t.is_meta and t.dtype == torch.float16 for t in tensors.values())
    _assert_same_tensors(tensors, tiny_weights, torch.float16)
    assert not net.training


def test_load_state_dict_options(tmp_path, tiny_weights):
    small = {key: tiny_weights[key] for key in list(tiny_weights)[:8]}
    legacy = tmp_path / "legacy.pt"
    torch.save(small, legacy, _use_new_zipfile_serialization=False)  # cannot be memory-mapped
    _assert_same_tensors(load_state_dict(legacy), small)
    for wrapper in ("state_dict", "module", "net"):
        wrapped = tmp_path / f"{wrapper}.ckpt"
        torch.save({wrapper: small, "epoch": 3}, wrapped)
        _assert_same_tensors(load_state_dict(wrapped), small)
    _assert_same_tensors(load_state_dict(legacy, dtype="bf16"), small, torch.bfloat16)


def test_shared_and_strided_tensors_are_converted(tmp_path, tiny_weights, tiny_config):
    weights = dict(tiny_weights)
    key_a, key_b = [key for key in weights if key.endswith("norm1.bias") and weights[key].shape == (32,)][:2]
    weights[key_b] = weights[key_a]  # two names, one storage
    square = next(key for key, t in weights.items() if t.ndim == 2 and t.shape[0] == t.shape[1])
    weights[square] = weights[square].t().contiguous().t()  # a non-contiguous view
    src = tmp_path / "shared.pth"
    torch.save(weights, src)
    dst = convert_checkpoint(src, tmp_path / "shared.safetensors", dtype=None, config=tiny_config)
    _assert_same_tensors(load_state_dict(dst), weights)


def test_weights_load_into_an_allocated_net_in_its_dtype(tiny_pth, tiny_weights, tiny_config):
    net = EmoCASTNet.build(tiny_config, device="cpu", dtype=torch.bfloat16)
    report = load_emocast_weights(net, tiny_pth)
    assert report.matches
    _assert_same_tensors(dict(net.state_dict()), tiny_weights, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Bad files: one error type, each message naming the file
# ---------------------------------------------------------------------------------------------


def _raises(path, *fragments, load=load_state_dict):
    with pytest.raises(CheckpointError) as caught:
        load(path)
    message = str(caught.value)
    assert str(path) in message
    # Look for the fragments in what the message says about the file, not in its path: the test's
    # folder and file names ("test_truncated_files0", "empty.pth") would otherwise match them.
    said = message.replace(str(path), "<path>")
    for fragment in fragments:
        assert fragment in said, message
    return message


def test_missing_empty_and_foreign_files(tmp_path):
    _raises(tmp_path / "absent.pth", "file not found")
    (tmp_path / "empty.pth").write_bytes(b"")
    _raises(tmp_path / "empty.pth", "the file is empty")
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    _raises(tmp_path / "notes.pth", "not a checkpoint", "text file")
    (tmp_path / "photo.safetensors").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(200))
    _raises(tmp_path / "photo.safetensors", "not a checkpoint", "JPEG")
    (tmp_path / "lfs.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 5\n")
    _raises(tmp_path / "lfs.safetensors", "Git LFS pointer")
    _raises(tmp_path, "folder")


def test_truncated_files(tmp_path):
    tensors = {"weight": torch.randn(64, 64)}
    whole = tmp_path / "whole.safetensors"
    save_file(tensors, whole)
    data = whole.read_bytes()
    (tmp_path / "cut_header.safetensors").write_bytes(data[:40])
    _raises(tmp_path / "cut_header.safetensors", "truncated")
    (tmp_path / "cut_data.safetensors").write_bytes(data[:-1000])
    _raises(tmp_path / "cut_data.safetensors", "truncated")
    torch.save(tensors, tmp_path / "whole.pth")
    data = (tmp_path / "whole.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "cut.pth", "truncated or corrupt")
    torch.save(tensors, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "cut_legacy.pth").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "cut_legacy.pth", "truncated or corrupt")


CALLS = []


def _side_effect(*args):
    CALLS.append(args)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (_side_effect, ("unpickled",))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickle_with_code_is_refused(tmp_path, zip_format):
    path = tmp_path / "payload.pth"
    torch.save({"weight": torch.zeros(2), "extra": _RunsCodeWhenUnpickled()}, path, _use_new_zipfile_serialization=zip_format)
    _raises(path, "refused: the file contains code, not just tensors", "_side_effect")
    assert CALLS == []


def test_non_tensor_entries_are_rejected(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"weight": torch.zeros(2), "step": 10}, path)
    _raises(path, "not a plain state dict", "'step'")


# ---------------------------------------------------------------------------------------------
# Checkpoints of other models
# ---------------------------------------------------------------------------------------------


def test_hallo_like_checkpoint(tmp_path, tiny_weights, tiny_config):
    hallo = {key: t for key, t in tiny_weights.items() if not any(part in key for part in EMOCAST_ONLY)}
    path = tmp_path / "hallo.pth"
    torch.save(hallo, path)
    missing = len(tiny_weights) - len(hallo)
    message = _raises(path, f"{missing} missing, 0 unexpected, 0 shape-mismatched", "Hallo checkpoint",
                      load=lambda p: load_emocast_weights(_meta_net(tiny_config), p))
    assert "attn_audioemo" in message or "to_k_ip" in message  # first missing keys are listed
    report = load_emocast_weights(_meta_net(tiny_config), hallo, strict=False)
    assert len(report.missing) == missing and not report.unexpected


def test_sd15_unet_checkpoint(tmp_path, tiny_weights, tiny_config):
    prefix = "reference_unet."
    unet = {key[len(prefix):]: t for key, t in tiny_weights.items() if key.startswith(prefix)}
    path = tmp_path / "unet.safetensors"
    save_file(unet, path)
    _raises(path, "SD1.5 UNet", "reference_unet.", load=lambda p: load_emocast_weights(_meta_net(tiny_config), p))


def test_other_model_size(tiny_pth):
    # The tiny file against the default (SD1.5-size) architecture.
    _raises(tiny_pth, "shape-mismatched", "another model size", load=load_emocast_net)


def test_shape_mismatch_fails_even_when_not_strict(tiny_weights, tiny_config):
    weights = dict(tiny_weights)
    weights["imageproj.norm.weight"] = torch.ones(3)
    with pytest.raises(CheckpointError, match="1 shape-mismatched"):
        load_emocast_weights(_meta_net(tiny_config), weights, strict=False)


def test_failed_conversion_leaves_destination_untouched(tmp_path, tiny_pth, tiny_config, monkeypatch):
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"previous")
    with pytest.raises(CheckpointError):
        convert_checkpoint(tiny_pth, dst)  # SD1.5 size by default: the tiny file does not fit
    assert dst.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]

    # A write that fails half-way (disk full) leaves neither a partial file nor a temporary behind.
    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half of the tensors")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("emocast_core.checkpoint.save_file", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(tiny_pth, dst, config=tiny_config)
    assert dst.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["out.safetensors"]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "emocast_core", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_convert(tmp_path, tiny_pth, tiny_weights, oracle_dir):
    dst = tmp_path / "tiny_fp16.safetensors"
    result = _cli("convert", tiny_pth, dst, "--dtype", "fp16", "--config", oracle_dir / "tiny_config.json")
    assert result.returncode == 0, result.stderr
    assert "MB" in result.stdout and str(dst) in result.stdout
    _assert_same_tensors(load_state_dict(dst), tiny_weights, torch.float16)


def test_cli_convert_reports_errors(tmp_path, tiny_pth):
    result = _cli("convert", tiny_pth, tmp_path / "out.safetensors")
    assert result.returncode == 1
    assert "another model size" in result.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_help():
    result = _cli("convert", "--help")
    assert result.returncode == 0 and "--dtype" in result.stdout
