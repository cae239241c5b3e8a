"""Tests for dfl_perf.buffers: pools, BoundSession and the DFM step, on real onnxruntime sessions."""

from __future__ import annotations

import gc
import random
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

from dfl_perf.buffers import BoundSession, BufferPool, DFMContractError, DFMRunner, OrtValuePool
from dfl_perf.buffers._graph import CudaGraphFallbackWarning
from dfl_perf.buffers._pools import PoolError
from dfl_perf.buffers._specs import TensorSpec
from dfl_perf.buffers.bound import BoundSessionError
from dfl_perf.buffers.dfm import DFMOutputs, check_dfm_contract

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MB = 1 << 20


# ----------------------------------------------------------------------------- models built here
def _session(model):
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def dfm_model(res=16, morph=False, batch="N", names=("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"),
              face_name="in_face:0", nchw=False, n_outputs=3, output_order=(0, 1, 2)):
    """A DFM-shaped model: NHWC in_face -> Transpose -> 1x1 Conv -> (x morph) -> Sigmoid -> Split -> NHWC.

    ``output_order`` permutes the graph's outputs (each keeps its name and content)."""
    rng = np.random.default_rng(0)
    face_dims = [batch, 3, res, res] if nchw else [batch, res, res, 3]
    inputs = [helper.make_tensor_value_info(face_name, TensorProto.FLOAT, face_dims)]
    weight = numpy_helper.from_array(rng.standard_normal((5, 3, 1, 1)).astype(np.float32), "w")
    nodes = [helper.make_node("Transpose", [face_name], ["nchw"], perm=[0, 1, 2, 3] if nchw else [0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w"], ["conv"])]
    last = "conv"
    if morph:
        inputs.append(helper.make_tensor_value_info("morph_value:0", TensorProto.FLOAT, [1]))
        nodes.append(helper.make_node("Mul", ["conv", "morph_value:0"], ["morphed"]))
        last = "morphed"
    nodes += [helper.make_node("Sigmoid", [last], ["sig"]),
              helper.make_node("Split", ["sig"], ["s0", "s1", "s2"], axis=1, split=[1, 3, 1])]
    outputs = []
    for src, name, ch in list(zip(("s0", "s1", "s2"), names, (1, 3, 1)))[:n_outputs]:
        nodes.append(helper.make_node("Transpose", [src], [name], perm=[0, 2, 3, 1]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["M", res, res, ch]))
    outputs = [outputs[i] for i in output_order[:len(outputs)]]
    graph = helper.make_graph(nodes, "dfm", inputs, outputs, [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def two_input_model():
    """y = a * 2 + b with a: float32 [N, 4], b: float32 [1, 4]; z = Shape(a) (int64)."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    z = helper.make_tensor_value_info("z", TensorProto.INT64, [2])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    nodes = [helper.make_node("Mul", ["a", "two"], ["a2"]), helper.make_node("Add", ["a2", "b"], ["y"]),
             helper.make_node("Shape", ["a"], ["z"])]
    graph = helper.make_graph(nodes, "two", [a, b], [y, z], [two])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def nonzero_model():
    """idx = NonZero(x > 0): output shape depends on the values; also y = x + 1 (undeclared shape)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, None)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    nodes = [helper.make_node("Greater", ["x", "zero"], ["g"]), helper.make_node("NonZero", ["g"], ["idx"]),
             helper.make_node("Add", ["x", "one"], ["y"])]
    graph = helper.make_graph(nodes, "nz", [x], [idx, y], [zero, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def faces(n, res=16, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, res, res, 3), dtype=np.uint8)


def dfl_reference(session, face_u8, morph=None):
    """DeepFaceLive's way: astype(float32) / 255, then session.run with fresh arrays."""
    x = face_u8.astype(np.float32)
    x /= 255.0
    feeds = {"in_face:0": x if x.ndim == 4 else x[None]}
    if morph is not None:
        feeds["morph_value:0"] = np.float32([morph])
    return session.run(None, feeds)


def peak_alloc_per_call(fn, calls=20):
    """Largest tracemalloc peak over calls, traces cleared before each call (bytes)."""
    fn()
    fn()
    gc.collect()
    tracemalloc.start()
    try:
        worst = 0
        for _ in range(calls):
            tracemalloc.clear_traces()
            fn()
            worst = max(worst, tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    return worst


# ----------------------------------------------------------------------------- BufferPool
def test_buffer_pool_reuses_same_key_and_counts():
    pool = BufferPool()
    a = pool.acquire((2, 3), np.float32)
    assert a.shape == (2, 3) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
    pool.release(a)
    b = pool.acquire([2, 3], "float32")
    assert b is a
    c = pool.acquire((2, 3), np.float64)
    d = pool.acquire((3, 2), np.float32)
    assert c is not a and d is not a
    s = pool.stats()
    assert (s["allocations"], s["reuses"]) == (3, 1)
    assert s["reuse_rate"] == pytest.approx(0.25)
    assert s["bytes_held"] == 24 + 48 + 24 == pool.bytes_held()
    assert s["bytes_free"] == 0 and s["leased"] == 3 and s["peak_bytes"] == 96


def test_buffer_pool_never_hands_one_buffer_to_two_holders():
    pool = BufferPool()
    held = [pool.acquire(100, np.uint8) for _ in range(5)]
    for i, x in enumerate(held):
        for y in held[i + 1:]:
            assert not np.shares_memory(x, y)
    pool.release(held[2])
    again = pool.acquire(100, np.uint8)
    assert again is held[2]
    assert pool.acquire(100, np.uint8) is not again


def test_buffer_pool_release_errors():
    pool = BufferPool()
    a = pool.acquire(10)
    with pytest.raises(PoolError, match="view"):
        pool.release(a[2:])
    pool.release(a)
    with pytest.raises(PoolError, match="released twice"):
        pool.release(a)
    with pytest.raises(PoolError, match="not acquired from this pool"):
        pool.release(np.empty(10, np.float32))
    with pytest.raises(PoolError, match="not acquired"):
        BufferPool().release(pool.acquire(10))


def test_buffer_pool_bad_shapes_and_dtypes():
    pool = BufferPool()
    with pytest.raises(ValueError, match=">= 0"):
        pool.acquire((2, -1))
    with pytest.raises(TypeError, match="integers"):
        pool.acquire((2, 1.5))
    with pytest.raises(TypeError, match="object"):
        pool.acquire(3, object)
    with pytest.raises(ValueError):
        BufferPool(max_bytes=-1)


def test_buffer_pool_evicts_least_recently_released_when_over_budget():
    pool = BufferPool(max_bytes=3 * MB)
    bufs = [pool.acquire(MB, np.uint8) for _ in range(3)]
    pool.release(bufs[1])
    pool.release(bufs[0])
    pool.release(bufs[2])
    assert pool.bytes_free() == 3 * MB
    big = pool.acquire(2 * MB, np.uint8)  # needs room: evicts bufs[1] then bufs[0] (LRU), keeps bufs[2]
    s = pool.stats()
    assert s["evictions"] == 2 and s["evicted_bytes"] == 2 * MB
    assert pool.acquire(MB, np.uint8) is bufs[2]
    assert pool.bytes_held() == 3 * MB
    pool.release(big)


def test_buffer_pool_leases_may_exceed_budget_and_are_trimmed_on_release():
    pool = BufferPool(max_bytes=MB)
    a = pool.acquire(MB, np.uint8)
    b = pool.acquire(MB, np.uint8)  # over budget: allowed, never evicts leased buffers
    assert pool.bytes_held() == 2 * MB > pool.max_bytes
    pool.release(a)
    assert pool.bytes_held() == MB and pool.stats()["evictions"] == 1
    pool.release(b)
    assert pool.bytes_held() == MB and pool.bytes_free() == MB


def test_buffer_pool_trim_and_budget_setter():
    pool = BufferPool()
    bufs = [pool.acquire(1000, np.uint8) for _ in range(4)]
    for b in bufs:
        pool.release(b)
    assert pool.trim(1500) == 2000  # whole buffers, least recently released first
    assert pool.acquire(1000, np.uint8) is bufs[3]
    assert pool.trim() == 1000 and pool.bytes_free() == 0
    pool.release(bufs[3])
    pool.max_bytes = 0
    assert pool.bytes_held() == 0 and pool.max_bytes == 0
    pool.max_bytes = None
    assert pool.stats()["max_bytes"] is None


def test_buffer_pool_lease_releases_on_error():
    pool = BufferPool()
    with pytest.raises(KeyError):
        with pool.lease((4, 4), np.int16) as buf:
            assert buf.dtype == np.int16
            raise KeyError("boom")
    assert pool.stats()["leased"] == 0 and pool.bytes_free() == 32


@pytest.mark.timeout(60)
def test_buffer_pool_is_thread_safe(no_thread_leak):
    pool = BufferPool(max_bytes=64 * 1024)
    errors = []

    def worker(tag):
        rng = random.Random(tag)
        try:
            for _ in range(400):
                shape = (rng.choice((16, 32, 64)),)
                with pool.lease(shape, np.int64) as buf:
                    buf.fill(tag)
                    for _ in range(rng.randint(0, 2)):
                        threading.Event().wait(0) if rng.random() < 0.1 else None
                    if not (buf == tag).all():
                        errors.append("buffer shared between holders")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = pool.stats()
    assert s["leased"] == 0 and s["allocations"] + s["reuses"] == 6 * 400
    assert s["bytes_held"] == s["bytes_free"] <= 64 * 1024


def test_buffer_pool_random_operations_keep_invariants():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=60, deadline=None)
    @hypothesis.given(st.lists(st.tuples(st.sampled_from(["acq", "rel", "trim", "budget"]),
                                         st.integers(0, 3), st.integers(0, 5)), max_size=40))
    def run(ops):
        pool = BufferPool(max_bytes=200)
        held = []
        for op, a, b in ops:
            if op == "acq":
                buf = pool.acquire((a * 8,), np.uint8)
                assert buf.shape == (a * 8,) and all(buf is not h for h in held)
                held.append(buf)
            elif op == "rel" and held:
                pool.release(held.pop(b % len(held)))
            elif op == "trim":
                pool.trim(b * 8)
            elif op == "budget":
                pool.max_bytes = b * 40
            leased = sum(h.nbytes for h in held)
            s = pool.stats()
            assert s["bytes_held"] == leased + s["bytes_free"] and s["leased"] == len(held)
            assert s["bytes_free"] == 0 or s["bytes_held"] <= pool.max_bytes
            assert s["peak_bytes"] >= s["bytes_held"]

    run()


# ----------------------------------------------------------------------------- OrtValuePool
def test_ortvalue_pool_on_cpu():
    pool = OrtValuePool("cpu", max_bytes=1 << 16)
    assert pool.device == "cpu"
    v = pool.acquire((2, 3), np.float32)
    assert isinstance(v, ort.OrtValue) and v.shape() == [2, 3] and v.data_type() == "tensor(float)"
    pool.release(v)
    assert pool.acquire((2, 3), np.float32) is v
    assert pool.acquire((2, 3), np.int64).data_type() == "tensor(int64)"
    assert pool.bytes_held() == 24 + 48 and pool.stats()["device"] == "cpu"
    pool.release(v)
    with pytest.raises(PoolError, match="released twice"):
        pool.release(v)
    assert pool.trim() == 24


def test_ortvalue_pool_unusable_device_is_a_clear_error():
    with pytest.raises(ValueError, match="must be a device index"):
        OrtValuePool("cuda:x")
    with pytest.raises(ValueError, match="tpu"):
        OrtValuePool("tpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the unusable-device message is tested on CPU builds")
    with pytest.raises(ValueError, match=r"cannot allocate on 'cuda:1'.*onnxruntime|onnxruntime.*'cuda:1'"):
        OrtValuePool("cuda", device_id=1)


# ----------------------------------------------------------------------------- BoundSession
def test_bound_session_matches_session_run_and_reuses_output_buffers():
    sess = _session(two_input_model())
    bound = BoundSession(sess)
    b = np.arange(4, dtype=np.float32)[None]
    first = None
    for i in range(3):
        a = np.full((2, 4), i, np.float32)
        out = bound.run({"a": a, "b": b})
        ref = sess.run(None, {"a": a, "b": b})
        assert [o.dtype for o in out] == [np.float32, np.int64]
        for got, want in zip(out, ref):
            np.testing.assert_array_equal(got, want)
        if first is None:
            first = out
        assert out[0] is first[0] and out[1] is first[1]  # same pooled buffers, new contents
    s = bound.stats()
    assert s["runs"] == 3 and s["output_rebinds"] == 1 and s["input_copies"] == 0 and s["learning_runs"] == 0
    bound.close()


def test_bound_session_reallocates_only_when_shapes_change():
    sess = _session(two_input_model())
    with BoundSession(sess) as bound:
        b = np.zeros((1, 4), np.float32)
        for n in (1, 1, 3, 3, 1):
            a = np.ones((n, 4), np.float32) * n
            out = bound.run({"a": a, "b": b})
            np.testing.assert_array_equal(out[0], sess.run(None, {"a": a, "b": b})[0])
        assert bound.stats()["output_rebinds"] == 3
        assert bound.host_pool.stats()["reuses"] >= 2  # batch 1 buffers came back from the pool
    assert bound.host_pool.stats()["leased"] == 0


def test_bound_session_learns_undeclared_and_value_dependent_output_shapes():
    sess = _session(nonzero_model())
    bound = BoundSession(sess)
    rng = np.random.default_rng(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            x = rng.standard_normal(8).astype(np.float32)
            out = bound.run({"x": x})
            ref = sess.run(None, {"x": x})
            for got, want in zip(out, ref):
                np.testing.assert_array_equal(got, want)
    assert any("depend on the input values" in str(w.message) for w in caught)
    assert bound.stats()["unbound_runs"] >= 2
    bound.close()


def test_bound_session_non_contiguous_inputs_are_copied_or_rejected():
    sess = _session(two_input_model())
    a = np.arange(16, dtype=np.float32).reshape(4, 4).T  # Fortran order
    b = np.zeros((1, 4), np.float32)
    bound = BoundSession(sess)
    out = bound.run({"a": a, "b": b})
    np.testing.assert_array_equal(out[0], sess.run(None, {"a": np.ascontiguousarray(a), "b": b})[0])
    assert bound.stats()["input_copies"] == 1
    strict = BoundSession(sess, copy_noncontiguous=False)
    with pytest.raises(ValueError, match="'a' is not C-contiguous"):
        strict.run({"a": a, "b": b})


@pytest.mark.parametrize("feeds, error, pattern", [
    ({"a": np.zeros((2, 4), np.float64), "b": np.zeros((1, 4), np.float32)}, TypeError,
     r"input 'a': expected dtype float32, got float64"),
    ({"a": np.zeros((2, 5), np.float32), "b": np.zeros((1, 4), np.float32)}, ValueError,
     r"input 'a': expected shape \[N, 4\], got \(2, 5\)"),
    ({"a": np.zeros((2, 4, 1), np.float32), "b": np.zeros((1, 4), np.float32)}, ValueError,
     r"input 'a': expected shape \[N, 4\], got \(2, 4, 1\)"),
    ({"a": np.zeros((2, 4), np.float32)}, ValueError, r"missing input\(s\) 'b'.*model's inputs: 'a', 'b'"),
    ({"a": np.zeros((2, 4), np.float32), "b": np.zeros((1, 4), np.float32), "c": np.zeros(1)}, ValueError,
     r"unknown input name\(s\) 'c'"),
    ({"a": [[0.0] * 4], "b": np.zeros((1, 4), np.float32)}, TypeError, r"input 'a': expected a numpy.ndarray"),
    ({"a": np.zeros((2, 4), ">f4"), "b": np.zeros((1, 4), np.float32)}, TypeError, r"expected dtype float32"),
])
def test_bound_session_bad_input_names_the_tensor(feeds, error, pattern):
    bound = BoundSession(_session(two_input_model()))
    with pytest.raises(error, match=pattern):
        bound.run(feeds)
    with pytest.raises(TypeError, match="dict"):
        bound.run([np.zeros((2, 4), np.float32)])


def test_bound_session_ortvalue_outputs_chain_into_the_next_stage():
    sess = _session(two_input_model())
    first, second = BoundSession(sess), BoundSession(sess)
    a = np.ones((2, 4), np.float32)
    b = np.full((1, 4), 0.5, np.float32)
    y_value, z_value = first.run({"a": a, "b": b}, as_ortvalues=True)
    assert isinstance(y_value, ort.OrtValue) and y_value.shape() == [2, 4]
    out = second.run({"a": y_value, "b": b})  # an OrtValue fed straight in, no host round trip
    y = sess.run(None, {"a": a, "b": b})[0]
    np.testing.assert_array_equal(out[0], sess.run(None, {"a": y, "b": b})[0])
    with pytest.raises(TypeError, match=r"input 'a': expected an OrtValue of tensor\(float\), got tensor\(int64\)"):
        second.run({"a": z_value, "b": b})
    bad_shape = ort.OrtValue.ortvalue_from_numpy(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"input 'a': expected shape \[N, 4\], got \(2, 3\)"):
        second.run({"a": bad_shape, "b": b})
    # switching back to numpy outputs rebinds host buffers
    assert isinstance(first.run({"a": a, "b": b})[0], np.ndarray)


@pytest.mark.timeout(60)
def test_bound_session_one_binding_per_thread(no_thread_leak):
    sess = _session(dfm_model(res=16))
    bound = BoundSession(sess)
    errors, buffers = [], {}
    all_running = threading.Barrier(4, timeout=30)

    def worker(seed):
        try:
            x = faces(2, seed=seed).astype(np.float32) / 255
            ref = sess.run(None, {"in_face:0": x})
            for _ in range(30):
                out = bound.run({"in_face:0": x})
                if not all(np.array_equal(g, w) for g, w in zip(out, ref)):
                    errors.append("thread %d: wrong result" % seed)
            buffers[seed] = out[1]
            all_running.wait()  # no thread ends (and hands its buffers back) before all have run
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    outs = list(buffers.values())
    assert all(not np.shares_memory(x, y) for i, x in enumerate(outs) for y in outs[i + 1:])
    bound.close()
    assert bound.host_pool.stats()["leased"] == 0
    with pytest.raises(RuntimeError, match="closed"):
        bound.run({"in_face:0": np.zeros((1, 16, 16, 3), np.float32)})


@pytest.mark.parametrize("which", ["bound_session", "dfm_runner"])
def test_the_buffers_of_a_thread_that_ended_go_back_when_another_arrives(which, no_thread_leak):
    sess = _session(dfm_model(res=16))
    pool = BufferPool()
    if which == "bound_session":
        runner = BoundSession(sess, host_pool=pool)
        x = faces(1).astype(np.float32) / 255

        def run():  # twice: the first run learns the output shapes, the second binds pooled outputs
            for _ in range(2):
                runner.run({"in_face:0": x})
    else:
        runner = DFMRunner(sess, host_pool=pool)

        def run():
            for _ in range(2):
                runner.run(faces(1))
    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    held_by_worker = pool.stats()["leased"]
    assert held_by_worker > 0  # the ended thread's buffers are still bound to it
    run()  # a new thread arrives: the ended one's buffers return to the pool (and are reused)
    assert pool.stats()["leased"] == held_by_worker and pool.stats()["reuses"] >= held_by_worker
    runner.close()
    assert pool.stats()["leased"] == 0


def test_bound_session_steady_state_allocates_no_large_numpy_arrays():
    sess = _session(dfm_model(res=64))
    bound = BoundSession(sess)
    x = faces(1, res=64).astype(np.float32) / 255
    peak = peak_alloc_per_call(lambda: bound.run({"in_face:0": x}))
    assert peak < 64 * 1024, peak
    assert bound.host_pool.stats()["allocations"] == 3  # the three outputs, once


def test_bound_session_model_failure_is_a_clear_error():
    """Gather with an index out of range: onnxruntime fails; the error names it, no raw traceback."""
    i = helper.make_tensor_value_info("i", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    table = helper.make_tensor("table", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "i"], ["y"])], "g", [i], [y], [table])
    bound = BoundSession(_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])))
    np.testing.assert_array_equal(bound.run({"i": np.array([2], np.int64)})[0], [3.0])
    with pytest.raises(BoundSessionError, match="onnxruntime failed to run the model:.*Gather"):
        bound.run({"i": np.array([10], np.int64)})
    np.testing.assert_array_equal(bound.run({"i": np.array([1], np.int64)})[0], [2.0])  # still usable


def test_bound_session_cuda_graph_falls_back_with_a_reason_on_cpu():
    sess = _session(two_input_model())
    with pytest.warns(CudaGraphFallbackWarning, match="CUDA graphs need device='cuda'"):
        bound = BoundSession(sess, enable_cuda_graph=True)
    assert not bound.cuda_graph_active and bound.cuda_graph_status.startswith("fallback")
    out = bound.run({"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(out[0], np.full((1, 4), 3, np.float32))


def test_fixed_buffer_graph_path_mechanics_on_cpu():
    """CUDA cannot exist here: a CPU session stands in for the CUDA-graph session, so the fixed-buffer
    path (inputs copied into fixed OrtValues, one binding, one signature, fallback) runs for real."""
    from dfl_perf.buffers._graph import CudaGraphPath

    sess = _session(two_input_model())
    bound = BoundSession(sess)
    bound._graph = CudaGraphPath(_session(two_input_model()), True, OrtValuePool("cpu"))
    b = np.full((1, 4), 0.5, np.float32)
    for value in (1.0, 2.0):
        a = np.full((2, 4), value, np.float32)
        out = bound.run({"a": a, "b": b})
        np.testing.assert_array_equal(out[0], sess.run(None, {"a": a, "b": b})[0])
    assert bound.stats()["cuda_graph_runs"] == 2 and bound.stats()["runs"] == 0
    values = bound.run({"a": a, "b": b}, as_ortvalues=True)
    assert values[0].shape() == [2, 4]
    other = np.ones((3, 4), np.float32)  # another signature: the ordinary path on the original session
    np.testing.assert_array_equal(bound.run({"a": other, "b": b})[0], sess.run(None, {"a": other, "b": b})[0])
    assert bound.stats()["cuda_graph_runs"] == 3 and bound.stats()["runs"] == 1
    assert bound.cuda_graph_status.startswith("active")
    bound.close()


def test_fixed_buffer_graph_path_failure_falls_back_with_a_warning():
    from dfl_perf.buffers._graph import CudaGraphPath

    i = helper.make_tensor_value_info("i", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    table = helper.make_tensor("table", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph([helper.make_node("Gather", ["table", "i"], ["y"])], "g", [i], [y], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    bound = BoundSession(_session(model))
    bound._graph = CudaGraphPath(_session(model), True, OrtValuePool("cpu"))
    with pytest.warns(CudaGraphFallbackWarning, match="the run under a CUDA graph failed"):
        with pytest.raises(BoundSessionError, match="Gather"):
            bound.run({"i": np.array([9], np.int64)})
    assert not bound.cuda_graph_active and bound.cuda_graph_status.startswith("fallback")
    np.testing.assert_array_equal(bound.run({"i": np.array([3], np.int64)})[0], [4.0])


def test_cuda_graph_needs_the_cuda_provider():
    from dfl_perf.buffers._graph import GraphUnavailable, graph_session_for

    with pytest.raises(GraphUnavailable, match=r"runs on \['CPUExecutionProvider'\]; CUDA graphs need CUDAExecutionProvider"):
        graph_session_for(_session(two_input_model()), "cuda")


def test_bound_session_refuses_unusable_device_and_non_sessions():
    sess = _session(two_input_model())
    with pytest.raises(TypeError, match="InferenceSession"):
        BoundSession(object())
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ValueError, match="cuda:0"):
            BoundSession(sess, device="cuda")


@pytest.mark.parametrize("name, feed_dtype", [
    ("yunet_n_320_320.onnx", np.float32), ("facemesh_468.onnx", np.float32), ("peppa_slim_160_68pt.onnx", np.float32)])
def test_bound_session_equals_session_run_on_real_models(real_model, name, feed_dtype):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(real_model(name)), sess_options=opts, providers=["CPUExecutionProvider"])
    spec = sess.get_inputs()[0]
    x = np.random.default_rng(7).uniform(0, 1, spec.shape).astype(feed_dtype)
    ref = sess.run(None, {spec.name: x})
    with BoundSession(sess) as bound:
        for _ in range(2):
            out = bound.run({spec.name: x})
            assert len(out) == len(ref) == len(sess.get_outputs())
            for got, want in zip(out, ref):
                assert got.shape == want.shape and got.dtype == want.dtype
                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
        assert bound.stats()["learning_runs"] == 0  # all output shapes are declared


# ----------------------------------------------------------------------------- DFMRunner
@pytest.mark.parametrize("io_binding", [True, False])
@pytest.mark.parametrize("morph", [False, True])
def test_dfm_runner_equals_dfl_way(morph, io_binding):
    sess = _session(dfm_model(res=16, morph=morph))
    runner = DFMRunner(sess, io_binding=io_binding)
    assert runner.resolution == 16 and runner.has_morph_value == morph
    assert (runner.bound is not None) == io_binding
    face = faces(1)[0]
    for factor in (0.75, 0.3):
        out = runner.run(face, morph_factor=factor)
        ref = dfl_reference(sess, face, factor if morph else None)
        assert isinstance(out, DFMOutputs)
        for got, want in zip(out, ref):
            np.testing.assert_array_equal(got, want)  # bit-identical to astype(float32) / 255
    assert out.face_mask.shape == (1, 16, 16, 1) and out.celeb_face.shape == (1, 16, 16, 3)
    runner.close()


@pytest.mark.parametrize("resolution, morph", [(224, False), (320, True)])
def test_dfm_runner_runs_the_dfm_standin_as_dfl_does(resolution, morph):
    from dfl_perf.facepipe.standin import build_dfm_standin

    sess = _session(build_dfm_standin(resolution, morph=morph, cost="5ms", seed=3))
    batch = faces(2, res=resolution, seed=5)
    ref = dfl_reference(sess, batch, 0.75 if morph else None)  # out_face_mask, out_celeb, out_celeb_mask
    for io_binding in (True, False):
        with DFMRunner(sess, io_binding=io_binding, resolution=resolution) as runner:
            out = runner.run(batch)  # DFL's default morph factor, 0.75
            for got, want in zip(out, ref):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(DFMContractError, match="resolution is %d, expected 256" % resolution):
        DFMRunner(sess, resolution=256)


def test_dfm_runner_without_io_binding_hands_out_new_arrays():
    sess = _session(dfm_model(res=16, morph=True))
    runner = DFMRunner(sess, io_binding=False)
    first = runner.run(faces(1, seed=1))
    kept = [o.copy() for o in first]
    second = runner.run(faces(1, seed=2))
    for a, b, k in zip(first, second, kept):
        np.testing.assert_array_equal(a, k)  # the next run did not overwrite them
        assert not np.shares_memory(a, b)
    with pytest.raises(ValueError, match="pass it, not a BoundSession"):
        DFMRunner(BoundSession(sess), io_binding=False)


@pytest.mark.parametrize("io_binding", [True, False])
def test_dfm_runner_morph_factor_is_checked_and_changes_amp_outputs(io_binding):
    face = faces(1, seed=7)
    amp = DFMRunner(_session(dfm_model(res=16, morph=True)), io_binding=io_binding)
    low = amp.run(face, morph_factor=0.0).celeb_face.copy()
    high = amp.run(face, morph_factor=1.0).celeb_face
    assert np.abs(low - high).max() > 1e-3
    with pytest.raises(ValueError, match=r"morph_value:0: morph_factor must be within 0..1, got 1.5"):
        amp.run(face, morph_factor=1.5)
    plain = DFMRunner(_session(dfm_model(res=16)), io_binding=io_binding)
    np.testing.assert_array_equal(plain.run(face, morph_factor=1.5).celeb_face,  # ignored, as DFL does
                                  plain.run(face).celeb_face)


def test_dfm_runner_batches_faces_and_accepts_lists_and_float_faces():
    sess = _session(dfm_model(res=16))
    runner = DFMRunner(BoundSession(sess))
    batch = faces(3)
    out = [o.copy() for o in runner.run(batch)]
    for i in range(3):
        single = dfl_reference(sess, batch[i])
        for got, want in zip(out, single):
            np.testing.assert_allclose(got[i:i + 1], want, rtol=1e-6, atol=1e-7)
    as_list = runner.run(list(batch))
    for got, want in zip(as_list, out):
        np.testing.assert_array_equal(got, want)
    as_float = runner.run(batch.astype(np.float32) / np.float32(255))
    for got, want in zip(as_float, out):
        np.testing.assert_array_equal(got, want)
    strided = runner.run(np.ascontiguousarray(batch[:, :, ::-1])[:, :, ::-1])  # non-contiguous source
    np.testing.assert_array_equal(strided.celeb_face, out[1])


def test_dfm_runner_maps_outputs_by_name():
    sess = _session(dfm_model(res=16, output_order=(2, 0, 1)))
    names = [o.name for o in sess.get_outputs()]
    assert names == ["out_celeb_face_mask:0", "out_face_mask:0", "out_celeb_face:0"]
    out = DFMRunner(sess).run(faces(1)[0])
    ref = dict(zip(names, dfl_reference(sess, faces(1)[0])))
    np.testing.assert_array_equal(out.face_mask, ref["out_face_mask:0"])
    np.testing.assert_array_equal(out.celeb_face, ref["out_celeb_face:0"])
    np.testing.assert_array_equal(out.celeb_face_mask, ref["out_celeb_face_mask:0"])


@pytest.mark.parametrize("kwargs, pattern", [
    ({"face_name": "image"}, r"input 0 must be named like 'in_face:0', got 'image'"),
    ({"nchw": True}, r"'in_face:0' must be float32 NHWC \[N, res, res, 3\], got float32 \[N, 3, 16, 16\] "
                     r"\(this looks NCHW"),
    ({"n_outputs": 2}, "expected 3 outputs"),
])
def test_dfm_runner_rejects_models_outside_the_contract(kwargs, pattern):
    with pytest.raises(DFMContractError, match=pattern):
        DFMRunner(_session(dfm_model(res=16, **kwargs)))


def test_dfm_runner_rejects_extra_inputs():
    model = dfm_model(res=16, morph=True)
    model.graph.input.append(helper.make_tensor_value_info("gamma", TensorProto.FLOAT, [1]))
    with pytest.raises(DFMContractError, match=r"1 or 2 inputs .*got 3: .*'gamma' float32 \[1\]"):
        DFMRunner(_session(model))


def _spec(name, dims, dtype=np.float32):
    return TensorSpec(name, np.dtype(dtype), dims, "tensor(float)" if dtype == np.float32 else "tensor(other)")


def _dfm_specs(res=16, morph=True, names=("out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"),
               channels=(1, 3, 1)):
    inputs = [_spec("in_face:0", ["N", res, res, 3])] + ([_spec("morph_value:0", [1])] if morph else [])
    return inputs, [_spec(n, ["N", res, res, c]) for n, c in zip(names, channels)]


def test_check_dfm_contract_reports_what_it_found():
    inputs, outputs = _dfm_specs(names=("out_celeb_face_mask:0", "out_face_mask:0", "out_celeb_face:0"),
                                 channels=(1, 1, 3))
    contract = check_dfm_contract(inputs, outputs, resolution=16)
    assert (contract.input_name, contract.morph_name, contract.resolution) == ("in_face:0", "morph_value:0", 16)
    assert contract.fixed_batch is None and contract.output_order == (1, 2, 0)
    assert contract.output_names == ["out_face_mask:0", "out_celeb_face:0", "out_celeb_face_mask:0"]
    fixed = check_dfm_contract([_spec("in_face", [1, 8, 8, 3])], _dfm_specs(8, names=("a", "b", "c"))[1])
    assert fixed.fixed_batch == 1 and fixed.morph is None and fixed.output_names == ["a", "b", "c"]


@pytest.mark.parametrize("change, pattern", [
    (lambda i, o: (i, o, 32), r"resolution is 16, expected 32 \(input 'in_face:0' \[N, 16, 16, 3\]\)"),
    (lambda i, o: (i[::-1], o, None), r"input 0 must be named like 'in_face:0', got 'morph_value:0'"),
    (lambda i, o: ([i[0], _spec("strength:0", [1])], o, None), r"input 1 .*'morph_value:0', got 'strength:0'"),
    (lambda i, o: ([i[0], _spec("morph_value:0", [2])], o, None),
     r"'morph_value:0' must be float32 \[1\], got float32 \[2\]"),
    (lambda i, o: ([_spec("in_face:0", ["N", 16, 16, 3], np.float16)], o, None),
     r"'in_face:0' must be float32 NHWC \[N, res, res, 3\], got float16 \[N, 16, 16, 3\]$"),
    (lambda i, o: ([_spec("in_face:0", ["N", 16, 24, 3])], o, None),
     r"'in_face:0' must be a fixed square \[N, res, res, 3\], got \[N, 16, 24, 3\]"),
    (lambda i, o: ([_spec("in_face:0", ["N", "H", "W", 3])], o, None), r"fixed square .*got \[N, H, W, 3\]"),
    (lambda i, o: (i, o[:2], None), r"expected 3 outputs .*got 2: \['out_face_mask:0', 'out_celeb_face:0'\]"),
    (lambda i, o: (i, [o[0], _spec("out_celeb_face:0", ["N", 16, 16, 3], np.float16), o[2]], None),
     r"output 'out_celeb_face:0' must be float32, got float16"),
    (lambda i, o: (i, _dfm_specs(channels=(3, 1, 1))[1], None),
     r"output 'out_face_mask:0' must be out_face_mask \[N, res, res, 1\], got \[N, 16, 16, 3\].*DFL's order"),
    (lambda i, o: (i, [o[0], _spec("out_celeb_face:0", ["N", 16, 3]), o[2]], None),
     r"'out_celeb_face:0' must be out_celeb_face \[N, res, res, 3\], got \[N, 16, 3\]"),
])
def test_check_dfm_contract_names_the_tensor_and_expected_vs_got(change, pattern):
    inputs, outputs, resolution = change(*_dfm_specs())
    with pytest.raises(DFMContractError, match=pattern):
        check_dfm_contract(inputs, outputs, resolution)


def test_check_dfm_contract_takes_session_node_args():
    sess = _session(dfm_model(res=16, morph=True))
    contract = check_dfm_contract(sess.get_inputs(), sess.get_outputs(), 16)
    assert contract.morph_name == "morph_value:0" and contract.face.dtype == np.float32
    with pytest.raises(DFMContractError, match="resolution is 16, expected 8"):
        check_dfm_contract(sess.get_inputs(), sess.get_outputs(), 8)


def test_dfm_runner_bad_faces():
    runner = DFMRunner(_session(dfm_model(res=16)))
    with pytest.raises(ValueError, match=r"in_face:0: faces must be aligned faces of shape \(16, 16, 3\)"):
        runner.run(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8 BGR 0..255 or float32 0..1, got float64"):
        runner.run(np.zeros((16, 16, 3)))
    with pytest.raises(ValueError, match="face 1 must be aligned"):
        runner.run([np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16, 4), np.uint8)])
    with pytest.raises(ValueError, match="no faces"):
        runner.run([])
    with pytest.raises(TypeError, match="numpy array or a list"):
        runner.run("face.png")
    with pytest.raises(TypeError, match="morph_factor must be a number"):
        DFMRunner(_session(dfm_model(res=16, morph=True))).run(faces(1)[0], morph_factor=None)
    fixed = DFMRunner(_session(dfm_model(res=16, batch=1)))
    with pytest.raises(ValueError, match="batch axis is fixed at 1, got 2 faces"):
        fixed.run(faces(2))


def test_dfm_runner_steady_state_allocates_no_large_numpy_arrays():
    sess = _session(dfm_model(res=64, morph=True))
    runner = DFMRunner(sess)
    face = faces(1, res=64)[0]
    assert peak_alloc_per_call(lambda: runner.run(face)) < 64 * 1024
    naive = peak_alloc_per_call(lambda: dfl_reference(sess, face, 0.75))
    assert naive >= 64 * 64 * 3 * 4  # DFL's way allocates at least the float32 input every frame


@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", ["dfm_runner", "bound_session"])
def test_close_from_another_thread_waits_for_the_run_in_progress(which, no_thread_leak):
    sess = _session(dfm_model(res=16))
    pool = BufferPool()
    if which == "dfm_runner":
        runner = DFMRunner(sess, host_pool=pool)
        args = (faces(1, res=16),)
    else:
        runner = BoundSession(sess, host_pool=pool)
        args = ({"in_face:0": faces(1, res=16).astype(np.float32) / 255},)
    inside, release = threading.Event(), threading.Event()
    method = "_run_bound" if which == "dfm_runner" else "_run"
    real_run = getattr(runner, method)

    def held_run(*a):  # the real run, held open until the test lets it finish
        out = real_run(*a)
        inside.set()
        release.wait(30)
        return out

    setattr(runner, method, held_run)
    results = []
    worker = threading.Thread(target=lambda: results.append(runner.run(*args)))
    worker.start()
    assert inside.wait(30)
    closer = threading.Thread(target=runner.close)
    closer.start()
    deadline = time.monotonic() + 30
    while not runner._guard.closed and time.monotonic() < deadline:  # close() has begun: new runs refused
        time.sleep(0.001)
    closer.join(1.0)
    assert closer.is_alive(), "close() returned while a run was still using its buffers"
    with pytest.raises(RuntimeError, match="closed"):  # closing: no new run starts
        runner.run(*args)
    release.set()
    worker.join(30)
    closer.join(30)
    assert not closer.is_alive() and len(results) == 1
    assert pool.stats()["leased"] == 0
