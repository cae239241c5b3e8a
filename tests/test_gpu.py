"""GPU tests (marker ``gpu``): dfl_perf's CUDA paths on a real NVIDIA GPU (issue 24).

``pytest -m gpu`` runs them; ``benchmarks/gpu_check.py`` does, and records every outcome in its
JSON. Without a session that really runs on CUDA (no onnxruntime-gpu, no GPU, CUDA/cuDNN libraries
missing) the whole module skips once, saying why (``cuda_unavailable_reason``). None of these has
run yet: no GPU has been lent to this project so far. The CPU paths of the same code are tested in
test_buffers.py, test_sessions*.py and test_adapters_deepfacelive.py; what decides the skip, and the
script around these tests, are tested on the CPU in test_gpu_check.py.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from gpu_check import DIFF_TOLERANCE, cpu_node_model, cuda_unavailable_reason  # noqa: E402

pytestmark = pytest.mark.gpu

_REASON = cuda_unavailable_reason()
if _REASON:
    pytest.skip(_REASON, allow_module_level=True)

import onnxruntime as ort  # noqa: E402

from dfl_perf.buffers import BoundSession, DFMRunner, OrtValuePool  # noqa: E402
from dfl_perf.buffers._graph import CudaGraphFallbackWarning  # noqa: E402
from dfl_perf.buffers.bound import BoundSessionError  # noqa: E402
from dfl_perf.devices import select_providers  # noqa: E402
from dfl_perf.facepipe.standin import build_dfm_standin  # noqa: E402
from dfl_perf.sessions import SessionConfig, create_session  # noqa: E402

CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def standin() -> bytes:
    """The DFM stand-in (DFL's tensor contract, 224 px, convolutions CUDA runs whole)."""
    return build_dfm_standin(resolution=224, cost="5ms").SerializeToString()


def _faces(batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    return (rng.randint(0, 256, size=(batch, 224, 224, 3)) / 255.0).astype(np.float32)


def _cpu(model: bytes, x: np.ndarray, name: str = "in_face:0"):
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {name: x})


def _cuda(model, **options: str):
    providers = select_providers("cuda")[:1]
    providers = [(CUDA, dict(providers[0][1], **options))]
    return create_session(model, SessionConfig.tuned(providers=providers).replace(strict=True))


def _close(got, want, tol: float = DIFF_TOLERANCE) -> float:
    worst = max(float(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max()) for g, w in zip(got, want))
    assert worst <= tol, "largest difference %.3g > %.3g" % (worst, tol)
    return worst


# ------------------------------------------------------------------------------------------- sessions

def test_tuned_cuda_session_runs_on_cuda_with_heuristic_search(standin):
    session = _cuda(standin)
    assert session.get_providers()[0] == CUDA
    assert session.get_provider_options()[CUDA]["cudnn_conv_algo_search"] == "HEURISTIC"
    x = _faces(2)
    _close(session.run(None, {"in_face:0": x}), _cpu(standin, x))


def test_model_cache_counts_a_cuda_session_as_device_memory(standin, tmp_path):
    from dfl_perf.sessions import ModelCache

    path = tmp_path / "standin.onnx"
    path.write_bytes(standin)
    config = SessionConfig.tuned(providers=select_providers("cuda")[:1])
    with ModelCache(config=config) as cache:
        cache.get(path)
        stats = cache.stats()
    assert stats["bytes_device"] >= path.stat().st_size and stats["bytes_host"] == 0, stats


# -------------------------------------------------------------------------------- OrtValuePool on CUDA

def test_ortvalue_pool_on_cuda_reuses_device_buffers():
    pool = OrtValuePool("cuda", max_bytes=8 << 20)
    value = pool.acquire((4, 256, 256), np.float32)
    assert value.device_name().lower() == "cuda"
    data = np.arange(4 * 256 * 256, dtype=np.float32).reshape(4, 256, 256)
    value.update_inplace(data)
    np.testing.assert_array_equal(value.numpy(), data)
    pool.release(value)
    again = pool.acquire((4, 256, 256), np.float32)
    assert again is value
    stats = pool.stats()
    assert stats["allocations"] == 1 and stats["reuses"] == 1 and stats["device"] == "cuda:0"
    pool.release(again)
    other = pool.acquire((8, 256, 256), np.float32)  # 2 MiB more: the budget (8 MiB) keeps both
    pool.release(other)
    pool.max_bytes = 2 << 20  # now only one fits: the least recently released goes
    assert pool.stats()["evictions"] == 1 and pool.bytes_held() <= 2 << 20


# ---------------------------------------------------------------------------------- BoundSession on CUDA

def test_bound_session_on_cuda_matches_cpu_and_allocates_nothing_per_frame(standin):
    x = _faces(1)
    want = _cpu(standin, x)
    with BoundSession(_cuda(standin), device="cuda") as bound:
        _close([o.copy() for o in bound.run({"in_face:0": x})], want)
        values = bound.run({"in_face:0": x}, as_ortvalues=True)
        assert {v.device_name().lower() for v in values} == {"cuda"}
        _close([v.numpy() for v in values], want)
        before = bound.device_pool.stats()["allocations"]
        for as_ortvalues in (True, False):  # one rebinding when the kind of output changes, not per run
            for _ in range(20):
                bound.run({"in_face:0": x}, as_ortvalues=as_ortvalues)
        assert bound.device_pool.stats()["allocations"] == before
        stats = bound.stats()
    assert stats["output_rebinds"] <= 4 and stats["unbound_runs"] == 0, stats


def test_ortvalues_pass_between_two_sessions_without_the_host(standin):
    """The stand-in's celeb face (on the device) is fed straight back in: two runs, no host copy."""
    x = _faces(1)
    first = _cpu(standin, x)
    want = _cpu(standin, first[1])
    session = _cuda(standin)
    with BoundSession(session, device="cuda") as a, BoundSession(session, device="cuda") as b:
        face = a.run({"in_face:0": x}, as_ortvalues=True)[1]
        assert face.device_name().lower() == "cuda"
        _close([v.numpy() for v in b.run({"in_face:0": face}, as_ortvalues=True)], want, tol=2 * DIFF_TOLERANCE)


def test_bound_session_on_cuda_from_several_threads(standin):
    session = _cuda(standin)
    inputs = [_faces(1, seed=s) for s in range(3)]
    wants = [_cpu(standin, x) for x in inputs]
    errors = []
    with BoundSession(session, device="cuda") as bound:
        def work(i: int) -> None:
            try:
                for _ in range(10):
                    _close([o.copy() for o in bound.run({"in_face:0": inputs[i]})], wants[i])
            except Exception as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert bound.stats()["threads"] == 3
    assert not errors, errors


def test_dfm_runner_on_cuda_matches_cpu(standin):
    faces = (_faces(2) * 255).astype(np.uint8)
    with DFMRunner(_cuda(standin), device="cuda") as gpu, \
            DFMRunner(ort.InferenceSession(standin, providers=["CPUExecutionProvider"])) as cpu:
        _close([o.copy() for o in gpu.run(faces)], cpu.run(faces))


# ----------------------------------------------------------------------------------------- CUDA graphs

def test_cuda_graph_captures_replays_and_leaves_other_shapes_to_the_session(standin):
    x1, x2 = _faces(1, seed=1), _faces(2, seed=2)
    session = _cuda(standin)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CudaGraphFallbackWarning)
        with BoundSession(session, device="cuda", enable_cuda_graph=True) as bound:
            first = [o.copy() for o in bound.run({"in_face:0": x1})]
            for _ in range(5):
                again = [o.copy() for o in bound.run({"in_face:0": x1})]
            other = [o.copy() for o in bound.run({"in_face:0": x2})]
            stats = bound.stats()
    assert stats["cuda_graph"].startswith("active"), stats
    assert stats["cuda_graph_runs"] == 6 and stats["runs"] == 1, stats
    _close(first, _cpu(standin, x1))
    _close(again, first, tol=1e-6)  # a replay computes exactly what the capture did
    _close(other, _cpu(standin, x2))


def test_a_session_made_with_enable_cuda_graph_is_used_as_it_is(standin):
    session = _cuda(standin, enable_cuda_graph="1")
    x = _faces(1)
    with pytest.raises(ValueError, match="enable_cuda_graph"):
        BoundSession(session, device="cuda")
    with BoundSession(session, device="cuda", enable_cuda_graph=True) as bound:
        _close([o.copy() for o in bound.run({"in_face:0": x})], _cpu(standin, x))
        assert bound.stats()["cuda_graph"].startswith("active")
        with pytest.raises(BoundSessionError, match="captured for input shapes"):
            bound.run({"in_face:0": _faces(2)})


def test_cuda_graph_falls_back_with_the_reason_when_a_node_runs_on_the_cpu():
    model = cpu_node_model()  # Conv, then ai.onnx.ml Scaler: a node only the CPU provider has
    x = np.linspace(0, 1, 256, dtype=np.float32).reshape(1, 1, 16, 16)
    want = _cpu(model, x, name="x")
    session = _cuda(model)
    with pytest.warns(CudaGraphFallbackWarning) as caught:
        with BoundSession(session, device="cuda", enable_cuda_graph=True) as bound:
            got = [o.copy() for o in bound.run({"x": x})]
            got_again = [o.copy() for o in bound.run({"x": x})]
            status = bound.cuda_graph_status
    assert status.startswith("fallback: ") and len(status) > len("fallback: ") + 10, status
    assert "CUDA graph mode is off" in str(caught[0].message)
    _close(got, want, tol=1e-5)
    _close(got_again, want, tol=1e-5)


# --------------------------------------------------------------------- the DFL adapter's CUDA sessions

class _DeviceInfo:
    """DFL's ``ORTDeviceInfo`` as the factory reads it (its two getters)."""

    def __init__(self, index: int, provider: str = CUDA) -> None:
        self.index, self.provider = index, provider

    def get_execution_provider(self) -> str:
        return self.provider

    def get_index(self) -> int:
        return self.index


def test_dfl_factory_builds_cuda_sessions(standin, tmp_path):
    from dfl_perf.adapters.deepfacelive import DFLConfig
    from dfl_perf.adapters.deepfacelive.factory import make_session_factory

    path = tmp_path / "model.onnx"
    path.write_bytes(standin)
    factory = make_session_factory(DFLConfig())
    session = factory(str(path), _DeviceInfo(0))
    assert session.get_providers()[0] == CUDA
    record = factory.dfl_perf_state.records[-1]
    assert record.fallback_reason is None and record.providers[0] == CUDA
    x = _faces(1)
    _close(session.run(None, {"in_face:0": x}), _cpu(standin, x))


def test_dfl_factory_falls_back_to_cpu_when_cuda_cannot_start(standin, tmp_path, caplog):
    """A GPU index that does not exist makes the CUDA provider fail for real: the session must
    come up on the CPU with a warning, and with cpu_fallback off the error must name the problem."""
    from dfl_perf.adapters.deepfacelive import DFLConfig
    from dfl_perf.adapters.deepfacelive.factory import make_session_factory

    path = tmp_path / "model.onnx"
    path.write_bytes(standin)
    factory = make_session_factory(DFLConfig())
    with caplog.at_level("WARNING", logger="dfl_perf.adapters.deepfacelive"):
        session = factory(str(path), _DeviceInfo(97))
    assert session.get_providers() == ["CPUExecutionProvider"]
    record = factory.dfl_perf_state.records[-1]
    assert record.fallback_reason and CUDA in record.fallback_reason, record
    assert "running" in caplog.text and "on CPU instead" in caplog.text
    strict = make_session_factory(DFLConfig(cpu_fallback=False))
    with pytest.raises(Exception, match="choose the CPU device"):
        strict(str(path), _DeviceInfo(97))


# ---------------------------------------------------------------------------------------------- TensorRT

def test_tensorrt_warm_start_uses_the_engine_cache(standin, tmp_path):
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("TensorRT is not usable here: this onnxruntime has no TensorrtExecutionProvider")
    model = tmp_path / "model.onnx"
    model.write_bytes(standin)
    cache = tmp_path / "trt"
    config = SessionConfig.tuned(providers=select_providers("tensorrt", cache_dir=cache))
    t0 = time.perf_counter()
    session = create_session(model, config)
    if session.get_providers()[0] != "TensorrtExecutionProvider":
        pytest.skip("TensorRT is not usable here: its provider fell back to %s (TensorRT libraries missing?)"
                    % session.get_providers()[0])
    x = _faces(1)
    _close(session.run(None, {"in_face:0": x}), _cpu(standin, x), tol=4 * DIFF_TOLERANCE)
    cold = time.perf_counter() - t0
    engines = sorted(p.name for p in cache.glob("*.engine"))
    assert engines, "no engine file in %s" % cache
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.engine")}
    del session
    t0 = time.perf_counter()
    warm_session = create_session(model, config)
    warm_session.run(None, {"in_face:0": x})
    warm = time.perf_counter() - t0
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.engine")} == mtimes  # read, not rebuilt
    assert warm < cold, (warm, cold)


# ---------------------------------------------------------------------------- NVML and the whole pipeline

def test_nvml_sampler_sees_a_cuda_session_take_device_memory(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from dfl_perf.monitor import SystemSampler

    weights = numpy_helper.from_array(np.ones((4096, 4096), np.float32), "w")  # 64 MiB
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], initializer=[weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with SystemSampler(interval=1.0, gpus=True) as sampler:
        before = sampler.sample_once()["gpus"][0]["memory_used"]
        session = _cuda(model.SerializeToString())
        session.run(None, {"x": np.ones((1, 4096), np.float32)})
        after = sampler.sample_once()["gpus"][0]["memory_used"]
    assert after - before >= 64 << 20, (before, after)


def test_optimized_runner_on_cuda_matches_dfl_way():
    from dfl_perf.benchmark import MATCH_TOLERANCE
    from dfl_perf.facepipe.clip import make_clip
    from dfl_perf.facepipe.workload import BaselineRunner, OptimizedRunner, Workload

    frames = make_clip(size=(640, 480), frames=12).to_list()
    workload = Workload(dfm_cost="5ms")
    expected = {}
    BaselineRunner(workload, CUDA).run(frames, sink=lambda i, f: expected.__setitem__(i, f.copy()))
    diffs = []
    with OptimizedRunner(workload, "cuda") as runner:
        assert runner.provider == CUDA
        runner.run(frames, sink=lambda i, f: diffs.append(int(np.abs(f.astype(np.int16) - expected[i]).max())))
    assert len(diffs) == len(frames) and max(diffs) <= MATCH_TOLERANCE, diffs
