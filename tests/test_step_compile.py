"""The per-step denoiser call is one graph: no host synchronisation, no branch on tensor values.

`torch._dynamo.explain` traces the call (no compilation) and reports every graph break; a break
would split a compiled step and, on a GPU, stall the queue. It is checked on the batch with the
most varied layout: `[uncond; cond]` plus separate audio and emotion rows, where the unconditional
row attends without the reference and the other three read it (about a minute of tracing on a
small CPU; the other layouts are sub-cases of it).
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from emocast_core.checkpoint import load_emocast_net
from emocast_core.guidance import GuidanceConfig, guided_prediction, prepare_clip, prepare_video_conditions, reference_features
from emocast_core.models.config import EmoCASTConfig
from emocast_core.models.prepared import RowSegment


@pytest.fixture(scope="module")
def clip_inputs(oracle_dir):
    config = EmoCASTConfig.from_upstream_file(oracle_dir / "tiny_config.json")
    net = load_emocast_net(oracle_dir / "tiny_net.safetensors", config).eval()
    inputs = load_file(oracle_dir / "net_forward" / "inputs.safetensors")
    levels = sum(1 for key in inputs if key.startswith("full_mask."))
    masks = [[inputs[f"{region}_mask.{level}"] for level in range(levels)] for region in ("full", "face", "lip")]
    with torch.no_grad():
        conditions = prepare_video_conditions(
            net, inputs["face_emb"], inputs["text_emb_prompt"], inputs["text_emb_uncond"], inputs["face_region"], masks
        )
        reference = reference_features(net, inputs["ref_latents"], conditions)
        audio_tokens = net.audioproj(inputs["audio_windows"])
    return net, conditions, reference, audio_tokens, inputs


def _prepare(clip_inputs, guidance: GuidanceConfig, num_steps: int = 1):
    net, conditions, reference, audio_tokens, inputs = clip_inputs
    with torch.no_grad():
        return prepare_clip(net, conditions, inputs["text_emb_prompt"], audio_tokens, reference, guidance, num_steps=num_steps)


def test_denoising_step_traces_as_one_graph(clip_inputs):
    net, _, _, _, inputs = clip_inputs
    clip = _prepare(clip_inputs, GuidanceConfig(audio_scale=2.0, emotion_scale=1.5)).guided
    assert clip.num_rows == 4 and len(clip.segments) == 2
    latents = inputs["latents"].expand(clip.num_rows, -1, -1, -1, -1)
    timestep = torch.as_tensor(inputs["timestep"])
    torch._dynamo.reset()
    with torch.no_grad():
        explanation = torch._dynamo.explain(net.denoising_unet)(latents, timestep, clip)
    assert explanation.graph_break_count == 0, [str(reason) for reason in explanation.break_reasons]
    assert explanation.graph_count == 1


def test_which_rows_read_the_reference_is_decided_per_clip(clip_inputs):
    """The unconditional row attends without the reference; the extra rows and the conditional
    row read it. The bank holds one entry per frame row that reads it, laid out once per clip."""
    num_frames = clip_inputs[4]["latents"].shape[2]
    joint = _prepare(clip_inputs, GuidanceConfig()).guided
    assert joint.segments == (RowSegment(0, num_frames, None), RowSegment(num_frames, 2 * num_frames, 0))
    separate = _prepare(clip_inputs, GuidanceConfig(audio_scale=2.0, emotion_scale=1.5)).guided
    assert separate.segments == (RowSegment(0, num_frames, None), RowSegment(num_frames, 4 * num_frames, 0))
    key, (bank_key, bank_value) = next(iter(separate.reference_kv.items()))
    assert bank_key.shape[0] == bank_value.shape[0] == 3 * num_frames
    cross = separate.cross_attention[key]
    assert cross.text_key.shape[0] == 4 * num_frames


def test_prepared_step_equals_the_one_shot_prediction(clip_inputs):
    """Preparing once and stepping gives what a single combined call gives, for every guidance
    mode: the prepared clip holds only constants, the step only what depends on the latents."""
    net, conditions, reference, audio_tokens, inputs = clip_inputs
    latents, timestep = inputs["latents"], inputs["timestep"]
    prepared = _prepare(clip_inputs, GuidanceConfig(audio_scale=2.0, emotion_scale=1.5), num_steps=2)
    with torch.no_grad():
        first, raw = guided_prediction(net.denoising_unet, latents, timestep, prepared)
        # The same prepared clip serves a second step with other latents, unchanged.
        guided_prediction(net.denoising_unet, torch.randn_like(latents), timestep, prepared)
        again, _ = guided_prediction(net.denoising_unet, latents, timestep, prepared)
    assert raw.shape[0] == 4 and torch.isfinite(raw).all()
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    # The guided combination: uncond + s (cond - uncond) + s_a (cond - no_audio) + s_e (cond - no_emotion).
    uncond, cond, no_audio, no_emotion = raw.chunk(4)
    expected = uncond + 3.5 * (cond - uncond) + 2.0 * (cond - no_audio) + 1.5 * (cond - no_emotion)
    scale = expected.abs().max().item()
    torch.testing.assert_close(first, expected, rtol=0, atol=1e-5 * scale)
