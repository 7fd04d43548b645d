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
    "demo_basic", "demo_emotion_keyframes",
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
