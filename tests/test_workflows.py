"""The example workflows: every UI workflow (drag-and-drop format) and its API-format twin (what
POST /prompt takes, used by the server tests) describe the same graph, and their widget values sit where
the EmoCAST nodes expect them. Pure JSON checks: no ComfyUI needed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from comfy_fixtures import NODE_INPUTS, NODE_OUTPUTS

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
PACK_ID = "comfyui-emocast"
EXPECTED = {
    "emocast_basic", "emocast_emotion_keyframes", "emocast_sd_portrait_upscale", "emocast_native_video",
    "demo_basic", "demo_emotion_keyframes", "emocast_latent_decode",
}


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def api_twin(ui_path: Path) -> Path:
    return WORKFLOWS / "api" / f"{ui_path.stem}.api.json"


def test_every_workflow_is_there():
    assert {path.stem for path in UI_FILES} == EXPECTED
    assert {path.name.removesuffix(".api.json") for path in (WORKFLOWS / "api").glob("*.api.json")} == EXPECTED


def ui_graph(workflow: dict):
    nodes = {node["id"]: node for node in workflow["nodes"] if node["type"] not in FRONTEND_ONLY}
    links = set()
    for link_id, src, src_slot, dst, dst_slot, _type in workflow["links"]:
        links.add((str(src), src_slot, str(dst), nodes[dst]["inputs"][dst_slot]["name"]))
    return {str(node_id): node["type"] for node_id, node in nodes.items()}, links


def api_graph(prompt: dict):
    types = {node_id: node["class_type"] for node_id, node in prompt.items()}
    links = set()
    for node_id, node in prompt.items():
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                links.add((value[0], value[1], node_id, name))
    return types, links


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_and_api_twin_are_the_same_graph(path):
    ui_types, ui_links = ui_graph(load(path))
    api_types, api_links = api_graph(load(api_twin(path)))
    assert ui_types == api_types
    assert ui_links == api_links


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_is_well_formed(path):
    workflow = load(path)
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    assert workflow["last_node_id"] >= max(nodes) and workflow["last_link_id"] >= max(links)
    for link_id, src, src_slot, dst, dst_slot, link_type in links.values():
        output = nodes[src]["outputs"][src_slot]
        assert link_id in output["links"] and output["type"] == link_type
        assert nodes[dst]["inputs"][dst_slot]["link"] == link_id
    for node in nodes.values():
        for entry in node.get("inputs", []):
            assert entry["link"] is None or entry["link"] in links
        for output in node.get("outputs", []):
            assert all(links[link_id][1] == node["id"] for link_id in output["links"] or [])
        if node["type"].startswith("EmoCAST"):
            assert node["properties"]["cnr_id"] == PACK_ID
            assert [output["type"] for output in node["outputs"]] == NODE_OUTPUTS[node["type"]]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_widget_values_match_the_api_twin(path):
    """widgets_values is positional: check each EmoCAST widget against the pinned input order."""
    prompt = load(api_twin(path))
    for node in load(path)["nodes"]:
        if node["type"] not in NODE_INPUTS:
            continue
        values = list(node["widgets_values"])
        api_inputs = prompt[str(node["id"])]["inputs"]
        for name, kind in NODE_INPUTS[node["type"]]:
            if kind == "link":
                continue
            value = values.pop(0)
            if kind == "seed":
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
            if not isinstance(api_inputs.get(name), list):  # a widget fed by a link keeps a stale value
                assert api_inputs[name] == value, (node["type"], name)
        assert values == [], f"{node['type']} has {len(values)} widget values too many"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_sets_every_pinned_input(path):
    for node_id, node in load(api_twin(path)).items():
        if node["class_type"] in NODE_INPUTS:
            required = {name for name, kind in NODE_INPUTS[node["class_type"]] if kind != "link"}
            assert required <= set(node["inputs"]), (node_id, required - set(node["inputs"]))


# --- how the workflows look: laid out, grouped, explained, pictured ------------------------------------------
# Geometry as the editor uses it: a node's `pos` is the top-left corner of its body and its title bar
# (NODE_TITLE_HEIGHT high) sits above it; a group's `bounding` is [x, y, width, height].

NODE_TITLE_HEIGHT = 30
NOTE_TYPES = {"Note", "MarkdownNote"}
REPO = WORKFLOWS.parent
PICTURE_LIMIT = 150 * 1024


def node_rect(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom), title bar included."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - NODE_TITLE_HEIGHT, x + width, y + height


def group_rect(group: dict) -> tuple[float, float, float, float]:
    x, y, width, height = group["bounding"]
    return x, y, x + width, y + height


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def inside(inner, outer) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def test_geometry_helpers_notice_what_they_should():
    assert overlap((0, 0, 10, 10), (9, 9, 20, 20)) and not overlap((0, 0, 10, 10), (10, 0, 20, 10))
    node = {"pos": [0, 30], "size": [100, 50]}
    assert node_rect(node) == (0, 0, 100, 80)
    assert inside(node_rect(node), (0, 0, 100, 80)) and not inside(node_rect(node), (0, 1, 100, 80))


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_nodes_do_not_overlap(path):
    nodes = load(path)["nodes"]
    for node in nodes:
        assert node["size"][0] > 0 and node["size"][1] > 0, node["id"]
    clashes = [(a["id"], b["id"]) for i, a in enumerate(nodes) for b in nodes[i + 1:]
               if overlap(node_rect(a), node_rect(b))]
    assert clashes == [], f"overlapping nodes (ids): {clashes}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_node_sits_in_a_named_group_and_groups_do_not_overlap(path):
    workflow = load(path)
    groups = workflow.get("groups", [])
    assert groups, "no groups"
    assert all(group["title"].strip() for group in groups)
    outside = [node["id"] for node in workflow["nodes"]
               if not any(inside(node_rect(node), group_rect(group)) for group in groups)]
    assert outside == [], f"nodes outside every group (ids): {outside}"
    clashes = [(a["title"], b["title"]) for i, a in enumerate(groups) for b in groups[i + 1:]
               if overlap(group_rect(a), group_rect(b))]
    assert clashes == []


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_a_note_says_what_to_load_where(path):
    workflow = load(path)
    texts = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] in NOTE_TYPES]
    assert texts and all(isinstance(text, str) and text.strip() for text in texts)
    note = "\n".join(texts)
    # Every model file a loader is set to is named with its folder, unless the workflow uses only the
    # built-in demo model (then the note says there is nothing to download).
    named = {value for node in workflow["nodes"] if "Loader" in node["type"]
             for value in node.get("widgets_values") or [] if isinstance(value, str) and value.startswith("demo (")}
    if named:
        assert "Nothing to download" in note
    for node in workflow["nodes"]:
        if "Loader" in node["type"] and not any(str(v).startswith("demo (") for v in node.get("widgets_values") or []):
            folders = {str(v).split("/")[0] for v in node["widgets_values"] if isinstance(v, str) and "/" in v}
            folders |= {"checkpoints"} if node["type"] == "CheckpointLoaderSimple" else set()
            for folder in folders:
                assert f"models/{folder}/" in note, (node["type"], folder)
            assert "http" in note


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_link_joins_an_output_to_an_input_of_its_type(path):
    workflow = load(path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    seen = set()
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        assert link_id not in seen
        seen.add(link_id)
        assert src in nodes and dst in nodes and src != dst
        assert 0 <= src_slot < len(nodes[src]["outputs"]) and 0 <= dst_slot < len(nodes[dst]["inputs"])
        assert nodes[src]["outputs"][src_slot]["type"] == link_type
        assert nodes[dst]["inputs"][dst_slot]["type"] in (link_type, "*"), (link_id, link_type)
    linked_inputs = {(node["id"], entry["link"]) for node in nodes.values() for entry in node.get("inputs") or []
                     if entry.get("link") is not None}
    assert linked_inputs == {(dst, link_id) for link_id, _, _, dst, _, _ in workflow["links"]}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_picture_is_drawn_from_the_current_layout_and_documented(path):
    """docs/images/<name>.png exists, is small, was drawn from the workflow as it is now (it records the
    workflow's digest, so an edited workflow without a new picture fails), and README and docs/comfyui.md
    show it."""
    import importlib.util

    from PIL import Image

    picture = REPO / "docs" / "images" / f"{path.stem}.png"
    assert picture.is_file(), "run python docs/render_workflows.py"
    assert picture.stat().st_size < PICTURE_LIMIT
    spec = importlib.util.spec_from_file_location("render_workflows", REPO / "docs" / "render_workflows.py")
    renderer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(renderer)
    with Image.open(picture) as image:
        assert image.size == renderer.picture_size(load(path))
        assert image.text.get(renderer.DIGEST_KEY) == renderer.source_digest(load(path)), \
            "the workflow changed since its picture was drawn: run python docs/render_workflows.py"
    assert f"docs/images/{path.stem}.png" in (REPO / "README.md").read_text(encoding="utf-8")
    assert f"images/{path.stem}.png" in (REPO / "docs" / "comfyui.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(name for name in EXPECTED if name.startswith("demo_")))
def test_demo_workflows_sample_as_the_demo_command_does(name):
    """The demo graphs make what `generate --demo` makes: the bundle's size and clip length, and the
    command's overlap, colour anchoring, silence handling, motion-frame mix and sampling preset (a graph left at 64 px after the model moved to 128 would
    upscale a 64 px face)."""
    from emocast_core.demo.bundle import DemoBundle
    from emocast_core.generate import (
        DEMO_AUDIO_OFF_IN_SILENCE, DEMO_COLOUR_ANCHOR, DEMO_MOTION_REFERENCE_MIX, DEMO_OVERLAP, DEMO_SPEED,
    )
    from emocast_core.pipeline import SAMPLING_PRESETS

    bundle, preset = DemoBundle(), SAMPLING_PRESETS[DEMO_SPEED]
    nodes = {node["class_type"]: node["inputs"] for node in load(WORKFLOWS / "api" / f"{name}.api.json").values()}
    assert nodes["EmoCASTReferenceEncoder"]["size"] == bundle.size
    assert nodes["EmoCASTAudioFeatures"]["clip_length"] == bundle.clip_length
    sampler = nodes["EmoCASTSampler"]
    assert sampler["overlap"] == DEMO_OVERLAP
    assert sampler["colour_anchor"] is DEMO_COLOUR_ANCHOR
    assert sampler["audio_off_in_silence"] is DEMO_AUDIO_OFF_IN_SILENCE
    assert sampler["motion_reference_mix"] == DEMO_MOTION_REFERENCE_MIX
    assert (sampler["solver"], sampler["steps"], sampler["cfg"]) == (preset.sampler, preset.num_inference_steps, preset.guidance.scale)
