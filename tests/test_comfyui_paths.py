"""The loader nodes read only models listed in ComfyUI's model folders, and the video node writes only
inside ComfyUI's output folder, whatever string a workflow carries: through a real server's
``POST /prompt``, hostile values come back as node errors at validation, and nothing runs.

Needs ``COMFYUI_DIR`` (a folder with ``ComfyUI/`` and ``venv/``, the pack installed in that venv);
otherwise it skips. The full table of hostile strings x every loader input runs in process, in
`test_nodes_paths.py`.
"""
from __future__ import annotations

import json
from pathlib import Path

import comfy_fixtures as cf
import pytest
from hostile_paths import LOADER_INPUTS, deep_dots, write_escapes, write_outside

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory, oracle_dir):
    comfy_dir = cf.comfyui_dir_or_skip()
    root = tmp_path_factory.mktemp("comfyui_paths")
    models = cf.build_models_tree(root, oracle_dir)
    cf.write_inputs(root / "input", 0.3)
    outside = root / "outside_sentinel_area"
    write_outside(outside)
    write_escapes(models, outside, link_to_root=False)
    running = cf.comfyui_server(comfy_dir, root, REPO)
    instance = next(running)
    instance.outside = outside
    try:
        yield instance
    finally:
        running.close()  # stops the server


def _basic_prompt(**changes) -> dict:
    """The basic workflow on the tiny models, with ``changes``: {"<class_type>.<input>": value}."""
    prompt = json.loads((REPO / "workflows" / "api" / "emocast_basic.api.json").read_text())
    for node in prompt.values():
        node["inputs"].update(cf.TINY_OVERRIDES.get(node["class_type"], {}))
        for key, value in changes.items():
            class_type, _, name = key.partition(".")
            if node["class_type"] == class_type:
                node["inputs"][name] = value
    return prompt


def _nothing_ran(server) -> None:
    assert server.get("/history") == {}
    queue = server.get("/queue")
    assert queue["queue_running"] == [] and queue["queue_pending"] == []
    assert not [path for path in server.output.rglob("*") if path.is_file()]


def test_server_lists_only_what_is_inside_the_model_folders(server):
    info = server.get("/object_info")
    for loader in LOADER_INPUTS:
        spec = info[loader.node_id]["input"]["required"][loader.name]
        options = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
        assert cf.TINY_OVERRIDES[loader.node_id].get(loader.name, "none") in options
        assert not [o for o in options if any(bad in o for bad in ("escape", "rootlink", "half_linked", "decoy"))], options


def test_server_refuses_hostile_model_inputs_at_validation_without_running(server):
    outside = server.outside
    hostile = {
        "EmoCASTModelLoader.checkpoint": f"emocast/{outside / 'decoy.safetensors'}",  # emocast//<absolute path>
        "EmoCASTModelLoader.vae": "vae/..",
        "EmoCASTTextEncoderLoader.text_encoder": f"text_encoders/{deep_dots()}{str(outside / 'decoy.safetensors').lstrip('/')}",
        "EmoCASTTextEncoderLoader.tokenizer": "text_encoders/escape_link",  # a symlink to a folder outside
        "EmoCASTAudioEncoderLoader.wav2vec2": "audio_encoders/half_linked",
        "EmoCASTAudioEncoderLoader.vocal_separator": "emocast/audio_separator/escape_link.onnx",
        "EmoCASTFaceAnalyzerLoader.face_models": "insightface//etc/passwd",
    }
    prompt = _basic_prompt(**hostile)
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-paths"})
    assert status == 400, body
    loader_ids = {node_id for node_id, node in prompt.items() if node["class_type"] in {k.split(".")[0] for k in hostile}}
    assert set(body["node_errors"]) == loader_ids, body["node_errors"]
    for node_id in loader_ids:
        # Each error sits under the input it is about. The node's own check reads only its main model input;
        # ComfyUI 0.3.64 does not check the other combos when queueing (later versions do, under their input).
        for error in body["node_errors"][node_id]["errors"]:
            name = error["extra_info"]["input_name"]
            assert f"{prompt[node_id]['class_type']}.{name}" in hostile, error
            if error["type"] == "custom_validation_failed":
                assert error["details"].startswith(f"{name} - {name}: ") and "is not one of the models listed" in error["details"]
            else:
                assert error["details"].startswith(f"{name}: "), error
    text = json.dumps(body)
    assert str(outside) not in text and outside.name not in text and "passwd" not in text and "SENTINEL" not in text
    _nothing_ran(server)


def test_server_refuses_a_prefix_leaving_the_output_folder_before_sampling(server):
    prompt = _basic_prompt(**{"EmoCASTVideoCombine.filename_prefix": "../../escaped/emocast"})
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-paths"})
    assert status == 400, body
    video_ids = {node_id for node_id, node in prompt.items() if node["class_type"] == "EmoCASTVideoCombine"}
    assert set(body["node_errors"]) == video_ids, body["node_errors"]  # the tiny loaders' choices passed
    (error,) = body["node_errors"][video_ids.pop()]["errors"]
    assert error["details"].startswith("filename_prefix - filename_prefix: ")
    _nothing_ran(server)
    assert not list(server.root.parent.rglob("escaped"))
