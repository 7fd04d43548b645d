"""Draw the example workflows as pictures for the documentation (no browser needed).

    python docs/render_workflows.py                       # every workflows/*.json -> docs/images/<name>.png
    python docs/render_workflows.py workflows/x.json --out /some/folder

Reads a workflow in ComfyUI's UI format and draws what the editor shows, simplified: groups with their
titles, nodes with their titles, input and output slot names and widget values, links as curves from
output to input, and the text of note nodes. Node titles come from the API twin in `workflows/api/` where
there is one (its `_meta.title`), else the node type. Needs only Pillow (10.1 or newer, for sized
fonts). Not part of the node pack.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

REPO = Path(__file__).resolve().parents[1]
NOTE_TYPES = ("Note", "MarkdownNote")
DIGEST_KEY = "workflow-sha256"  # PNG text chunk: the digest of the workflow the picture was drawn from

SCALE = 0.75  # canvas units -> pixels
MARGIN = 20  # canvas units around the drawing
TITLE_HEIGHT = 30  # as the editor draws it: the title bar sits above the node's `pos`
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
BACKGROUND = (32, 32, 32)
NODE_BODY = (53, 53, 53)
NODE_TITLE = (34, 34, 34)
NOTE_BODY = (102, 85, 51)
NOTE_TITLE = (68, 51, 34)
TEXT = (220, 220, 220)
DIM_TEXT = (150, 150, 150)
LINK_COLOURS = {
    "IMAGE": (100, 181, 246), "AUDIO": (180, 140, 240), "MASK": (129, 199, 132), "LATENT": (255, 158, 196),
    "MODEL": (176, 160, 255), "CLIP": (255, 210, 80), "VAE": (255, 110, 110), "CONDITIONING": (255, 170, 90),
    "FLOAT": (170, 238, 136), "INT": (170, 238, 136), "VIDEO": (120, 200, 200),
}
EMOCAST_LINK = (230, 160, 90)


def font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, round(size * SCALE)))


def node_titles(workflow_path: Path) -> dict[int, str]:
    twin = workflow_path.parent / "api" / f"{workflow_path.stem}.api.json"
    if not twin.is_file():
        return {}
    prompt = json.loads(twin.read_text(encoding="utf-8"))
    return {int(key): node.get("_meta", {}).get("title", node["class_type"]) for key, node in prompt.items()}


class Canvas:
    def __init__(self, left: float, top: float, right: float, bottom: float):
        self.left, self.top = left - MARGIN, top - MARGIN
        self.image = Image.new("RGB", self.size_for(left, top, right, bottom), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image, "RGBA")

    @staticmethod
    def size_for(left: float, top: float, right: float, bottom: float) -> tuple[int, int]:
        return round((right - left + 2 * MARGIN) * SCALE), round((bottom - top + 2 * MARGIN) * SCALE)

    def at(self, x: float, y: float) -> tuple[float, float]:
        return (x - self.left) * SCALE, (y - self.top) * SCALE

    def box(self, x, y, w, h, fill, outline=None, radius=6):
        self.draw.rounded_rectangle([*self.at(x, y), *self.at(x + w, y + h)], radius=radius * SCALE, fill=fill,
                                    outline=outline)

    def text(self, x, y, value: str, size: float, fill=TEXT, anchor="la"):
        self.draw.text(self.at(x, y), value, font=font(size), fill=fill, anchor=anchor)

    def curve(self, start, end, colour):
        (x0, y0), (x3, y3) = start, end
        reach = max(60.0, abs(x3 - x0) * 0.5)
        x1, x2 = x0 + reach, x3 - reach
        points = []
        for i in range(33):
            t = i / 32
            x = (1 - t) ** 3 * x0 + 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t ** 2 * x2 + t ** 3 * x3
            y = (1 - t) ** 3 * y0 + 3 * (1 - t) ** 2 * t * y0 + 3 * (1 - t) * t ** 2 * y3 + t ** 3 * y3
            points.append(self.at(x, y))
        self.draw.line(points, fill=colour, width=max(1, round(3 * SCALE)), joint="curve")


def clip_text(value: str, width: float, size: float) -> str:
    """Cut ``value`` to what fits in ``width`` canvas units."""
    face = font(size)
    if face.getlength(value) <= width * SCALE:
        return value
    while value and face.getlength(value + "...") > width * SCALE:
        value = value[:-1]
    return value + "..."


def wrap(value: str, width: float, size: float) -> list[str]:
    face, lines = font(size), []
    for paragraph in value.splitlines() or [""]:
        indent = " " * (len(paragraph) - len(paragraph.lstrip()) or (2 if paragraph.startswith("- ") else 0))
        line = paragraph[:len(paragraph) - len(paragraph.lstrip())]
        for word in paragraph.split():
            candidate = f"{line} {word}" if line.strip() else line + word
            if line.strip() and face.getlength(candidate) > width * SCALE:
                lines.append(line)
                line = indent + word
            else:
                line = candidate
        lines.append(line)
    return lines


def input_slot(node: dict, index: int) -> tuple[float, float]:
    return node["pos"][0], node["pos"][1] + (index + 0.5) * SLOT_HEIGHT + 4


def output_slot(node: dict, index: int) -> tuple[float, float]:
    return node["pos"][0] + node["size"][0], node["pos"][1] + (index + 0.5) * SLOT_HEIGHT + 4


def widget_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if value is None:
        return "-"
    return str(value).replace("\n", " / ") if str(value) != "" else '""'


def extent(workflow: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of everything drawn, in canvas units."""
    rects = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], n["size"][1] + TITLE_HEIGHT)
             for n in workflow["nodes"]]
    rects += [tuple(group["bounding"]) for group in workflow.get("groups", [])]
    return (min(r[0] for r in rects), min(r[1] for r in rects),
            max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects))


def picture_size(workflow: dict) -> tuple[int, int]:
    """The size in pixels of the picture `render` draws for ``workflow``."""
    return Canvas.size_for(*extent(workflow))


def render(workflow_path: Path) -> Image.Image:
    workflow = json.loads(workflow_path.read_text(encoding="utf-8"))
    titles = node_titles(workflow_path)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    canvas = Canvas(*extent(workflow))

    for group in workflow.get("groups", []):
        x, y, w, h = group["bounding"]
        colour = tuple(int(group.get("color", "#3f789e")[i:i + 2], 16) for i in (1, 3, 5))
        canvas.box(x, y, w, h, fill=(*colour, 70), outline=(*colour, 200), radius=4)
        canvas.text(x + 10, y + 8, group["title"], group.get("font_size", 24), fill=(*colour, 255))

    # Links under the nodes, as the editor draws them.
    for _, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        colour = LINK_COLOURS.get(kind, EMOCAST_LINK if kind.startswith("EMOCAST") else TEXT)
        canvas.curve(output_slot(nodes[src], src_slot), input_slot(nodes[dst], dst_slot), (*colour, 220))

    for node in nodes.values():
        x, y = node["pos"]
        w, h = node["size"]
        is_note = node["type"] in NOTE_TYPES
        canvas.box(x, y - TITLE_HEIGHT, w, h + TITLE_HEIGHT, fill=NOTE_BODY if is_note else NODE_BODY)
        canvas.box(x, y - TITLE_HEIGHT, w, TITLE_HEIGHT, fill=NOTE_TITLE if is_note else NODE_TITLE)
        title = node.get("title") or titles.get(node["id"]) or node["type"]
        canvas.text(x + 10, y - TITLE_HEIGHT / 2, clip_text(title, w - 20, 16), 16, anchor="lm")
        if is_note:
            for row, line in enumerate(wrap(node["widgets_values"][0], w - 20, 13)):
                if 8 + (row + 1) * 17 > h:
                    break
                canvas.text(x + 10, y + 8 + row * 17, line, 13)
            continue
        inputs, outputs = node.get("inputs") or [], node.get("outputs") or []
        for index, slot in enumerate(inputs):
            sx, sy = input_slot(node, index)
            canvas.draw.ellipse([*canvas.at(sx - 4, sy - 4), *canvas.at(sx + 4, sy + 4)], fill=DIM_TEXT)
            canvas.text(sx + 10, sy, clip_text(slot["name"], w / 2 - 14, 13), 13, anchor="lm")
        for index, slot in enumerate(outputs):
            sx, sy = output_slot(node, index)
            canvas.draw.ellipse([*canvas.at(sx - 4, sy - 4), *canvas.at(sx + 4, sy + 4)], fill=DIM_TEXT)
            canvas.text(sx - 10, sy, clip_text(slot["name"], w / 2 - 14, 13), 13, anchor="rm")
        top = y + max(len(inputs), len(outputs)) * SLOT_HEIGHT + 8
        for index, value in enumerate(node.get("widgets_values") or []):
            if top + (index + 1) * WIDGET_HEIGHT > y + h:
                break
            row = top + index * WIDGET_HEIGHT
            canvas.box(x + 10, row + 2, w - 20, WIDGET_HEIGHT - 4, fill=(34, 34, 34), radius=8)
            canvas.text(x + 20, row + WIDGET_HEIGHT / 2, clip_text(widget_text(value), w - 40, 12), 12,
                        fill=DIM_TEXT, anchor="lm")

    return canvas.image


def source_digest(workflow: dict) -> str:
    """What a picture records of the workflow it shows, so that a stale picture can be noticed."""
    canonical = json.dumps(workflow, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def save_small(image: Image.Image, path: Path, digest: str) -> None:
    """A palette PNG (flat colours and text compress far better than in RGB) that names its source."""
    info = PngImagePlugin.PngInfo()
    info.add_text(DIGEST_KEY, digest)
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True, pnginfo=info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", type=Path, help="UI workflow files (default: workflows/*.json)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="folder for the PNG files")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    for path in options.workflows or sorted((REPO / "workflows").glob("*.json")):
        target = options.out / f"{path.stem}.png"
        save_small(render(path), target, source_digest(json.loads(path.read_text(encoding="utf-8"))))
        print(f"{target} ({target.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
