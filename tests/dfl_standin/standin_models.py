"""The stand-in DFL's detector and marker models, built with ``onnx`` (nothing downloaded, nothing shipped).

DFL's ``YoloV5Face.onnx`` (28 MB) is not in its repository snapshot here, and its FaceMesh is not
ours to ship, so the stand-in builds models of the same shape:

- ``YoloV5Face.onnx``: input ``input`` float32 NCHW (1, 3, H, W) BGR 0..1, three outputs
  (1, 48, H/8, W/8), (1, 48, H/16, W/16), (1, 48, H/32, W/32): 3 anchors x (cx, cy, w, h, obj,
  10 landmark values, class), decoded by DFL's YoloV5Face post-processing. A convolution tower
  carries the cost; its contribution is scaled to almost nothing. What the outputs say comes from a
  designed head: objectness from skin chroma (R - B) pooled over the stride-32 grid, so the face the
  stand-in's FileSource paints is found where it is; boxes of a fixed 180 px in the 480 window.
- ``FaceMesh.onnx``: input ``input_1`` float32 NHWC (1, 192, 192, 3), outputs ``conv2d_21``
  (1, 1, 1, 1404) (468 x, y, z in the 192 crop's pixels) and ``conv2d_31`` (1, 1, 1, 1); a
  convolution tower for the cost, and landmarks on the stand-in's 468-point template
  (``xlib.face.UNI_LANDMARKS_468``) placed in the crop.

``build_models(folder)`` writes both (once; later calls reuse the files).
"""

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: objectness logit gain and offset on the 5x5-cell mean of (R - B) at stride 32
SKIN_GAIN, SKIN_OFFSET = 60.0, 0.14
#: the stand-in detector's box side in the detector's window (pixels); FileSource paints faces of this size there
BOX_SIDE = 180.0
ANCHORS_32 = ((146, 217), (231, 300), (335, 433))
#: detector tower channels at strides 2, 4, 8, 16, 32, by cost preset: "light" about the detector cost
#: the DFL figures of issue 17 imply (about 6 ms a frame on one thread here), "yolov5s" about
#: YOLOv5s-face's published cost at DFL's 480 window (about 1.5 G multiply-adds)
YOLO_PRESETS = {"light": (16, 24, 48, 64, 96), "yolov5s": (32, 48, 96, 192, 384)}
MESH_CHANNELS = (16, 32, 48, 64)


def _logit(p):
    return float(np.log(p / (1.0 - p)))


class _Graph:
    def __init__(self, seed):
        from onnx import helper

        self.helper = helper
        self.rng = np.random.RandomState(seed)
        self.nodes, self.inits = [], []
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return "%s_%d" % (prefix, self.count)

    def const(self, array, prefix="w"):
        from onnx import numpy_helper

        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def op(self, kind, inputs, output=None, **attrs):
        output = output or self.name(kind.lower())
        self.nodes.append(self.helper.make_node(kind, list(inputs), [output], **attrs))
        return output

    def conv(self, x, cin, cout, k=3, stride=1, relu=True, scale=1.0, bias=None):
        w = self.rng.randn(cout, cin, k, k).astype(np.float32) * (scale * np.sqrt(2.0 / (cin * k * k)))
        b = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32)
        y = self.op("Conv", [x, self.const(w), self.const(b, "b")], kernel_shape=[k, k], strides=[stride, stride],
                    pads=[k // 2] * 4)
        return self.op("Relu", [y]) if relu else y

    def model(self, inputs, outputs):
        import onnx

        graph = self.helper.make_graph(self.nodes, "standin", inputs, outputs, self.inits)
        model = self.helper.make_model(graph, opset_imports=[self.helper.make_opsetid("", 12)])
        model.ir_version = 7
        onnx.checker.check_model(model)
        return model


def build_yolov5face(seed=0, cost="light"):
    """The YoloV5Face-shaped detector (see the module docstring); ``cost``: a ``YOLO_PRESETS`` name."""
    from onnx import TensorProto

    g = _Graph(seed)
    helper = g.helper
    x = "input"
    c2, c4, c8, c16, c32 = YOLO_PRESETS[cost]
    t = g.conv(x, 3, c2, stride=2)
    t = g.conv(t, c2, c4, stride=2)
    t = g.conv(t, c4, c4)
    f8 = g.conv(g.conv(t, c4, c8, stride=2), c8, c8)
    f16 = g.conv(g.conv(f8, c8, c16, stride=2), c16, c16)
    f32 = g.conv(f16, c16, c32, stride=2)
    quiet = np.zeros(48, np.float32)
    for a in range(3):
        quiet[a * 16 + 4] = -20.0  # no objectness at strides 8 and 16, nor for the other stride-32 anchors
    out8 = g.conv(f8, c8, 48, k=1, relu=False, scale=1e-4, bias=quiet)
    out16 = g.conv(f16, c16, 48, k=1, relu=False, scale=1e-4, bias=quiet)
    # the designed stride-32 head: skin chroma pooled per cell, smoothed over 5x5 cells
    pooled = g.op("AveragePool", [x], kernel_shape=[32, 32], strides=[32, 32])
    skin = g.op("Conv", [pooled, g.const(np.float32([-1, 0, 1]).reshape(1, 3, 1, 1)), g.const(np.zeros(1), "b")],
                kernel_shape=[1, 1])
    smooth = g.op("AveragePool", [skin], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2], count_include_pad=0)
    head_w = np.zeros((48, 1, 1, 1), np.float32)
    head_w[4, 0] = SKIN_GAIN
    head_b = quiet.copy()
    head_b[4] = -SKIN_GAIN * SKIN_OFFSET
    side = np.sqrt(BOX_SIDE / np.float32(ANCHORS_32[0])) / 2.0  # w = (2 sigmoid(t))^2 * anchor
    head_b[2], head_b[3] = _logit(side[0]), _logit(side[1])
    head = g.op("Conv", [smooth, g.const(head_w), g.const(head_b, "b")], kernel_shape=[1, 1])
    tower32 = g.conv(f32, c32, 48, k=1, relu=False, scale=1e-4)
    out32 = g.op("Add", [head, tower32], "out32")
    outputs = []
    for name, tensor in (("out8", out8), ("out16", out16), ("out32", out32)):
        if tensor != name:
            g.op("Identity", [tensor], name)
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 48, None, None]))
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])]
    return g.model(inputs, outputs)


def facemesh_template_pixels():
    """Where the stand-in FaceMesh puts its 468 landmarks in the 192 crop (pixels, z = 0)."""
    sys.path.insert(0, str(HERE))
    try:
        from xlib.face import UNI_LANDMARKS_468
    finally:
        sys.path.remove(str(HERE))
    pts = np.zeros((468, 3), np.float32)
    pts[:, :2] = (UNI_LANDMARKS_468 * 0.62 + 0.19) * 192.0
    return pts


def build_facemesh(seed=1):
    """The FaceMesh-shaped marker (see the module docstring)."""
    from onnx import TensorProto

    g = _Graph(seed)
    helper = g.helper
    x = g.op("Transpose", ["input_1"], perm=[0, 3, 1, 2])
    channels = (3,) + MESH_CHANNELS
    for cin, cout in zip(channels[:-1], channels[1:]):
        x = g.conv(g.conv(x, cin, cout, stride=2), cout, cout)
    pooled = g.op("GlobalAveragePool", [x])
    flat = g.op("Flatten", [pooled], axis=1)
    w = g.rng.randn(channels[-1], 1404).astype(np.float32) * 1e-4
    lmrks = g.op("Add", [g.op("MatMul", [flat, g.const(w)]), g.const(facemesh_template_pixels().reshape(1, 1404), "b")])
    shape = g.op("Constant", [], value=helper.make_tensor("s", TensorProto.INT64, [4], [1, 1, 1, 1404]))
    g.op("Reshape", [lmrks, shape], "conv2d_21")
    score = g.op("ReduceMean", [flat], axes=[1], keepdims=1)
    shape1 = g.op("Constant", [], value=helper.make_tensor("s1", TensorProto.INT64, [4], [1, 1, 1, 1]))
    g.op("Reshape", [score, shape1], "conv2d_31")
    inputs = [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [1, 192, 192, 3])]
    outputs = [helper.make_tensor_value_info("conv2d_21", TensorProto.FLOAT, [1, 1, 1, 1404]),
               helper.make_tensor_value_info("conv2d_31", TensorProto.FLOAT, [1, 1, 1, 1])]
    return g.model(inputs, outputs)


def build_models(folder, detector_cost="light"):
    """Write ``YoloV5Face.onnx`` and ``FaceMesh.onnx`` into ``folder`` unless present; returns the folder.

    ``detector_cost``: a ``YOLO_PRESETS`` name (one folder per preset: the file name is DFL's).
    """
    import onnx

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, build in (("YoloV5Face.onnx", lambda: build_yolov5face(cost=detector_cost)),
                        ("FaceMesh.onnx", build_facemesh)):
        path = folder / name
        if not path.is_file():
            partial = path.with_name("%s.%d.partial" % (name, os.getpid()))
            onnx.save(build(), str(partial))
            os.replace(str(partial), str(path))
    return folder


if __name__ == "__main__":
    print(build_models(sys.argv[1] if len(sys.argv) > 1 else "."))
