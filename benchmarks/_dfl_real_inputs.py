"""Inputs for benchmarks/bench_dfl_real.py: the clip, the DFM stand-ins, and a stand-in for a model file
that a DeepFaceLive checkout may lack (files of 4 MB and more are sometimes missing from copies).

Nothing here is DeepFaceLive's code. ``build_yolov5face_standin`` makes an ONNX model with the
interface DFL's ``modelhub/onnx/YoloV5Face`` wrapper expects (input (N, 3, H, W) float32; three outputs
(N, 48, H/8, W/8), (N, 48, H/16, W/16), (N, 48, H/32, W/32): 3 anchors x [cx, cy, w, h, obj, 10
landmarks, cls]) and the size of the real file (about 7.07 M parameters, 28 MB, like YOLOv5s-face).
Its compute is a YOLOv5s-like conv stack of about 1.7 G multiply-adds at DFL's default 480x480
window (YOLOv5s-face's published 5.75 GFLOPs at 640, scaled to 480); the real file is not in this
checkout, so its cost on this machine could not be measured. Its detections do not come from the
picture: the heads' outputs are scaled to almost nothing and a constant puts one confident
detection on the face of the clip made by ``write_clip`` (for the 480 window only).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Tuple

import numpy as np

WINDOW = 480  # DFL's default FaceDetector window: YoloV5Face sees (N, 3, 480, 480)
ASTRONAUT_FACE = (178.0, 65.0, 269.0, 176.0)  # l, t, r, b of the face in the 512x512 astronaut photo (YuNet-n)
_LEVELS = ((8, ((4, 5), (8, 10), (13, 16))), (16, ((23, 29), (43, 55), (73, 105))),
           (32, ((146, 217), (231, 300), (335, 433))))


def clip_geometry(width: int, height: int) -> Tuple[float, float, float]:
    """(scale, x offset, y offset) of the 512x512 picture inside a width x height frame."""
    scale = min(width, height) / 512.0
    return scale, (width - 512 * scale) / 2.0, (height - 512 * scale) / 2.0


def face_box_in_window(width: int, height: int) -> Tuple[float, float, float, float]:
    """Where the clip's face lands in the detector's 480 window (DFL fits the frame in, top-left, padded)."""
    scale, x0, y0 = clip_geometry(width, height)
    fit = WINDOW / float(max(width, height))
    left, top, right, bottom = ASTRONAUT_FACE
    return ((x0 + left * scale) * fit, (y0 + top * scale) * fit, (x0 + right * scale) * fit, (y0 + bottom * scale) * fit)


def write_clip(path: Path, picture: Path, width: int, height: int, frames: int = 90, fps: float = 30.0) -> Path:
    """An MP4 (mpeg4) of the picture at width x height, moving by a few pixels so that frames differ."""
    import cv2

    image = cv2.imread(str(picture))
    if image is None:
        raise FileNotFoundError("picture not found or unreadable: %s" % picture)
    scale, x0, y0 = clip_geometry(width, height)
    side = int(round(512 * scale))
    face = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write %s (no mp4v encoder)" % path)
    try:
        for i in range(frames):
            frame = np.zeros((height, width, 3), np.uint8)
            dx = int(round(3 * math.sin(2 * math.pi * i / frames)))
            dy = int(round(2 * math.cos(2 * math.pi * i / frames)))
            x, y = int(round(x0)) + dx, int(round(y0)) + dy
            src = face[max(0, -y):side - max(0, y + side - height), max(0, -x):side - max(0, x + side - width)]
            frame[max(0, y):max(0, y) + src.shape[0], max(0, x):max(0, x) + src.shape[1]] = src
            writer.write(frame)
    finally:
        writer.release()
    return path


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def _detection_bias(box: Tuple[float, float, float, float]) -> List[np.ndarray]:
    """Per level a (1, 48, h, w) constant: objectness -20 everywhere, +12 for one anchor on ``box``."""
    left, top, right, bottom = box
    cx, cy, bw, bh = (left + right) / 2, (top + bottom) / 2, right - left, bottom - top
    biases = []
    best = min(((abs(math.log(bw / a[0])) + abs(math.log(bh / a[1])), li, ai)
                for li, (_, anchors) in enumerate(_LEVELS) for ai, a in enumerate(anchors)))
    for li, (stride, anchors) in enumerate(_LEVELS):
        cells = WINDOW // stride
        bias = np.zeros((1, 48, cells, cells), np.float32)
        bias[:, 4::16] = -20.0
        if li == best[1]:
            a = best[2]
            gx, gy = int(cx // stride), int(cy // stride)
            aw, ah = anchors[a]
            bias[0, a * 16 + 0, gy, gx] = _logit((cx / stride - gx + 0.5) / 2)
            bias[0, a * 16 + 1, gy, gx] = _logit((cy / stride - gy + 0.5) / 2)
            bias[0, a * 16 + 2, gy, gx] = _logit(math.sqrt(bw / aw) / 2)
            bias[0, a * 16 + 3, gy, gx] = _logit(math.sqrt(bh / ah) / 2)
            bias[0, a * 16 + 4, gy, gx] = 12.0
        biases.append(bias)
    return biases


PAD_PARAMS = 3_100_000  # weights read through a Gather: the file gets the real model's size at almost no compute


def _add_weight_padding(x: str, params: int, rng, const, nodes, helper) -> str:
    """x plus 0 x (one row of a ``params``-weight table picked by an input-dependent index): size, no cost."""
    cols = 1024
    table = const("pad_table", rng.standard_normal((max(1, params // cols), cols)).astype(np.float32))
    nodes.append(helper.make_node("ReduceMin", [x], ["pad_min"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["pad_min", const("pad_zero", np.zeros((), np.float32))], ["pad_zeroed"]))
    nodes.append(helper.make_node("Cast", ["pad_zeroed"], ["pad_index"], to=7))  # int64 0, input-dependent
    nodes.append(helper.make_node("Gather", [table, "pad_index"], ["pad_row"], axis=0))
    nodes.append(helper.make_node("ReduceSum", ["pad_row"], ["pad_sum"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["pad_sum", "pad_zero"], ["pad_term"]))
    nodes.append(helper.make_node("Add", [x, "pad_term"], [x + "_padded"]))
    return x + "_padded"


def build_yolov5face_standin(box: Tuple[float, float, float, float], seed: int = 0, width: float = 1.0):
    """The YoloV5Face-shaped stand-in (see the module docstring) as an onnx.ModelProto.

    ``width`` scales every layer's channels (0.5: about a quarter of the compute, near the detector
    cost that issue 17's DFL figures imply); the file keeps the real model's size.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(seed)
    inits, nodes = [], []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(math.sqrt(2.0 / (cin * k * k)))
        nodes.append(helper.make_node("Conv", [x, const(name + "_w", w), const(name + "_b", np.zeros(cout))],
                                      [name], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return name
        nodes.append(helper.make_node("Relu", [name], [name + "_r"]))
        return name + "_r"

    c = [max(4, int(round(n * width))) for n in (32, 64, 128, 256, 512)]
    x = conv("input", 3, c[0], 3, 2, "stem")                     # 240
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[2, 2], strides=[2, 2]))
    x = conv("pool", c[0], c[1], 3, 1, "c1")                     # 120
    p3 = conv(x, c[1], c[2], 3, 2, "c2")                         # 60 (stride 8)
    p4 = conv(p3, c[2], c[3], 3, 2, "c3")                        # 30 (stride 16)
    x = conv(p4, c[3], c[4], 3, 2, "c4")                         # 15 (stride 32)
    p5 = conv(x, c[4], c[4], 3, 1, "c5")
    p5 = _add_weight_padding(p5, PAD_PARAMS, rng, const, nodes, helper)
    outputs = []
    tiny = const("tiny", np.array([1e-6], np.float32))
    for i, (feat, cin, bias) in enumerate(zip((p3, p4, p5), (c[2], c[3], c[4]), _detection_bias(box))):
        head = conv(feat, cin, 48, 1, 1, "head%d" % i, relu=False)
        nodes.append(helper.make_node("Mul", [head, tiny], ["head%d_s" % i]))
        nodes.append(helper.make_node("Add", ["head%d_s" % i, const("det%d" % i, bias)], ["out%d" % i]))
        outputs.append(helper.make_tensor_value_info("out%d" % i, TensorProto.FLOAT, ["N", 48, None, None]))
    graph = helper.make_graph(nodes, "yolov5face_standin",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model
