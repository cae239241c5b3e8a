"""Tiny ONNX models that several test files build (imported by the tests; not a test module)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def tiny_model(opset: int = 13, bias: float = 1.0, pad: int = 0, dims=("N", 4)):
    """y = relu(x) + bias, float32 input ``dims``; ``pad`` floats of unused weights make the file bigger."""
    inits = [numpy_helper.from_array(np.full((4,), bias, np.float32), "b")]
    if pad:
        inits.append(numpy_helper.from_array(np.arange(pad, dtype=np.float32), "pad"))
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "b"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def landmark_shaped_model(kind: str, seed: int = 0):
    """A model with the input and outputs of a real landmarker, its values a seeded function of the input.

    ``kind="facemesh"``: ``input_1`` [1,3,192,192] -> ``conv2d_21`` [1,1,1,1404], ``conv2d_31`` [1,1,1,1];
    ``kind="peppa"``: ``input1`` [1,3,160,160] -> ``output1`` [1,143]. Not a landmarker: the real ones are
    read from ../shared by the accuracy tests.
    """
    rng = np.random.RandomState(seed)
    size, input_name = {"facemesh": (192, "input_1"), "peppa": (160, "input1")}[kind]
    outputs = {"facemesh": [("conv2d_21", 1404), ("conv2d_31", 1)], "peppa": [("output1", 143)]}[kind]
    nodes = [helper.make_node("AveragePool", [input_name], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
             helper.make_node("Flatten", ["pooled"], ["flat"])]
    features = 3 * (size // 16) ** 2
    inits, graph_outputs = [], []
    for name, width in outputs:
        inits.append(numpy_helper.from_array(rng.uniform(-1, 1, (features, width)).astype(np.float32) / features,
                                             name + "_w"))
        shape = [1, 1, 1, width] if kind == "facemesh" else [1, width]
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), name + "_shape"))
        nodes += [helper.make_node("MatMul", ["flat", name + "_w"], [name + "_mm"]),
                  helper.make_node("Reshape", [name + "_mm", name + "_shape"], [name])]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(nodes, kind + "_shaped",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, size, size])],
                              graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model
