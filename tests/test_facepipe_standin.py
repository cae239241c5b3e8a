"""facepipe.standin: the DFM-shaped stand-in model (DFL's tensor contract, a DFM's cost and weights)."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.buffers.dfm import check_dfm_contract  # noqa: E402
from dfl_perf.facepipe.standin import build_dfm_standin  # noqa: E402


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("resolution, morph", [(224, False), (320, True)])
def test_the_standin_fits_dfls_dfm_contract(resolution, morph):
    session = _session(build_dfm_standin(resolution, morph=morph, cost="5ms"))
    contract = check_dfm_contract(session.get_inputs(), session.get_outputs(), resolution)
    assert (contract.morph_name is not None) == morph and contract.fixed_batch is None
    assert contract.output_names == ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"]


def test_dense_weights_are_real_weights_read_every_run_and_barely_change_the_faces():
    plain = build_dfm_standin(224, cost="5ms", seed=1)
    heavy = build_dfm_standin(224, cost="5ms", seed=1, dense_mb=8)
    weights = [init for init in heavy.graph.initializer if init.name == "dense_w"]
    assert weights and np.prod(weights[0].dims) * 4 >= 7.5 * 1024 * 1024  # 8 MB, give or take a column
    faces = np.random.RandomState(0).rand(2, 224, 224, 3).astype(np.float32)
    a = _session(plain).run(None, {"in_face:0": faces})
    b = _session(heavy).run(None, {"in_face:0": faces})
    for x, y in zip(a, b):
        assert np.abs(x - y).max() < 1e-6
    # read every run: a MatMul on the input's features, not a constant onnxruntime could fold
    assert any(node.op_type == "MatMul" and "dense_w" in node.input for node in heavy.graph.node)
