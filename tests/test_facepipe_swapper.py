"""facepipe.swapper: DFL's DFM tensor contract, batching, pooled input, clear contract errors."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from dfl_perf.facepipe.standin import build_dfm_standin  # noqa: E402
from dfl_perf.facepipe.swapper import DFMContractError, DFMSwapper  # noqa: E402


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def standin():
    return _session(build_dfm_standin(224, morph=False, cost="5ms", seed=1))


@pytest.fixture(scope="module")
def standin_amp():
    return _session(build_dfm_standin(224, morph=True, cost="5ms", seed=2))


def _faces(n, res=224, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, res, res, 3), dtype=np.uint8)


def _tiny_dfm(in_name="in_face:0", shape=("N", 16, 16, 3), morph_name=None, n_outputs=3, out_channels=(1, 3, 1),
              morph_shape=(1,), output_order=None):
    """A minimal model with a DFM-like interface: masks = channel mean, celeb = the input.

    ``output_order`` permutes the graph's outputs (each keeps its name and content)."""
    nodes = [helper.make_node("ReduceMean", [in_name], ["mean"], axes=[3], keepdims=1)]
    inputs = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(shape))]
    if morph_name:
        inputs.append(helper.make_tensor_value_info(morph_name, TensorProto.FLOAT, list(morph_shape)))
        nodes.append(helper.make_node("Mul", ["mean", morph_name], ["m0"]))
    else:
        nodes.append(helper.make_node("Identity", ["mean"], ["m0"]))
    names = ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0", "extra:0"][:n_outputs]
    sources = {1: "m0", 3: in_name}
    outputs = []
    for name, ch in zip(names, list(out_channels) + [1]):
        nodes.append(helper.make_node("Identity", [sources[ch]], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [shape[0], shape[1], shape[2], ch]))
    if output_order is not None:
        outputs = [outputs[i] for i in output_order]
    model = helper.make_model(helper.make_graph(nodes, "tiny_dfm", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _session(model)


@pytest.mark.parametrize("resolution", [224, 320])
def test_contract_and_output_order_match_dfl(resolution):
    session = _session(build_dfm_standin(resolution, cost="5ms"))
    swapper = DFMSwapper(session, resolution=resolution)
    assert swapper.resolution == resolution and not swapper.has_morph and swapper.session is session
    faces = _faces(2, resolution)
    celeb, celeb_mask, face_mask = swapper.swap(faces)
    assert celeb.shape == (2, resolution, resolution, 3) and celeb.dtype == np.float32
    assert celeb_mask.shape == face_mask.shape == (2, resolution, resolution, 1)
    raw = session.run(None, {"in_face:0": faces.astype(np.float32) / 255.0})
    # DFL: out_face_mask, out_celeb, out_celeb_mask = run(...); return out_celeb, out_celeb_mask, out_face_mask
    np.testing.assert_allclose(celeb, raw[1], atol=1e-6)
    np.testing.assert_allclose(celeb_mask, raw[2], atol=1e-6)
    np.testing.assert_allclose(face_mask, raw[0], atol=1e-6)


def test_batch_equals_one_face_at_a_time(standin):
    swapper = DFMSwapper(standin)
    faces = _faces(3)
    batched = swapper.swap(faces)
    for i in range(3):
        single = swapper.swap(faces[i])
        for b, s in zip(batched, single):
            np.testing.assert_allclose(b[i], s[0], atol=1e-5)
    as_list = swapper.swap(list(faces))
    for b, s in zip(batched, as_list):
        np.testing.assert_array_equal(b, s)
    floats = swapper.swap(faces.astype(np.float32) / np.float32(255.0))
    np.testing.assert_allclose(floats[0], batched[0], atol=1e-6)


def test_pooled_input_is_identical(standin):
    swapper = DFMSwapper(standin)
    faces = _faces(2, seed=4)
    fresh = swapper.preprocess(faces)
    pool = np.full((4, 224, 224, 3), 5.0, np.float32)  # room for 4 faces, dirty
    batch = swapper.preprocess(list(faces), out=pool)
    assert batch.shape == (2, 224, 224, 3) and np.shares_memory(batch, pool)
    np.testing.assert_array_equal(batch, fresh)
    np.testing.assert_array_equal(swapper.postprocess(swapper.run(batch))[0], swapper.swap(faces)[0])
    with pytest.raises(ValueError, match="out must be float32"):
        swapper.preprocess(faces, out=np.zeros((1, 224, 224, 3), np.float32))


def test_morph_value_is_fed_and_cached(standin_amp):
    swapper = DFMSwapper(standin_amp)
    assert swapper.has_morph and swapper.morph_factor == 0.75
    feeds = swapper.feeds(swapper.preprocess(_faces(1)))
    assert feeds["morph_value:0"].dtype == np.float32 and feeds["morph_value:0"].tolist() == [0.75]
    assert swapper.morph_array(0.75) is swapper.morph_array()
    faces = _faces(1, seed=7)
    low, high = swapper.swap(faces, morph_factor=0.0)[0], swapper.swap(faces, morph_factor=1.0)[0]
    assert np.abs(low - high).max() > 1e-3
    with pytest.raises(ValueError, match="0..1"):
        swapper.swap(faces, morph_factor=1.5)


def test_fixed_batch_model_runs_face_by_face():
    swapper = DFMSwapper(_tiny_dfm(shape=(1, 16, 16, 3)))
    faces = _faces(3, 16)
    celeb, celeb_mask, face_mask = swapper.swap(faces)
    assert celeb.shape == (3, 16, 16, 3)
    np.testing.assert_allclose(celeb, faces / 255.0, atol=1e-6)
    np.testing.assert_allclose(face_mask[..., 0], (faces / 255.0).mean(axis=3), atol=1e-6)


def test_empty_batch(standin):
    celeb, celeb_mask, face_mask = DFMSwapper(standin).swap(np.zeros((0, 224, 224, 3), np.uint8))
    assert celeb.shape == (0, 224, 224, 3) and face_mask.shape == (0, 224, 224, 1)


def test_wrong_input_name():
    with pytest.raises(DFMContractError, match=r"in_face.*'face_in'"):
        DFMSwapper(_tiny_dfm(in_name="face_in"))


def test_nchw_model_is_rejected_with_a_hint():
    with pytest.raises(DFMContractError, match="looks NCHW"):
        DFMSwapper(_tiny_dfm(shape=("N", 3, 16, 16)))


def test_wrong_resolution():
    with pytest.raises(DFMContractError, match="resolution is 16, expected 224"):
        DFMSwapper(_tiny_dfm(), resolution=224)
    swapper = DFMSwapper(_tiny_dfm())
    with pytest.raises(DFMContractError, match=r"\(N, 16, 16, 3\).*224"):
        swapper.swap(_faces(1, 224))
    with pytest.raises(DFMContractError, match="square"):
        DFMSwapper(_tiny_dfm(shape=("N", 16, 24, 3)))


def test_missing_or_wrong_morph_input():
    plain = _tiny_dfm()
    with pytest.raises(DFMContractError, match="no 'morph_value:0' input"):
        DFMSwapper(plain, morph_factor=0.5)
    with pytest.raises(DFMContractError, match="no 'morph_value:0' input"):
        DFMSwapper(plain).swap(_faces(1, 16), morph_factor=0.5)
    with pytest.raises(DFMContractError, match=r"input 1 must be named like 'morph_value:0', got 'strength:0'"):
        DFMSwapper(_tiny_dfm(morph_name="strength:0"))
    with pytest.raises(DFMContractError, match=r"'morph_value:0' must be float32 \[1\], got float32 \[2\]"):
        DFMSwapper(_tiny_dfm(morph_name="morph_value:0", morph_shape=(2,)))
    amp = DFMSwapper(_tiny_dfm(morph_name="morph_value:0"), morph_factor=0.5)
    np.testing.assert_allclose(amp.swap(np.full((1, 16, 16, 3), 255, np.uint8))[2], 0.5)


def test_wrong_outputs_and_inputs():
    with pytest.raises(DFMContractError, match="3 outputs"):
        DFMSwapper(_tiny_dfm(n_outputs=2))
    with pytest.raises(DFMContractError, match=r"'out_face_mask:0' must be out_face_mask \[N, res, res, 1\], "
                                               r"got \[N, 16, 16, 3\].*DFL's order"):
        DFMSwapper(_tiny_dfm(out_channels=(3, 1, 1)))
    swapper = DFMSwapper(_tiny_dfm())
    with pytest.raises(DFMContractError, match="float64"):
        swapper.swap(np.zeros((1, 16, 16, 3), np.float64))
    with pytest.raises(DFMContractError, match="each face"):
        swapper.swap([np.zeros((16, 16), np.uint8)])


def test_outputs_are_taken_by_dfl_names_in_any_order():
    session = _tiny_dfm(output_order=(2, 0, 1))
    assert [o.name for o in session.get_outputs()] == ["out_celeb_face_mask:0", "out_face_mask:0", "out_celeb_face:0"]
    swapper = DFMSwapper(session)
    assert swapper.output_names == ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"]
    faces = _faces(2, 16)
    celeb, celeb_mask, face_mask = swapper.swap(faces)
    np.testing.assert_allclose(celeb, faces / 255.0, atol=1e-6)
    np.testing.assert_allclose(face_mask[..., 0], (faces / 255.0).mean(axis=3), atol=1e-6)
    assert celeb_mask.shape == (2, 16, 16, 1)


def test_one_contract_error_class_for_facepipe_and_buffers():
    from dfl_perf import facepipe
    from dfl_perf.buffers import DFMContractError as BuffersError
    from dfl_perf.buffers import DFMRunner

    assert DFMContractError is BuffersError is facepipe.DFMContractError
    assert issubclass(DFMContractError, ValueError)
    session = _tiny_dfm(shape=("N", 3, 16, 16))
    with pytest.raises(DFMContractError, match="looks NCHW") as from_runner:
        DFMRunner(session)
    with pytest.raises(BuffersError) as from_swapper:
        DFMSwapper(session)
    assert str(from_runner.value) == str(from_swapper.value)  # one check, one message


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
