"""What the editor shows of every EmoCAST node, and how ComfyUI files their validation messages: in process,
with ComfyUI's own code (``execution.validate_inputs``, the function behind ``POST /prompt``).

Covers whatever nodes the pack registers: tooltips on every input and output, frame-rate inputs that take
23.976, previews at the frame's own size, one error per problem under the input it is about. The same
through a real server is in `test_comfyui_server.py`. Needs ComfyUI importable (see `comfy_in_process`).
"""
from __future__ import annotations

import asyncio
import math
import sys

import pytest
import torch
from comfy_in_process import import_comfyui, load_pack, node_classes

import_comfyui()

DEMO = "demo (built-in synthetic model)"


@pytest.fixture(scope="module")
def nodes():
    return node_classes(load_pack())


def test_every_input_and_output_has_a_tooltip(nodes):
    assert nodes
    missing = []
    for node_id, node in nodes.items():
        schema = node.GET_SCHEMA()
        missing += [f"{node_id}.{item.id} (input)" for item in schema.inputs if not (item.tooltip or "").strip()]
        missing += [f"{node_id}.{item.display_name or item.id} (output)" for item in schema.outputs
                    if not (item.tooltip or "").strip()]
    assert missing == []


def test_frame_rates_like_23_976_can_be_entered(nodes):
    """The editor rounds a FLOAT widget to as many decimals as its step has (or to ``round``)."""
    fps_inputs = [(node_id, item) for node_id, node in nodes.items() for item in node.GET_SCHEMA().inputs
                  if item.id == "fps" and item.get_io_type() == "FLOAT"]
    assert fps_inputs
    for node_id, item in fps_inputs:
        decimals = max(0, -math.floor(math.log10(item.step)))
        rounding = item.round if item.round else 10 ** -decimals
        for rate in (23.976, 29.97, 25.0, 59.94):
            assert item.min <= rate <= item.max, node_id
            assert round(rate / rounding) * rounding == pytest.approx(rate, abs=1e-9), (node_id, rate)
        assert item.step <= 0.01, node_id


def test_previews_keep_the_frame_size():
    """ComfyUI fits a preview into its size limit and would enlarge a small frame to it."""
    from comfy.cli_args import args
    from PIL import ImageOps

    preview = sys.modules["emocast_pack.nodes.sampler"]._preview
    for side, shown in ((64, 64), (4 * args.preview_size, args.preview_size)):
        kind, image, limit = preview(torch.rand(side, side, 3))
        assert kind == "JPEG" and image.size == (side, side)
        assert ImageOps.contain(image, (limit, limit)).size == (shown, shown)


# --- how ComfyUI files the messages: the function POST /prompt runs --------------------------------------


@pytest.fixture()
def validate(nodes, monkeypatch):
    """``validate(prompt, node_key)`` -> the errors ComfyUI reports for that node, with the pack's nodes
    registered as ComfyUI registers them."""
    import execution

    import nodes as comfy_nodes

    for node_id, node in nodes.items():
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, node_id, node)

    def run(prompt: dict, key: str) -> list[dict]:
        valid, errors, _ = asyncio.run(execution.validate_inputs("test", prompt, key, {}))
        return [] if valid else errors

    return run


def _loader(vae=DEMO, checkpoint=DEMO) -> dict:
    return {"1": {"class_type": "EmoCASTModelLoader",
                  "inputs": {"checkpoint": checkpoint, "vae": vae, "precision": "fp32"}}}


def test_a_bad_checkpoint_is_one_error_under_checkpoint_with_where_to_put_it(validate):
    assert validate(_loader(), "1") == []
    (error,) = validate(_loader(checkpoint="emocast/missing.safetensors"), "1")
    assert error["extra_info"]["input_name"] == "checkpoint"
    assert "checkpoint: 'emocast/missing.safetensors' is not one of the models listed" in error["details"]
    assert "models/emocast/" in error["details"]


def test_a_bad_vae_is_never_filed_under_checkpoint(validate):
    # ComfyUI 0.3.64 does not check a V3 combo against its options when queueing (later versions do, under
    # the combo's own input); execute() refuses it before anything is read (test_nodes_paths.py).
    errors = validate(_loader(vae="vae/missing"), "1")
    assert {error["extra_info"]["input_name"] for error in errors} <= {"vae"}
    errors = validate(_loader(vae="vae/missing", checkpoint="emocast/missing.safetensors"), "1")
    assert [error["extra_info"]["input_name"] for error in errors].count("checkpoint") == 1
    assert all("vae" not in error["details"] for error in errors if error["extra_info"]["input_name"] == "checkpoint")


def _emotion(**inputs) -> dict:
    values = {"text_encoder": ["9", 0], "preset": "custom text", "text": "", "intensity": 1.0, "schedule": "",
              "transition": 0.5, **inputs}
    return {"9": {"class_type": "EmoCASTTextEncoderLoader", "inputs": {"text_encoder": DEMO, "tokenizer": "auto"}},
            "2": {"class_type": "EmoCASTEmotionEncode", "inputs": values}}


def test_an_empty_emotion_is_refused_when_queued_naming_text(validate):
    errors = validate(_emotion(text="   "), "2")
    assert errors and "text" in {error["extra_info"]["input_name"] for error in errors}
    # One problem, one line: each error carries the same line, which names the input to fix.
    lines = {error["details"].partition(" - ")[2] for error in errors}
    (line,) = lines
    assert line.startswith("text is empty") and "\n" not in line
    # A preset or a schedule gives the emotion: the empty text is not read then.
    assert validate(_emotion(text="", preset="happy"), "2") == []
    assert validate(_emotion(text="", schedule="0: neutral\n2: happy @0.8"), "2") == []
    assert validate(_emotion(text="A person is talking with sad emotion."), "2") == []


def test_a_bad_schedule_or_preset_is_refused_when_queued(validate):
    (line,) = {error["details"].partition(" - ")[2] for error in validate(_emotion(schedule="0: happy\nlater: sad"), "2")}
    assert line.startswith("schedule: line 2")
    (line,) = {error["details"].partition(" - ")[2] for error in validate(_emotion(preset="gleeful"), "2")}
    assert line.startswith("preset 'gleeful' is not a preset")
