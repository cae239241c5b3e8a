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
