"""A DFM-shaped stand-in model: DeepFaceLive's tensor contract with seeded, deterministic weights.

This is NOT a face-swap model. Real DFM files are 100-700 MB and cannot be shipped; this builds a
model with the same inputs, outputs, layout and a chosen compute cost so that benchmarks and tests
exercise exactly the code paths a real DFM does:

- input ``in_face:0`` float32 NHWC ``(N, res, res, 3)``, dynamic batch, BGR 0..1;
- optional ``morph_value:0`` float32 ``(1,)`` (AMP models);
- outputs in DFL's order: ``out_face_mask:0`` (N,res,res,1), ``out_celeb_face:0`` (N,res,res,3),
  ``out_celeb_face_mask:0`` (N,res,res,1), float32 0..1.

Inside: NHWC->NCHW, a strided conv, ``layers`` 3x3 convs of ``channels`` channels at half
resolution, a conv to 5 channels, bilinear upsampling; the celeb face is the input face (carried by
a fixed 1x1 conv) shifted by the network's output (scaled by the morph value when present), the
masks are an ellipse modulated by the network. ``pad_mb`` adds real weights (read through an input-dependent Gather,
so no optimizer can fold them away) to give the file a realistic size; ``dense_mb`` adds weights the
model reads in full on every run, like a DFM's middle dense layers (the encoder output pooled to a
res/16 grid, flattened, through a MatMul), so that memory and load figures see a real model's
weights. Both change the outputs by less than 1e-6.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import numpy as np

__all__ = ["build_dfm_standin", "COST_PRESETS", "save_dfm_standin"]

#: cost preset -> (channels, layers): about 5, 20 and 60 ms for one 224 face on one intra-op
#: thread of the 2-core development machine (onnxruntime CPU provider; 320 costs about 2x).
COST_PRESETS: Dict[str, Tuple[int, int]] = {
    "5ms": (16, 2),
    "20ms": (32, 3),
    "60ms": (48, 5),
}

OPSET = 12  # DFM files are exported by tf2onnx at opset 12
IR_VERSION = 7


def _resolve_cost(cost: Union[str, Tuple[int, int]]) -> Tuple[int, int]:
    if isinstance(cost, tuple):
        return cost
    try:
        return COST_PRESETS[cost]
    except KeyError:
        raise ValueError("unknown cost %r; use one of %s or (channels, layers)" % (cost, sorted(COST_PRESETS))) from None


def _ellipse(res: int) -> np.ndarray:
    yy, xx = np.mgrid[0:res, 0:res].astype(np.float32)
    c = (res - 1) / 2.0
    r = ((xx - c) / (0.38 * res)) ** 2 + ((yy - c) / (0.46 * res)) ** 2
    return np.clip(1.5 - r, 0.0, 1.0).astype(np.float32).reshape(1, res, res, 1)


def build_dfm_standin(
    resolution: int = 224,
    morph: bool = False,
    cost: Union[str, Tuple[int, int]] = "20ms",
    seed: int = 0,
    pad_mb: float = 0.0,
    dense_mb: float = 0.0,
):
    """Build the stand-in as an ``onnx.ModelProto`` (see the module docstring for its contract)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if resolution < 16 or resolution % 16:
        raise ValueError("resolution must be a positive multiple of 16, got %r" % (resolution,))
    channels, layers = _resolve_cost(cost)
    rng = np.random.RandomState(seed)
    inits = []
    nodes = []

    def weight(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def conv(x: str, cin: int, cout: int, name: str, stride: int = 1, relu: bool = True) -> str:
        w = rng.normal(0.0, np.sqrt(2.0 / (9 * cin)), size=(cout, cin, 3, 3)) * 0.5
        b = rng.normal(0.0, 0.01, size=(cout,))
        out = name + ("_conv" if relu else "")
        nodes.append(helper.make_node("Conv", [x, weight(name + "_w", w), weight(name + "_b", b)], [out],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [name]))
            return name
        return out

    nodes.append(helper.make_node("Transpose", ["in_face:0"], ["x_nchw"], perm=[0, 3, 1, 2]))
    h = conv("x_nchw", 3, channels, "enc", stride=2)
    for i in range(layers):
        h = conv(h, channels, channels, "mid%d" % i)
    head = conv(h, channels, 5, "head", relu=False)
    if morph:  # the morph value scales how much of the network's output reaches the celeb face
        nodes.append(helper.make_node("Mul", [head, "morph_value:0"], ["head_m"]))
        head = "head_m"
    nodes.append(helper.make_node("Resize", [head, weight("up_roi", np.zeros((0,))),
                                             weight("up_scales", np.array([1, 1, 2, 2]))], ["up"],
                                  mode="linear"))
    # a fixed 1x1 conv carries the input face into the three celeb channels
    skip_w = np.zeros((5, 3, 1, 1), dtype=np.float32)
    for c in range(3):
        skip_w[1 + c, c, 0, 0] = 4.0
    skip_b = np.array([4.0, -2.0, -2.0, -2.0, 4.0], dtype=np.float32)  # masks near 1 inside the ellipse
    nodes.append(helper.make_node("Conv", ["x_nchw", weight("skip_w", skip_w), weight("skip_b", skip_b)],
                                  ["skip"], kernel_shape=[1, 1]))
    nodes.append(helper.make_node("Add", ["up", "skip"], ["logits"]))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["y_nchw"]))
    nodes.append(helper.make_node("Transpose", ["y_nchw"], ["y"], perm=[0, 2, 3, 1]))
    nodes.append(helper.make_node("Split", ["y"], ["m0", "out_celeb_face:0", "m1"], axis=3, split=[1, 3, 1]))
    ellipse = weight("ellipse", _ellipse(resolution))
    mask_bias = _padding_term(resolution, pad_mb, rng, weight, nodes, helper)
    dense_bias = _dense_term(h, channels, resolution, dense_mb, rng, weight, nodes, helper)
    if dense_bias is not None and mask_bias is not None:
        nodes.append(helper.make_node("Add", [mask_bias, dense_bias], ["mask_bias_sum"]))
        mask_bias = "mask_bias_sum"
    elif dense_bias is not None:
        mask_bias = dense_bias
    for src, name in (("m0", "out_face_mask:0"), ("m1", "out_celeb_face_mask:0")):
        if mask_bias is not None:
            nodes.append(helper.make_node("Add", [ellipse, mask_bias], [src + "_ell"]))
            nodes.append(helper.make_node("Mul", [src, src + "_ell"], [name]))
        else:
            nodes.append(helper.make_node("Mul", [src, ellipse], [name]))

    inputs = [helper.make_tensor_value_info("in_face:0", TensorProto.FLOAT, ["N", resolution, resolution, 3])]
    if morph:
        inputs.append(helper.make_tensor_value_info("morph_value:0", TensorProto.FLOAT, [1]))
    outputs = [
        helper.make_tensor_value_info("out_face_mask:0", TensorProto.FLOAT, ["N", resolution, resolution, 1]),
        helper.make_tensor_value_info("out_celeb_face:0", TensorProto.FLOAT, ["N", resolution, resolution, 3]),
        helper.make_tensor_value_info("out_celeb_face_mask:0", TensorProto.FLOAT, ["N", resolution, resolution, 1]),
    ]
    graph = helper.make_graph(nodes, "dfm_standin", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="dfl_perf.standin")
    model.ir_version = IR_VERSION
    model.doc_string = ("dfl_perf DFM stand-in (NOT a face-swap model): res=%d morph=%s channels=%d layers=%d "
                        "seed=%d pad_mb=%s dense_mb=%s" % (resolution, morph, channels, layers, seed, pad_mb, dense_mb))
    onnx.checker.check_model(model)
    return model


def _padding_term(res, pad_mb, rng, weight, nodes, helper) -> Optional[str]:
    """Add ``pad_mb`` of real weights read through an input-dependent Gather; return a tiny bias tensor name."""
    if pad_mb <= 0:
        return None
    cols = 1024
    rows = max(1, int(pad_mb * 1024 * 1024 / 4 / cols))
    weight("pad_table", rng.normal(0.0, 1.0, size=(rows, cols)).astype(np.float32))
    # index = int(min(in_face) * 0) == 0 for every input: depends on the input, so never constant-folded
    nodes.append(helper.make_node("ReduceMin", ["in_face:0"], ["pad_min"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["pad_min", weight("pad_zero", np.array(0.0))], ["pad_zero_f"]))
    nodes.append(helper.make_node("Cast", ["pad_zero_f"], ["pad_index"], to=7))  # int64
    nodes.append(helper.make_node("Gather", ["pad_table", "pad_index"], ["pad_row"], axis=0))
    nodes.append(helper.make_node("ReduceMean", ["pad_row"], ["pad_mean"], keepdims=0))
    nodes.append(helper.make_node("Mul", ["pad_mean", weight("pad_eps", np.array(1e-7))], ["pad_bias"]))
    return "pad_bias"


def _dense_term(h, channels, res, dense_mb, rng, weight, nodes, helper) -> Optional[str]:
    """Add ``dense_mb`` of MatMul weights read in full every run; return a (N, 1, 1, 1) bias tensor name."""
    if dense_mb <= 0:
        return None
    grid = res // 16  # h is at res/2: pooling by 8 leaves a res/16 grid, like a DFM's bottleneck
    rows = channels * grid * grid
    cols = max(1, int(dense_mb * 1024 * 1024 / 4 / rows))
    nodes.append(helper.make_node("AveragePool", [h], ["dense_pool"], kernel_shape=[8, 8], strides=[8, 8]))
    nodes.append(helper.make_node("Flatten", ["dense_pool"], ["dense_flat"], axis=1))
    table = rng.normal(0.0, 1.0 / np.sqrt(rows), size=(rows, cols)).astype(np.float32)
    nodes.append(helper.make_node("MatMul", ["dense_flat", weight("dense_w", table)], ["dense_out"]))
    nodes.append(helper.make_node("ReduceMean", ["dense_out"], ["dense_mean"], axes=[1], keepdims=1))
    nodes.append(helper.make_node("Unsqueeze", ["dense_mean"], ["dense_mean4"], axes=[2, 3]))
    nodes.append(helper.make_node("Mul", ["dense_mean4", weight("dense_eps", np.array(1e-7))], ["dense_bias"]))
    return "dense_bias"


def save_dfm_standin(path, **kwargs) -> str:
    """Build the stand-in and save it to ``path`` (a ``.onnx`` or ``.dfm`` file); return the path as str."""
    import onnx

    model = build_dfm_standin(**kwargs)
    onnx.save(model, str(path))
    return str(path)
