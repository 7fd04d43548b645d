"""End-to-end tests against a real ComfyUI server with the EmoCAST pack installed.

Set ``COMFYUI_DIR`` to a folder holding ``ComfyUI/`` (a checkout) and ``venv/`` (its Python environment,
with the pack's requirements installed, e.g. ``venv/bin/pip install -e <this repository>``). The server is
started on a free port with ``--cpu`` and an ``extra_model_paths.yaml`` that points ``custom_nodes`` at a
temporary folder linking this repository, and every model folder at tiny models built in the real layout
(`comfy_fixtures`), plus a tiny SD1.5 checkpoint (`sd15_fixture`) for the mixing workflow. Nothing in
``COMFYUI_DIR`` is modified. Without ``COMFYUI_DIR`` every test skips (in CI: fails).
"""
from __future__ import annotations

import base64
import json
import math
import os
import socket
import uuid
from pathlib import Path

import av
import comfy_fixtures as cf
import pytest

REPO = Path(__file__).resolve().parents[1]
PACK_DEPENDENCIES = ("diffusers", "transformers", "safetensors", "soxr", "onnxruntime", "cv2", "imageio_ffmpeg", "av")
SPEECH_SECONDS = 0.3  # 8 frames: one 8-frame clip of the tiny model
FPS = 25
EXPECTED_FRAMES = math.ceil(SPEECH_SECONDS * FPS)
RUN_TIMEOUT = cf.RUN_TIMEOUT

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]


_message = cf.history_message


def tiny_prompt(name: str, **changes) -> dict:
    """An API workflow with the quick settings of its kind, plus ``changes``: {"<class_type>.<input>": value}.

    Demo workflows keep their built-in model and sample inputs (that is what they are for) and only get
    fewer steps and a second of speech; the others run on the tiny models of `comfy_fixtures`."""
    prompt = json.loads((REPO / "workflows" / "api" / f"{name}.api.json").read_text())
    if name.startswith("demo_"):
        overrides = [DEMO_OVERRIDES]
    else:
        overrides = [cf.TINY_OVERRIDES, cf.SD_PORTRAIT_OVERRIDES]  # the SD checkpoint's nodes occur in one workflow
    for node in prompt.values():
        for table in overrides:
            for key, value in table.get(node["class_type"], {}).items():
                node["inputs"][key] = value
        for key, value in changes.items():
            class_type, _, input_name = key.partition(".")
            if node["class_type"] == class_type:
                node["inputs"][input_name] = value
    return prompt


@pytest.fixture(scope="session")
def server(tmp_path_factory, oracle_dir):
    from sd15_fixture import write_tiny_sd15_checkpoint

    comfy = cf.comfyui_dir_or_skip(PACK_DEPENDENCIES)
    root = tmp_path_factory.mktemp("comfyui")
    cf.build_models_tree(root, oracle_dir)
    write_tiny_sd15_checkpoint(root / "models" / "checkpoints" / cf.SD15_CHECKPOINT)
    cf.write_inputs(root / "input", SPEECH_SECONDS)
    yield from cf.comfyui_server(comfy, root, REPO)


# --- a minimal websocket reader (stdlib only): the server's progress and status messages ---------------


class WebSocketReader:
    def __init__(self, base: str, client_id: str):
        host, port = base.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=RUN_TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
             f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.stream = self.sock.makefile("rb")
        status = self.stream.readline()
        assert b" 101 " in status, status
        while self.stream.readline() not in (b"\r\n", b""):
            pass

    def _read(self, count: int) -> bytes:
        data = self.stream.read(count)
        if len(data) < count:
            raise ConnectionError("websocket closed")
        return data

    def messages(self):
        """Yield JSON messages (binary preview frames are skipped)."""
        while True:
            first, second = self._read(2)
            opcode, length = first & 0x0F, second & 0x7F
            if length == 126:
                length = int.from_bytes(self._read(2), "big")
            elif length == 127:
                length = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if second & 0x80 else None
            payload = self._read(length)
            if mask:
                payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
            if opcode == 8:
                return
            if opcode == 1:
                yield json.loads(payload)

    def close(self):
        self.sock.close()


# --- tests ---------------------------------------------------------------------------------------------


def test_pack_loads_and_every_node_is_registered(server):
    log = server.log.read_text(errors="replace")
    assert "IMPORT FAILED" not in log, server.log_tail()
    info = server.get("/object_info")
    for node_id, inputs in cf.NODE_INPUTS.items():
        assert node_id in info, f"{node_id} missing from /object_info"
        node = info[node_id]
        assert node["python_module"] == f"custom_nodes.{cf.SERVER_PACK_NAME}"
        assert node["category"].startswith("EmoCAST")
        order = node["input_order"]
        assert order.get("required", []) + order.get("optional", []) == [name for name, _ in inputs], node_id
        for group in ("required", "optional"):
            for name, spec in node["input"].get(group, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert node["output"] == cf.NODE_OUTPUTS[node_id]
    templates = server.get("/workflow_templates")
    assert sorted(templates.get(cf.SERVER_PACK_NAME, [])) == sorted(p.stem for p in (REPO / "workflows").glob("*.json"))


def test_ui_workflows_convert_to_their_api_twins(server):
    """comfy-cli's UI-to-API converter, fed this server's /object_info, turns every UI workflow into exactly
    its API twin: the widget values sit where the live node schemas expect them."""
    converter = pytest.importorskip("comfy_cli.workflow_to_api", reason="comfy-cli is not installed")
    info = server.get("/object_info")
    for path in sorted((REPO / "workflows").glob("*.json")):
        converted = converter.convert_ui_to_api(json.loads(path.read_text()), info)
        twin = json.loads((REPO / "workflows" / "api" / f"{path.stem}.api.json").read_text())
        assert {key: node["inputs"] for key, node in converted.items()} == {
            key: node["inputs"] for key, node in twin.items()}, path.name


def _output_files(entry: dict) -> list[Path]:
    files = []
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            assert item["type"] == "output"
            files.append(Path(item["filename"]) if not item["subfolder"] else Path(item["subfolder"]) / item["filename"])
    return files


DEMO_SECONDS = 1.0
DEMO_OVERRIDES = {"EmoCASTSampler": {"steps": 2}, "EmoCASTAudioFeatures": {"duration": DEMO_SECONDS}}


def _demo_size(pasted_back: bool) -> int:
    from PIL import Image

    from emocast_core.demo.bundle import DemoBundle

    if not pasted_back:
        return DemoBundle().size
    (portrait,) = [path for path in (REPO / "emocast_core" / "demo" / "assets").glob("*.png")]
    with Image.open(portrait) as image:
        assert image.width == image.height
        return image.width


# Every shipped API workflow, with the frame size and length its video must have under the quick settings.
WORKFLOW_VIDEOS = {
    "emocast_basic": (lambda: 128, EXPECTED_FRAMES),
    "emocast_native_video": (lambda: 128, EXPECTED_FRAMES),
    "emocast_emotion_keyframes": (lambda: 512, EXPECTED_FRAMES),  # pasted back into the 512 x 512 portrait
    "demo_basic": (lambda: _demo_size(pasted_back=False), math.ceil(DEMO_SECONDS * FPS)),
    "demo_emotion_keyframes": (lambda: _demo_size(pasted_back=True), math.ceil(DEMO_SECONDS * FPS)),
    # An SD1.5 portrait (tiny checkpoint) animated by EmoCAST, upscaled by ImageScale, saved by SaveVideo.
    "emocast_sd_portrait_upscale": (lambda: cf.SD_PORTRAIT_OVERRIDES["ImageScale"]["width"], EXPECTED_FRAMES),
    # A ComfyUI solver makes the LATENT, a second pass at denoise 0.4 starts from it, EmoCAST Decode decodes it.
    "emocast_latent_decode": (lambda: 128, EXPECTED_FRAMES),
}


def test_every_shipped_workflow_is_run_here():
    shipped = {path.name.removesuffix(".api.json") for path in (REPO / "workflows" / "api").glob("*.api.json")}
    assert shipped == set(WORKFLOW_VIDEOS)


@pytest.mark.parametrize("name", sorted(WORKFLOW_VIDEOS))
def test_workflow_writes_a_video_with_the_speech(server, name):
    from emocast_core.video import probe_video

    size, frames = WORKFLOW_VIDEOS[name][0](), WORKFLOW_VIDEOS[name][1]
    prompt, workflow = tiny_prompt(name), json.loads((REPO / "workflows" / f"{name}.json").read_text())
    entry = server.wait(server.queue(prompt, workflow=workflow))
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[:4000]
    files = _output_files(entry)
    assert len(files) == 1, entry["outputs"]
    # The MP4 carries its graph, as ComfyUI's own Save Video writes it: dropping it on ComfyUI restores it.
    with av.open(str(server.output / files[0])) as container:
        assert json.loads(container.metadata["workflow"]) == workflow
        saved_prompt = json.loads(container.metadata["prompt"])
    # The prompt as queued; ComfyUI adds bookkeeping of its own to each node (e.g. is_changed).
    essentials = lambda graph: {key: (node["class_type"], node["inputs"]) for key, node in graph.items()}  # noqa: E731
    assert essentials(saved_prompt) == essentials(prompt)
    info = probe_video(server.output / files[0])
    assert (info.num_frames, info.fps, info.width, info.height) == (frames, FPS, size, size)
    assert info.has_audio and info.audio_codec == "aac"
    assert info.duration_s == pytest.approx(frames / FPS, abs=0.5 / FPS)
    assert info.audio_duration_s == pytest.approx(frames / FPS, abs=0.05)


def test_bad_inputs_give_node_errors(server):
    status, body = server.post("/prompt", {"prompt": tiny_prompt(
        "emocast_basic", **{"EmoCASTModelLoader.checkpoint": "emocast/missing.safetensors"})})
    assert status == 400
    assert "3" in body["node_errors"] and "checkpoint" in json.dumps(body["node_errors"]["3"])

    entry = server.wait(server.queue(tiny_prompt("emocast_basic", **{"EmoCASTAudioFeatures.start_time": 60.0})))
    error = _message(entry, "execution_error")
    assert entry["status"]["status_str"] == "error" and error is not None
    assert error["node_type"] == "EmoCASTAudioFeatures" and "start_time" in error["exception_message"]


def test_changing_only_the_emotion_reuses_the_loaded_models(server):
    # ComfyUI caches the outputs of the prompt it ran last: run the base workflow right before.
    assert server.wait(server.queue(tiny_prompt("emocast_basic")))["status"]["status_str"] == "success"
    entry = server.wait(server.queue(tiny_prompt("emocast_basic", **{"EmoCASTEmotionEncode.preset": "sad"})))
    assert entry["status"]["status_str"] == "success"
    cached = set(_message(entry, "execution_cached")["nodes"])
    assert {"1", "3", "4", "5", "6", "7"} <= cached  # portrait, the four loaders, reference
    assert not {"8", "10", "11"} & cached  # emotion, sampler, video


def test_interrupt_during_sampling_leaves_no_file(server):
    server.wait(server.queue(tiny_prompt("emocast_basic")))  # loaders cached: the sampler starts at once
    before = {path.name for path in server.output.rglob("*")}
    client_id = uuid.uuid4().hex
    reader = WebSocketReader(server.base, client_id)
    try:
        prompt = tiny_prompt("emocast_basic", **{"EmoCASTSampler.steps": 50, "EmoCASTSampler.seed": 7,
                                                 "EmoCASTVideoCombine.filename_prefix": "EmoCAST/interrupted"})
        prompt_id = server.queue(prompt, client_id)
        interrupted_at = None
        for message in reader.messages():
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            if message["type"] == "progress" and data.get("node") == "10" and interrupted_at is None:
                assert server.post("/interrupt")[0] == 200
                interrupted_at = data["value"]
            if message["type"] in ("execution_interrupted", "execution_success", "execution_error"):
                break
    finally:
        reader.close()
    assert interrupted_at is not None and interrupted_at < 50
    assert message["type"] == "execution_interrupted", message
    assert message["data"]["node_id"] == "10"
    entry = server.wait(prompt_id)
    assert _message(entry, "execution_interrupted") is not None
    after = {path.name for path in server.output.rglob("*")}
    assert after == before, f"files appeared: {sorted(after - before)}"


# --- a first run that works: what the editor shows, and refusals at queue time -------------------------------


def _refusal(server, prompt: dict, node_key: str) -> list[dict]:
    """The errors ``POST /prompt`` reports for one node of a refused prompt."""
    status, body = server.post("/prompt", {"prompt": prompt, "client_id": "emocast-validation"})
    assert status == 400, body
    assert set(body["node_errors"]) == {node_key}, body["node_errors"]
    return body["node_errors"][node_key]["errors"]


def test_validation_gives_one_error_per_problem_under_its_input(server):
    # A checkpoint that is not there: one error, under checkpoint, saying where the weights go.
    (error,) = _refusal(server, tiny_prompt("emocast_basic", **{"EmoCASTModelLoader.checkpoint": "emocast/gone.safetensors"}), "3")
    assert error["extra_info"]["input_name"] == "checkpoint"
    assert error["details"].startswith("checkpoint - checkpoint: 'emocast/gone.safetensors' is not one of the models")
    assert "models/emocast/" in error["details"]

    # A custom emotion left empty is refused when queued (not when the sampler is reached): the rule reads the
    # preset, the text and the schedule, and its one line names the text.
    errors = _refusal(server, tiny_prompt("emocast_basic", **{"EmoCASTEmotionEncode.preset": "custom text",
                                                              "EmoCASTEmotionEncode.text": "  "}), "8")
    assert "text" in {error["extra_info"]["input_name"] for error in errors}
    (line,) = {error["details"].partition(" - ")[2] for error in errors}
    assert line.startswith("text is empty")

    # The same empty text with a preset is fine: the preset gives the emotion.
    status, body = server.post("/prompt", {"prompt": tiny_prompt("emocast_basic", **{
        "EmoCASTEmotionEncode.text": "", "EmoCASTVideoCombine.filename_prefix": "EmoCAST/preset_empty_text"})})
    assert status == 200, body
    assert server.wait(body["prompt_id"])["status"]["status_str"] == "success"


def test_every_output_has_a_tooltip_and_fps_takes_23_976(server):
    info = server.get("/object_info")
    pack_nodes = {node_id: node for node_id, node in info.items()
                  if node["python_module"] == f"custom_nodes.{cf.SERVER_PACK_NAME}"}
    assert set(cf.NODE_INPUTS) <= set(pack_nodes)
    for node_id, node in pack_nodes.items():
        tooltips = node.get("output_tooltips") or []
        assert len(tooltips) == len(node["output"]) and all(tip and tip.strip() for tip in tooltips), node_id
        fps = {**node["input"].get("required", {}), **node["input"].get("optional", {})}.get("fps")
        if fps and fps[0] == "FLOAT":
            decimals = max(0, -math.floor(math.log10(fps[1]["step"])))  # the editor rounds to the step's decimals
            assert round(23.976, decimals) == 23.976 and fps[1]["step"] <= 0.01, node_id


def _preview_sizes(reader: WebSocketReader, prompt_id: str) -> list[tuple[int, int]]:
    """Sizes of the preview images sent until the prompt finishes (binary frames: event 1, JPEG)."""
    import io
    import struct

    from PIL import Image

    sizes = []
    while True:
        first, second = reader._read(2)
        opcode, length = first & 0x0F, second & 0x7F
        if length == 126:
            length = int.from_bytes(reader._read(2), "big")
        elif length == 127:
            length = int.from_bytes(reader._read(8), "big")
        payload = reader._read(length)
        if opcode == 2 and struct.unpack(">I", payload[:4])[0] == 1:
            with Image.open(io.BytesIO(payload[8:])) as image:
                sizes.append(image.size)
        elif opcode == 1:
            message = json.loads(payload)
            if message["type"] in ("execution_success", "execution_error", "execution_interrupted") and \
                    message["data"].get("prompt_id") == prompt_id:
                return sizes
        elif opcode == 8:
            raise ConnectionError("websocket closed")


def test_a_23_976_fps_video_with_previews_at_the_frame_size(server):
    from emocast_core.video import probe_video

    client_id = uuid.uuid4().hex
    reader = WebSocketReader(server.base, client_id)
    try:
        prompt = tiny_prompt("emocast_basic", **{"EmoCASTAudioFeatures.fps": 23.976, "EmoCASTSampler.seed": 11,
                                                 "EmoCASTVideoCombine.filename_prefix": "EmoCAST/ntsc"})
        prompt_id = server.queue(prompt, client_id)
        sizes = _preview_sizes(reader, prompt_id)
    finally:
        reader.close()
    entry = server.wait(prompt_id)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:2000]
    side = cf.TINY_OVERRIDES["EmoCASTReferenceEncoder"]["size"]
    # Each finished clip shows its last frame: at the video's own size, not enlarged to the preview limit.
    assert sizes and set(sizes) == {(side, side)}, sizes
    (file,) = _output_files(entry)
    info = probe_video(server.output / file)
    assert info.fps == pytest.approx(23.976, abs=1e-3)
    assert info.num_frames == math.ceil(SPEECH_SECONDS * 23.976)


def test_the_shipped_workflows_are_served_with_their_groups_and_notes(server):
    for path in sorted((REPO / "workflows").glob("*.json")):
        served = server.get(f"/api/workflow_templates/{cf.SERVER_PACK_NAME}/{path.name}")
        assert served == json.loads(path.read_text()), path.name
        assert served["groups"] and any(node["type"] in ("Note", "MarkdownNote") for node in served["nodes"])
