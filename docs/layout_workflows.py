"""Lay out the example workflows in `workflows/`: nodes in named groups, none overlapping, and a note in each
that says which model file goes in which folder and where to get it.

    python docs/layout_workflows.py                 # every workflows/*.json, rewritten in place
    python docs/layout_workflows.py workflows/x.json

Only the drawing changes (node positions and sizes, `groups`, the note node); the graph, the widget values
and the API twins in `workflows/api/` stay as they are. Not part of the node pack: a maintenance tool, like
`render_workflows.py`, which draws the result for the documentation.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NOTE_TYPES = ("Note", "MarkdownNote")
DEMO_CHOICE = "demo (built-in synthetic model)"

TITLE_HEIGHT = 30  # the node's title bar sits above its `pos`
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
NODE_GAP = 30  # between two nodes of a group
GROUP_PADDING = 20
GROUP_TITLE = 40
GROUP_GAP = 50  # between two groups, and between two columns
NOTE_WIDTH = 440

# Groups, left to right; groups that share a column are stacked in this order.
COLUMNS = (
    ("Read me first",),
    ("SD1.5 portrait",),
    ("Portrait and speech", "Load the models"),
    ("Conditioning",),
    ("Generate",),
    ("Post-process and save",),
)
GROUP_COLOURS = {
    "Read me first": "#8A8A3A", "SD1.5 portrait": "#8A5A9E", "Portrait and speech": "#3F8E6E",
    "Load the models": "#3F789E", "Conditioning": "#A1723F", "Generate": "#B0503F",
    "Post-process and save": "#5E6E8E",
}
GROUP_OF_TYPE = {
    "LoadImage": "Portrait and speech", "LoadAudio": "Portrait and speech", "LoadVideo": "Portrait and speech",
    "CheckpointLoaderSimple": "SD1.5 portrait", "CLIPTextEncode": "SD1.5 portrait",
    "EmptyLatentImage": "SD1.5 portrait", "KSampler": "SD1.5 portrait", "VAEDecode": "SD1.5 portrait",
    "EmoCASTReferenceEncoder": "Conditioning", "EmoCASTEmotionEncode": "Conditioning",
    "EmoCASTAudioFeatures": "Conditioning", "EmoCASTSampler": "Generate",
}
# Extra body height for what a node shows besides its widgets (image/video previews, text boxes).
EXTRA_HEIGHT = {
    "LoadImage": 250, "LoadAudio": 60, "SaveVideo": 260, "EmoCASTVideoCombine": 260, "PreviewImage": 250,
    "CLIPTextEncode": 90, "EmoCASTEmotionEncode": 150, "KSampler": 10,
}
WIDE_TYPES = {"CLIPTextEncode": 400, "EmoCASTEmotionEncode": 400, "EmoCASTSampler": 360}

# What each loader needs, for the note: (folder and file, where to get it).
MODEL_NOTES = {
    "EmoCASTModelLoader": [
        ("models/emocast/net.pth (or a converted net.safetensors)", "https://huggingface.co/Jmaomao/EmoCAST"),
        ("models/vae/sd-vae-ft-mse/ (config.json + diffusion_pytorch_model.safetensors)",
         "https://huggingface.co/stabilityai/sd-vae-ft-mse"),
    ],
    "EmoCASTTextEncoderLoader": [
        ("models/text_encoders/clip_l.safetensors",
         ("ComfyUI's usual clip_l.safetensors, or the text model of "
          "https://huggingface.co/openai/clip-vit-large-patch14")),
    ],
    "EmoCASTAudioEncoderLoader": [
        ("models/audio_encoders/wav2vec2-base-960h/ (config.json, model.safetensors, preprocessor_config.json)",
         "https://huggingface.co/facebook/wav2vec2-base-960h"),
    ],
    "EmoCASTFaceAnalyzerLoader": [
        ("models/insightface/models/antelopev2/ (scrfd_10g_bnkps.onnx, glintr100.onnx, 2d106det.onnx)",
         "the InsightFace antelopev2 pack (non-commercial licence)"),
    ],
    "CheckpointLoaderSimple": [
        ("models/checkpoints/: an SD1.5 checkpoint, e.g. v1-5-pruned-emaonly-fp16.safetensors",
         "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive"),
    ],
    "VAELoader": [
        ("models/vae/vae-ft-mse-840000-ema-pruned.safetensors",
         "https://huggingface.co/stabilityai/sd-vae-ft-mse-original"),
    ],
    "CLIPLoader": [
        ("models/text_encoders/clip_l.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders"),
    ],
}


def group_of(node: dict, depth: dict[int, int], sampler_depth: int | None) -> str:
    kind = node["type"]
    if kind in NOTE_TYPES:
        return "Read me first"
    if kind in GROUP_OF_TYPE:
        return GROUP_OF_TYPE[kind]
    if kind.endswith("Loader") or "Loader" in kind:
        return "Load the models"
    if kind.startswith("Load"):
        return "Portrait and speech"
    if sampler_depth is not None and depth[node["id"]] < sampler_depth:
        return "Conditioning"
    if kind.startswith("EmoCAST") and "Sampler" in kind:
        return "Generate"
    return "Post-process and save"


def node_size(node: dict) -> list[int]:
    if node["type"] in NOTE_TYPES:
        lines = sum(max(1, len(line) // 58 + 1) for line in node["widgets_values"][0].splitlines())
        return [NOTE_WIDTH, 20 + 17 * lines]
    links_in = len(node.get("inputs") or [])
    outputs = len(node.get("outputs") or [])
    widgets = len(node.get("widgets_values") or [])
    height = max(links_in, outputs, 1) * SLOT_HEIGHT + 12 + widgets * WIDGET_HEIGHT + EXTRA_HEIGHT.get(node["type"], 0)
    return [WIDE_TYPES.get(node["type"], 340), height]


def depths(workflow: dict) -> dict[int, int]:
    """Longest path from a source, per node id."""
    sources: dict[int, list[int]] = {node["id"]: [] for node in workflow["nodes"]}
    for _, src, _, dst, _, _ in workflow["links"]:
        sources[dst].append(src)
    found: dict[int, int] = {}

    def depth(node_id: int) -> int:
        if node_id not in found:
            found[node_id] = 1 + max((depth(src) for src in sources[node_id]), default=-1)
        return found[node_id]

    for node_id in sources:
        depth(node_id)
    return found


def note_text(workflow: dict, name: str) -> str:
    nodes = workflow["nodes"]
    demo = any(DEMO_CHOICE in (node.get("widgets_values") or []) for node in nodes)
    lines = []
    if demo:
        lines += [("Nothing to download: every EmoCAST loader is set to the built-in synthetic demo model, and "
                   "Load Image / Load Audio use the demo portrait and speech that the pack copies into "
                   "ComfyUI's input folder. The demo model draws cartoon faces; for real portraits use the "
                   "emocast_* workflows and the released weights."), ""]
    kinds = [node["type"] for node in nodes]
    needs = [entry for kind in dict.fromkeys(kinds) if not demo or kind not in MODEL_NOTES or not kind.startswith("EmoCAST")
             for entry in MODEL_NOTES.get(kind, [])]
    if needs:
        lines += ["Model files (folders inside ComfyUI/):"]
        lines += [f"- {where}\n  from {source}" for where, source in needs]
        lines += ["After adding files, press R to refresh the lists and pick them in the loaders.", ""]
    if not demo and "LoadImage" in kinds:
        lines += ["Load Image: a frontal portrait. Load Audio: the speech (wav, mp3, flac...).", ""]
    lines += ["Nothing is downloaded at run time. Full table: docs/comfyui.md in the pack."]
    return "\n".join(lines)


def lay_out(workflow: dict, name: str) -> dict:
    nodes = [node for node in workflow["nodes"] if node["type"] not in NOTE_TYPES]
    notes = [node for node in workflow["nodes"] if node["type"] in NOTE_TYPES]
    if not notes:
        workflow["last_node_id"] += 1
        notes = [{"id": workflow["last_node_id"], "type": "Note", "pos": [0, 0], "size": [NOTE_WIDTH, 100],
                  "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [], "properties": {},
                  "widgets_values": [""], "color": "#432", "bgcolor": "#653"}]
    notes[0]["widgets_values"] = [note_text(workflow, name)]
    notes[0]["title"] = "Read me: what to load where"
    workflow["nodes"] = nodes + notes

    depth = depths(workflow)
    sampler_depth = min((depth[node["id"]] for node in nodes if node["type"] == "EmoCASTSampler"), default=None)
    members: dict[str, list[dict]] = {}
    for node in workflow["nodes"]:
        node["size"] = node_size(node)
        members.setdefault(group_of(node, depth, sampler_depth), []).append(node)
    for group in members.values():
        group.sort(key=lambda node: (depth[node["id"]], node["id"]))

    # A group that is a chain (links inside it) reads top to bottom in link order; the others are ordered
    # by where the nodes they connect to sit, so that fewer links cross (a few passes settle it).
    title_of = {node["id"]: title for title, group in members.items() for node in group}
    neighbours: dict[int, list[int]] = {node["id"]: [] for node in workflow["nodes"]}
    chains = set()
    for _, src, _, dst, _, _ in workflow["links"]:
        if title_of[src] == title_of[dst]:
            chains.add(title_of[src])
        else:
            neighbours[src].append(dst)
            neighbours[dst].append(src)
    groups = place(members)
    for _ in range(3):
        centre = {node["id"]: node["pos"][1] + node["size"][1] / 2 for node in workflow["nodes"]}
        for title, group in members.items():
            if title not in chains:
                group.sort(key=lambda node: sum(centre[n] for n in neighbours[node["id"]]) / len(neighbours[node["id"]])
                           if neighbours[node["id"]] else centre[node["id"]])
        groups = place(members)
    workflow["groups"] = groups
    return workflow


def place(members: dict[str, list[dict]]) -> list[dict]:
    groups, x = [], 0
    for column in COLUMNS:
        present = [title for title in column if title in members]
        if not present:
            continue
        width = max(node["size"][0] for title in present for node in members[title]) + 2 * GROUP_PADDING
        y = 0
        for title in present:
            top = y
            y += GROUP_TITLE
            for node in members[title]:
                node["pos"] = [x + GROUP_PADDING, y + TITLE_HEIGHT]
                y += TITLE_HEIGHT + node["size"][1] + NODE_GAP
            y += GROUP_PADDING - NODE_GAP
            groups.append({"id": len(groups) + 1, "title": title, "bounding": [x, top, width, y - top],
                           "color": GROUP_COLOURS[title], "font_size": 24, "flags": {}})
            y += GROUP_GAP
        x += width + GROUP_GAP
    return groups


def main(paths: list[str]) -> None:
    for path in [Path(p) for p in paths] or sorted(WORKFLOWS.glob("*.json")):
        workflow = lay_out(json.loads(path.read_text(encoding="utf-8")), path.stem)
        path.write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"laid out {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
