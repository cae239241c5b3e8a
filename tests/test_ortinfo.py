"""dfl_perf.ortinfo: the one place that imports onnxruntime, reads its version, maps its tensor types
and cleans its error text."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from dfl_perf import ortinfo


def test_version_is_the_installed_ones_as_ints(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    assert ortinfo.ort_version() == tuple(int(p) for p in ort.__version__.split(".")[:3])
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="1.17.0.dev20231010"))
    assert ortinfo.ort_version() == (1, 17, 0)
    monkeypatch.setitem(sys.modules, "onnxruntime", types.SimpleNamespace(__version__="1.16rc1"))
    assert ortinfo.ort_version() == (1, 16)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails, as when absent
    assert ortinfo.ort_version() == (0,)


def test_a_missing_onnxruntime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install onnxruntime.*onnxruntime-gpu"):
        ortinfo.ort_module()


@pytest.mark.parametrize("ort_type, dtype", [
    ("tensor(float)", np.float32), ("tensor(float16)", np.float16), ("tensor(int64)", np.int64),
    ("tensor(uint8)", np.uint8), ("tensor(bool)", np.bool_), ("tensor(string)", np.object_),
    ("tensor(bfloat16)", None), ("seq(tensor(float))", None),
])
def test_tensor_types_as_numpy_dtypes(ort_type, dtype):
    got = ortinfo.numpy_dtype_of(ort_type)
    assert got is None if dtype is None else got == np.dtype(dtype)


def test_error_text_loses_codes_files_and_signatures():
    raw = ("[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:149 "
           "onnxruntime::Model::Model(onnx::ModelProto&&, const PathString&, const Logger&) Unsupported model IR "
           "version: 10,\n max supported IR version: 9")
    assert ortinfo.ort_message(RuntimeError(raw)) == "Unsupported model IR version: 10, max supported IR version: 9"
    logged = "sequential_executor.cc:514 ExecuteKernel] Non-zero status code returned while running Conv node."
    assert ortinfo.ort_message(RuntimeError(logged)) == "Non-zero status code returned while running Conv node."
    assert ortinfo.ort_message(RuntimeError("Load model from /m.onnx failed:Protobuf parsing failed.")) == \
        "Protobuf parsing failed."
    assert ortinfo.ort_message(ValueError("")) == "ValueError"


def test_error_text_of_a_real_run_failure():
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Gather", ["d", "i"], ["o"])], "g",
                              [helper.make_tensor_value_info("d", TensorProto.FLOAT, [3, 2]),
                               helper.make_tensor_value_info("i", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception) as info:
        session.run(None, {"d": np.zeros((3, 2), np.float32), "i": np.array([0, 7])})
    text = ortinfo.ort_message(info.value)
    assert "Gather" in text and "idx=7" in text
    assert "ONNXRuntimeError" not in text and ".cc:" not in text and "\n" not in text
