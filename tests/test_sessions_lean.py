"""Lean weights (``dfl_perf/sessions/lean.py``): the copy gives the same outputs, is made once per
model file, survives races and bad models, and loading it costs less memory than the model as it is."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dfl_perf.sessions import SessionConfig, create_session, create_session_with_info  # noqa: E402
from dfl_perf.sessions.errors import InvalidModelError  # noqa: E402
from dfl_perf.sessions.lean import WEIGHTS_NAME, LeanWeightsError, lean_copy  # noqa: E402

CPU = SessionConfig.tuned(threads=1, providers=["CPUExecutionProvider"])


def dense_model(rows: int = 256, cols: int = 512, seed: int = 0):
    """y = x @ W (W: rows x cols float32), a MatMul model like a DFM's dense layers."""
    weight = np.random.RandomState(seed).normal(0, 0.05, (rows, cols)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", cols])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.fixture
def model_file(tmp_path, cache_dir):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(), str(path))
    return path


def _outputs(session, rows: int = 256):
    x = np.random.RandomState(1).rand(3, rows).astype(np.float32)
    return session.run(None, {"x": x})[0]


def test_lean_session_gives_the_same_outputs_from_a_separate_weights_file(model_file):
    info = create_session_with_info(model_file, CPU.replace(lean_weights=True))
    assert info.lean_copy is not None and info.source.path == str(model_file)
    copy_dir = os.path.dirname(info.lean_copy)
    assert os.path.getsize(os.path.join(copy_dir, WEIGHTS_NAME)) >= 256 * 512 * 4
    assert os.path.getsize(info.lean_copy) < 10_000, "the weights were left inside the graph"
    # pre-packing off changes MatMul's summation order: float rounding, nothing more
    np.testing.assert_allclose(_outputs(info.session), _outputs(create_session(model_file, CPU)), rtol=1e-4, atol=1e-6)


def test_the_copy_is_made_once_and_again_when_the_model_changes(model_file, monkeypatch):
    first = lean_copy(model_file)

    def no_child(*args):
        raise AssertionError("converted again although the copy was there")

    with monkeypatch.context() as patched:  # (monkeypatch.undo() would also undo cache_dir's setting)
        patched.setattr("dfl_perf.sessions.lean._convert_in_child", no_child)
        assert lean_copy(model_file) == first
    onnx.save(dense_model(seed=5), str(model_file))  # edited: a new size/mtime, a new copy
    os.utime(str(model_file), ns=(1, 1))
    second = lean_copy(model_file)
    assert second != first
    assert not first.parent.exists(), "the copy of the old model was left on disk"
    a = create_session(str(second), CPU)
    b = create_session(model_file, CPU)
    np.testing.assert_array_equal(_outputs(a), _outputs(b))


def test_threads_racing_for_one_copy_all_get_a_complete_one(model_file):
    paths, errors = [], []

    def make():
        try:
            paths.append(lean_copy(model_file))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(set(paths)) == 1
    meta = json.loads((paths[0].parent / "source.json").read_text())
    assert meta["weights_bytes"] == (paths[0].parent / WEIGHTS_NAME).stat().st_size
    assert [p.name for p in paths[0].parent.parent.iterdir() if ".tmp." in p.name] == []


def test_a_bad_model_is_a_clear_error_and_create_session_still_names_it(tmp_path, cache_dir, caplog):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(LeanWeightsError, match="broken.onnx: cannot make the lean copy"):
        lean_copy(bad)
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        with pytest.raises(InvalidModelError, match="broken.onnx"):
            create_session(bad, CPU.replace(lean_weights=True))
    assert "loading the model as it is" in caplog.text


def test_in_memory_models_load_as_they_are(caplog):
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        info = create_session_with_info(dense_model().SerializeToString(), CPU.replace(lean_weights=True))
    assert info.lean_copy is None and "is not a file" in caplog.text
    assert _outputs(info.session).shape == (3, 512)


def test_lean_weights_and_disk_cache_do_not_combine():
    with pytest.raises(ValueError, match="lean_weights and disk_cache cannot be combined"):
        SessionConfig(lean_weights=True, disk_cache=True)


_PEAK_CHILD = textwrap.dedent("""
    import json, sys
    from dfl_perf.benchmark.measure import peak_rss_bytes
    from dfl_perf.sessions import SessionConfig, create_session
    import numpy as np
    import onnxruntime
    config = SessionConfig.dfl_default().replace(lean_weights=sys.argv[2] == "lean")
    before = peak_rss_bytes()
    session = create_session(sys.argv[1], config)
    session.run(None, {"x": np.ones((1, 4096), np.float32)})
    print(json.dumps({"load_peak": peak_rss_bytes() - before}))
""")


@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM (Linux) for the child's own peak")
def test_loading_lean_costs_less_memory_than_loading_the_model_as_it_is(tmp_path, cache_dir):
    path = tmp_path / "big_dense.onnx"
    onnx.save(dense_model(rows=4096, cols=4096), str(path))  # 64 MiB of weights
    weights = 4096 * 4096 * 4
    lean_copy(path)  # made beforehand: its child's memory is not the load's
    peaks = {}
    for mode in ("plain", "lean"):
        out = subprocess.run([sys.executable, "-c", _PEAK_CHILD, str(path), mode], capture_output=True, text=True,
                             check=True, env=dict(os.environ))
        peaks[mode] = json.loads(out.stdout.strip().splitlines()[-1])["load_peak"]
    # as it is: the parsed file plus onnxruntime's own copy (2x or more); lean: about one copy
    assert peaks["plain"] > 1.6 * weights, peaks
    assert peaks["lean"] < 1.3 * weights, peaks


def test_without_the_onnx_package_the_model_loads_as_it_is(model_file, tmp_path, monkeypatch, caplog):
    # onnx is installed here; a module named onnx that fails to import stands for its absence
    # (it is first on the converting child's path only)
    fake = tmp_path / "no_onnx"
    fake.mkdir()
    (fake / "onnx.py").write_text("raise ImportError('No module named onnx')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake)] + sys.path))
    with pytest.raises(LeanWeightsError, match="the onnx package is needed for lean weights"):
        lean_copy(model_file)
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        info = create_session_with_info(model_file, CPU.replace(lean_weights=True))
    assert info.lean_copy is None and "loading the model as it is" in caplog.text
    assert _outputs(info.session).shape == (3, 512)
