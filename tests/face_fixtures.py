"""Tiny stand-ins for the InsightFace ONNX models, built with ``onnx.helper`` in the real file layout.

* SCRFD: input ``input.1`` (1, 3, H, W) -> 9 outputs (scores (N, 1), boxes (N, 4), keypoints (N, 10)
  for strides 8, 16, 32 of a 640x640 canvas). The outputs are constants that place chosen faces at
  chosen anchors, so letterbox un-mapping, distance decoding and NMS are really exercised.
* ArcFace: input ``input.1`` (1, 3, 112, 112) -> (1, 512): a linear map of the channel means of the
  whole crop and of its left half (so the alignment matters).
* 2d106det: input ``data`` (1, 3, 192, 192) -> ``fc1`` (1, 212): a constant schematic face in the
  normalised [-1, 1] crop coordinates the real model predicts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ANTELOPE_SUBDIR = Path("models") / "insightface" / "models" / "antelopev2"
SCRFD_STRIDES = (8, 16, 32)
SCRFD_ANCHORS = 2
SCRFD_CANVAS = 640
BACKGROUND_SCORE = 0.02

# The astronaut's face in skimage.data.astronaut() (512 x 512), measured by eye.
ASTRONAUT_FACE = {
    "bbox": (175.0, 62.0, 272.0, 182.0),
    "keypoints": ((205.0, 106.0), (246.0, 105.0), (226.0, 127.0), (209.0, 148.0), (243.0, 147.0)),
    "score": 0.93,
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="emocast-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _zero_from_input(input_name: str, mxnet_names: bool = False) -> list[onnx.NodeProto]:
    """Nodes making a (1, 1) zero that depends on the input (so the graph really consumes it).

    ``mxnet_names`` names the first nodes like an MXNet export that normalises its input itself.
    """
    first, second = ("_minusscalar0", "_mulscalar0") if mxnet_names else ("", "")
    return [
        helper.make_node("ReduceMean", [input_name], ["input_mean"], keepdims=1, name=first),
        helper.make_node("Mul", ["input_mean", "zero_scalar"], ["zero_4d"], name=second),
        helper.make_node("Reshape", ["zero_4d", "shape_1x1"], ["zero_1x1"]),
    ]


def _zero_initializers() -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero_scalar"),
        numpy_helper.from_array(np.array([1, 1], dtype=np.int64), "shape_1x1"),
    ]


def letterbox_scale(image_hw: tuple[int, int], canvas: int = SCRFD_CANVAS) -> float:
    """Canvas pixels per source pixel, as the detector's letterbox computes it."""
    height, width = image_hw
    if height / width > 1.0:
        return canvas / height
    return int(canvas * height / width) / height


def scrfd_outputs(faces: list[dict], image_hw: tuple[int, int], duplicate: bool = True) -> list[np.ndarray]:
    """The 9 SCRFD output arrays that make a detector report ``faces`` (source pixel boxes/keypoints).

    Each face is placed at one stride-16 anchor near its centre with its score; with ``duplicate``
    a shifted, lower-scoring copy is added at stride 8 (NMS must remove it).
    """
    scale = letterbox_scale(image_hw)
    scores, boxes, keypoints = {}, {}, {}
    for stride in SCRFD_STRIDES:
        cells = (SCRFD_CANVAS // stride) ** 2 * SCRFD_ANCHORS
        scores[stride] = np.full((cells, 1), BACKGROUND_SCORE, dtype=np.float32)
        boxes[stride] = np.ones((cells, 4), dtype=np.float32)
        keypoints[stride] = np.zeros((cells, 10), dtype=np.float32)

    def place(stride: int, anchor: int, bbox: np.ndarray, kps: np.ndarray, score: float) -> None:
        side = SCRFD_CANVAS // stride
        center_x, center_y = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
        col = int(np.clip(center_x // stride, 0, side - 1))
        row = int(np.clip(center_y // stride, 0, side - 1))
        index = (row * side + col) * SCRFD_ANCHORS + anchor
        anchor_xy = np.array([col * stride, row * stride], dtype=np.float64)
        scores[stride][index, 0] = score
        boxes[stride][index] = np.concatenate([anchor_xy - bbox[:2], bbox[2:] - anchor_xy]) / stride
        keypoints[stride][index] = ((kps - anchor_xy) / stride).reshape(-1)

    for face in faces:
        bbox = np.asarray(face["bbox"], dtype=np.float64) * scale
        kps = np.asarray(face["keypoints"], dtype=np.float64) * scale
        place(16, 1, bbox, kps, face["score"])
        if duplicate:
            shift = 0.04 * (bbox[2] - bbox[0])
            place(8, 0, bbox + shift, kps + shift, face["score"] - 0.05)
    return [scores[s] for s in SCRFD_STRIDES] + [boxes[s] for s in SCRFD_STRIDES] + [keypoints[s] for s in SCRFD_STRIDES]


def save_scrfd(path: Path, faces: list[dict], image_hw: tuple[int, int], duplicate: bool = True) -> Path:
    """A tiny SCRFD ONNX file that 'detects' ``faces`` in an image of size ``image_hw``."""
    arrays = scrfd_outputs(faces, image_hw, duplicate)
    names = [f"score_{s}" for s in SCRFD_STRIDES] + [f"bbox_{s}" for s in SCRFD_STRIDES] + [f"kps_{s}" for s in SCRFD_STRIDES]
    nodes = _zero_from_input("input.1")
    initializers = _zero_initializers()
    outputs = []
    for name, array in zip(names, arrays):
        initializers.append(numpy_helper.from_array(array, f"{name}_const"))
        nodes.append(helper.make_node("Add", [f"{name}_const", "zero_1x1"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
    graph = helper.make_graph(
        nodes,
        "scrfd_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        outputs,
        initializer=initializers,
    )
    return _save(graph, path)


def arcface_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, 512)).astype(np.float32), rng.standard_normal(512).astype(np.float32)


def arcface_reference(blob: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the tiny ArcFace computes for a ``(1, 3, 112, 112)`` blob, in numpy."""
    weights, bias = arcface_weights(seed)
    features = np.concatenate([blob.mean(axis=(2, 3)), (blob * _left_half_mask()).mean(axis=(2, 3))], axis=1)
    return (features @ weights + bias).reshape(-1)


def _left_half_mask() -> np.ndarray:
    mask = np.zeros((1, 1, 112, 112), dtype=np.float32)
    mask[..., :56] = 1.0
    return mask


def save_arcface(path: Path, seed: int = 0) -> Path:
    weights, bias = arcface_weights(seed)
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
        helper.make_node("Mul", ["input.1", "left_half"], ["left"]),
        helper.make_node("GlobalAveragePool", ["left"], ["pooled_left"]),
        helper.make_node("Concat", ["pooled", "pooled_left"], ["features_4d"], axis=1),
        helper.make_node("Flatten", ["features_4d"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "weights"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["1333"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("1333", TensorProto.FLOAT, ["batch", 512])],
        initializer=[
            numpy_helper.from_array(_left_half_mask(), "left_half"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    return _save(graph, path)


def canonical_106_points() -> np.ndarray:
    """``(106, 2)`` schematic face in [-1, 1] crop coordinates (InsightFace 106-point index layout)."""
    points = np.zeros((106, 2), dtype=np.float64)
    # 0 = chin, 1-16 up one side, 17-32 up the other, to ear level.
    jaw_angles = np.linspace(0.0, np.deg2rad(100.0), 17)
    points[0] = [0.0, 0.6]
    points[1:17] = np.stack([-0.5 * np.sin(jaw_angles[1:]), 0.6 * np.cos(jaw_angles[1:])], axis=1)
    points[17:33] = np.stack([0.5 * np.sin(jaw_angles[1:]), 0.6 * np.cos(jaw_angles[1:])], axis=1)
    points[33:43] = np.stack([np.linspace(-0.35, -0.12, 10), np.full(10, -0.15)], axis=1)
    points[87:97] = np.stack([np.linspace(0.12, 0.35, 10), np.full(10, -0.15)], axis=1)
    points[43:52] = np.stack([np.linspace(-0.42, -0.1, 9), np.full(9, -0.3)], axis=1)
    points[97:106] = np.stack([np.linspace(0.1, 0.42, 9), np.full(9, -0.3)], axis=1)
    points[72:87] = np.stack([np.zeros(15), np.linspace(-0.15, 0.15, 15)], axis=1)
    lip_angles = np.linspace(0.0, 2.0 * np.pi, 20, endpoint=False)
    points[52:72] = np.stack([0.2 * np.cos(lip_angles), 0.33 + 0.07 * np.sin(lip_angles)], axis=1)
    return points


def save_landmark106(path: Path, mxnet_names: bool = True) -> Path:
    prediction = canonical_106_points().astype(np.float32).reshape(1, 212)
    nodes = _zero_from_input("data", mxnet_names) + [helper.make_node("Add", ["points", "zero_1x1"], ["fc1"])]
    graph = helper.make_graph(
        nodes,
        "landmark106_tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 192, 192])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 212])],
        initializer=_zero_initializers() + [numpy_helper.from_array(prediction, "points")],
    )
    return _save(graph, path)


def write_antelopev2(
    root: Path,
    faces: list[dict],
    image_hw: tuple[int, int],
    *,
    with_landmarker: bool = True,
    duplicate: bool = True,
) -> Path:
    """Write the three tiny models under ``root/models/insightface/models/antelopev2``; returns that folder."""
    folder = root / ANTELOPE_SUBDIR
    save_scrfd(folder / "scrfd_10g_bnkps.onnx", faces, image_hw, duplicate)
    save_arcface(folder / "glintr100.onnx")
    if with_landmarker:
        save_landmark106(folder / "2d106det.onnx")
    return folder
