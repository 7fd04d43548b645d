"""One guided denoiser call against the official oracle (`net_forward/` of the oracle folder).

Everything about the call (frames, sizes, levels, guidance scale, motion scales, timestep) is read
from the fixture's inputs, so any oracle set made the same way (other seeds, shapes, frame counts)
is checked the same way. Tolerances come from `tolerances` (why each is what it is is written there):
FORWARD for module outputs and the float32-bank outputs, FLOAT16_BANK for outputs with upstream's
float16 reference bank.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import load_file

from emocast_core.checkpoint import load_emocast_net, load_emocast_weights, load_state_dict
from emocast_core.guidance import GuidanceConfig, predict_guided, prepare_video_conditions, reference_features
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.net import EmoCASTNet
from tolerances import ELEMENTWISE, FLOAT16_BANK, FLOAT16_BANK_BLOCKS, FORWARD, assert_close_to_official


@dataclass
class Oracle:
    config: EmoCASTConfig
    state_dict: dict
    inputs: dict
    expected: dict
    meta: dict

    @property
    def num_frames(self) -> int:
        return self.inputs["latents"].shape[2]

    @property
    def num_levels(self) -> int:
        return sum(1 for key in self.inputs if key.startswith("full_mask."))

    def region_masks(self):
        return [[self.inputs[f"{region}_mask.{level}"] for level in range(self.num_levels)] for region in ("full", "face", "lip")]


@pytest.fixture(scope="module")
def oracle(oracle_dir) -> Oracle:
    folder = oracle_dir / "net_forward"
    return Oracle(
        config=EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json"),
        state_dict=load_state_dict(oracle_dir / "tiny_net.safetensors"),
        inputs=load_file(folder / "inputs.safetensors"),
        expected=load_file(folder / "expected.safetensors"),
        meta=json.loads((folder / "meta.json").read_text()),
    )


@pytest.fixture(scope="module")
def net(oracle_dir, oracle) -> EmoCASTNet:
    return load_emocast_net(oracle_dir / "tiny_net.safetensors", oracle.config)


def _net_with(oracle: Oracle, **switches) -> EmoCASTNet:
    """The oracle network with some `UpstreamBehaviour` switches changed."""
    net = EmoCASTNet.build(oracle.config.with_upstream(**switches), device="meta")
    load_emocast_weights(net, oracle.state_dict, strict=True)
    return net.eval()


@torch.no_grad()
def _forward(net: EmoCASTNet, oracle: Oracle, block_outputs: dict | None = None) -> dict:
    """The oracle's call: conditions, ReferenceNet, guided denoiser. Optionally records the
    denoiser's block outputs in `block_outputs` as (B, C, F, h, w)."""
    inputs = oracle.inputs
    conditions = prepare_video_conditions(
        net, inputs["face_emb"], inputs["text_emb_prompt"], inputs["text_emb_uncond"], inputs["face_region"], oracle.region_masks()
    )
    audio_tokens = net.audioproj(inputs["audio_windows"])
    reference = reference_features(net, inputs["ref_latents"], conditions)
    hooks = []
    if block_outputs is not None:
        for name in _block_names(oracle):
            module = net.denoising_unet.get_submodule(name.removeprefix("debug."))
            hooks.append(module.register_forward_hook(_recorder(block_outputs, name, oracle.num_frames)))
    try:
        guided, raw = predict_guided(
            net, inputs["latents"], inputs["timestep"], conditions, audio_tokens,
            inputs["text_emb_prompt"].expand(oracle.num_frames, -1, -1), reference,
            GuidanceConfig(scale=float(inputs["cfg_scale"])), inputs["motion_scale"].tolist(),
        )
    finally:
        for hook in hooks:
            hook.remove()
    return {"conditions": conditions, "audio_tokens": audio_tokens, "reference": reference, "guided": guided, "raw": raw}


def _block_names(oracle: Oracle) -> list[str]:
    return [key for key in oracle.expected if key.startswith("debug.") and not key.startswith("debug.ref_bank.")]


def _recorder(store: dict, name: str, num_frames: int):
    def record(module, args, output):
        hidden_states = output[0] if isinstance(output, tuple) else output  # down levels also return skips
        # The levels work on frame-folded (B*F, C, h, w) rows, batch-major like upstream.
        store[name] = hidden_states.reshape(-1, num_frames, *hidden_states.shape[1:]).transpose(1, 2)
    return record


@pytest.fixture(scope="module")
def upstream_run(net, oracle):
    blocks = {}
    outputs = _forward(net, oracle, blocks)
    outputs["blocks"] = blocks
    return outputs


@pytest.fixture(scope="module")
def bankfp32_run(oracle):
    return _forward(_net_with(oracle, reference_bank_dtype=None), oracle)


def test_fixture_is_consistent(oracle):
    assert oracle.inputs["latents"].shape[0] == 1
    assert oracle.num_levels == len(oracle.config.unet.block_out_channels)
    assert len(_block_names(oracle)) > 0


def test_module_outputs(upstream_run, oracle):
    conditions, expected = upstream_run["conditions"], oracle.expected
    assert_close_to_official("face_tokens", conditions.face_tokens, expected["face_tokens"], FORWARD)
    assert_close_to_official("uncond_face_tokens", conditions.uncond_face_tokens, expected["uncond_face_tokens"], FORWARD)
    assert_close_to_official("encoder_hidden_states", conditions.text_face_tokens, expected["encoder_hidden_states"], FORWARD)
    locator = conditions.face_locator_features.expand(-1, -1, oracle.num_frames, -1, -1)
    assert_close_to_official("face_locator_out", locator, expected["face_locator_out"], FORWARD)
    assert_close_to_official("audio_tokens", upstream_run["audio_tokens"], expected["audio_tokens"], FORWARD)


def test_reference_bank(bankfp32_run, oracle):
    """Each bank entry: the ReferenceNet block's norm1 tokens for [ref, m1, .., ref, m1, ..]."""
    reference = bankfp32_run["reference"]
    pairing = oracle.meta["ref_bank_pairing"]
    assert len(pairing) == len(reference.reference_tokens)
    for index, pair in enumerate(pairing):
        block = pair["writer (reference_unet.)"]
        assert pair["reader (denoising_unet.)"] == block  # both UNets share block paths
        rows = torch.cat([reference.reference_tokens[block][:, None], reference.motion_tokens[block]], dim=1)
        bank = rows.reshape(-1, *rows.shape[2:])
        assert_close_to_official(f"debug.ref_bank.{index:02d} ({block})", bank, oracle.expected[f"debug.ref_bank.{index:02d}"], FORWARD)


def test_noise_pred_with_float32_bank(bankfp32_run, oracle):
    assert_close_to_official("noise_pred_bankfp32", bankfp32_run["raw"], oracle.expected["noise_pred_bankfp32"], FORWARD)
    assert_close_to_official("noise_pred_guided_bankfp32", bankfp32_run["guided"], oracle.expected["noise_pred_guided_bankfp32"], FORWARD)


def test_noise_pred_with_upstream_float16_bank(upstream_run, oracle):
    assert_close_to_official("noise_pred", upstream_run["raw"], oracle.expected["noise_pred"], FLOAT16_BANK)
    assert_close_to_official("noise_pred_guided", upstream_run["guided"], oracle.expected["noise_pred_guided"], FLOAT16_BANK)


def test_block_outputs(upstream_run, oracle):
    blocks = upstream_run["blocks"]
    for name in _block_names(oracle):
        assert_close_to_official(name, blocks[name], oracle.expected[name], FLOAT16_BANK_BLOCKS)


def test_float32_bank_moves_toward_float32_oracle(upstream_run, bankfp32_run, oracle):
    target = oracle.expected["noise_pred_bankfp32"]
    change = (bankfp32_run["raw"] - upstream_run["raw"]).abs().max().item()
    assert 0 < change < 1e-2 * target.abs().max().item()  # the float16 rounding is a small effect
    error_fp16_bank = (upstream_run["raw"] - target).abs().max().item()
    error_fp32_bank = (bankfp32_run["raw"] - target).abs().max().item()
    assert error_fp32_bank < error_fp16_bank


@pytest.mark.parametrize(
    "switch",
    [
        {"reference_token_layout": "per_half"},
        {"reference_tiled_over_frames": False},
        {"run_plain_block_motion_modules": True},
    ],
    ids=lambda switch: next(iter(switch)),
)
def test_corrected_modes_change_the_output(switch, upstream_run, oracle):
    corrected = _forward(_net_with(oracle, **switch), oracle)["raw"]
    change = (corrected - upstream_run["raw"]).abs().max().item()
    assert change > 1e-3 * upstream_run["raw"].abs().max().item(), f"{switch} changed noise_pred by only {change:.2e}"


def test_train_mode_does_not_change_the_denoiser(net, upstream_run, oracle):
    net.denoising_unet.train()
    try:
        in_train_mode = _forward(net, oracle)["raw"]
    finally:
        net.denoising_unet.eval()
    # The same kernels on the same inputs: at most a few roundings apart, whatever the CPU.
    assert_close_to_official("noise_pred in train mode", in_train_mode, upstream_run["raw"], ELEMENTWISE)
