"""dfl_perf.sessions: SessionConfig, create_session (typed errors, provider fallback) and the disk cache."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import tiny_model  # noqa: E402

from dfl_perf.sessions import ModelLoadError, SessionConfig, create_session, create_session_with_info  # noqa: E402
from dfl_perf.sessions.diskcache import OptimizedModelCache, optimized_cache_dir  # noqa: E402
from dfl_perf.sessions.errors import (  # noqa: E402
    InvalidModelError,
    ModelNotFoundError,
    ProviderError,
    UnsupportedModelError,
)
from dfl_perf.sessions.warmup import zero_inputs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def conv_model(channels: int = 8, seed: int = 0):
    """A small conv net: enough nodes for onnxruntime's optimizer to change the graph."""
    rng = np.random.RandomState(seed)
    inits, nodes, x = [], [], "x"
    for i, (cin, cout) in enumerate(((3, channels), (channels, channels), (channels, 3))):
        inits.append(numpy_helper.from_array(rng.randn(cout, cin, 3, 3).astype(np.float32) * 0.2, "w%d" % i))
        inits.append(numpy_helper.from_array(rng.randn(cout).astype(np.float32) * 0.1, "b%d" % i))
        nodes.append(helper.make_node("Conv", [x, "w%d" % i, "b%d" % i], ["c%d" % i], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", ["c%d" % i], ["h%d" % i]))
        x = "h%d" % i
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, 32, 32])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.fixture
def ok_path(tmp_path) -> Path:
    return save(tiny_model(), tmp_path / "ok.onnx")


# ---------------------------------------------------------------------------------------- config

def test_config_is_frozen_hashable_picklable():
    config = SessionConfig.tuned(threads=2, providers="cpu")
    assert config.providers == (("CPUExecutionProvider", ()),)
    assert hash(config) == hash(SessionConfig.tuned(threads=2, providers=["CPUExecutionProvider"]))
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.intra_op_threads = 3
    other = config.replace(intra_op_threads=3)
    assert other.intra_op_threads == 3 and config.intra_op_threads == 2
    assert SessionConfig(providers=[("CPUExecutionProvider", {"a": True})]).providers == (
        ("CPUExecutionProvider", (("a", "1"),)),)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="graph_optimization"):
        SessionConfig(graph_optimization="fast")
    with pytest.raises(ValueError, match="intra_op_threads"):
        SessionConfig(intra_op_threads=-1)
    with pytest.raises(ValueError, match="execution_mode"):
        SessionConfig(execution_mode="wild")
    assert SessionConfig(graph_optimization=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC).graph_optimization == "basic"
    assert SessionConfig(graph_optimization=99).graph_optimization == "all"


@pytest.mark.parametrize("provider, device_id, options, mem_pattern", [
    ("CPUExecutionProvider", 0, (), None),
    ("cuda", 1, (("device_id", "1"),), None),
    ("DmlExecutionProvider", 2, (("device_id", "2"),), False),
])
def test_dfl_default_matches_inference_session_with_device(provider, device_id, options, mem_pattern):
    config = SessionConfig.dfl_default(provider, device_id)
    assert len(config.providers) == 1 and config.providers[0][1] == options
    assert config.enable_mem_pattern is mem_pattern
    so, providers = config.to_session_options(), config.provider_list()
    default = ort.SessionOptions()
    assert so.log_severity_level == 4 and so.log_verbosity_level == -1
    assert providers == [(config.providers[0][0], dict(options))]
    assert so.enable_mem_pattern == (default.enable_mem_pattern if mem_pattern is None else mem_pattern)
    for name in ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
                 "enable_cpu_mem_arena"):
        assert getattr(so, name) == getattr(default, name), name


def test_to_session_options_applies_every_field():
    config = SessionConfig(intra_op_threads=2, inter_op_threads=1, intra_op_spinning=False, inter_op_spinning=True,
                           graph_optimization="basic", execution_mode="parallel", enable_mem_pattern=False,
                           enable_cpu_mem_arena=False, log_severity_level=3, free_dimensions={"N": 2},
                           config_entries={"session.disable_prepacking": "1"}, providers="cpu")
    so, providers = config.to_session_options(), config.provider_list()
    assert (so.intra_op_num_threads, so.inter_op_num_threads) == (2, 1)
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.execution_mode == ort.ExecutionMode.ORT_PARALLEL
    assert not so.enable_mem_pattern and not so.enable_cpu_mem_arena
    if hasattr(so, "get_session_config_entry"):
        assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert so.get_session_config_entry("session.inter_op.allow_spinning") == "1"
        assert so.get_session_config_entry("session.disable_prepacking") == "1"
    assert providers == [("CPUExecutionProvider", {})]


_costs = st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=6).filter(lambda c: sum(c) > 0)


@settings(max_examples=300, deadline=None)
@given(budget=st.integers(1, 64), costs=_costs)
def test_for_pipeline_shares_the_budget_by_cost(budget, costs):
    threads = _split(budget, costs)
    shares = [budget * c / sum(costs) for c in costs]  # each session's share of the cores
    for n, share in zip(threads, shares):
        assert 1 <= n <= budget
        assert n >= min(budget, int(share))  # at least its share, rounded down
        assert n < max(1.0, share) + 1  # never a whole thread more than its share
    for (n_a, c_a), (n_b, c_b) in zip(zip(threads, costs), zip(threads[1:], costs[1:])):
        assert (n_a - n_b) * (c_a - c_b) >= 0  # the heavier one never gets fewer
    heavy = costs.index(max(costs))
    if budget >= 4 and len(costs) > 1 and costs[heavy] >= 2 * (sum(costs) - costs[heavy]):
        assert all(threads[heavy] > n for i, n in enumerate(threads) if i != heavy)  # a dominant stage gets more


@settings(max_examples=100, deadline=None)
@given(budget=st.integers(1, 64), sessions=st.integers(1, 6))
def test_for_pipeline_without_costs_splits_evenly_within_the_budget(budget, sessions):
    threads = _split(budget, None, sessions)
    assert len(set(threads)) == 1 and threads[0] >= 1
    assert sum(threads) <= max(budget, sessions)  # oversubscribed only when there are fewer cores than sessions
    assert sum(threads) > budget - sessions  # and no core is left unused beyond the remainder


def test_for_pipeline_gives_the_spare_core_to_a_heavy_swap_model(monkeypatch):
    # Two cores, a detector and a marker much lighter than the swap model: spinning is off, so the light
    # stages sleep most of the time and the swap model gets both cores.
    import dfl_perf.devices

    monkeypatch.setattr(dfl_perf.devices, "cpu_budget", lambda: 2)
    configs = SessionConfig.for_pipeline(sessions=3, costs=[4, 3, 20], providers="cpu")
    assert [c.intra_op_threads for c in configs] == [1, 1, 2]
    assert all(c.intra_op_spinning is False and c.inter_op_spinning is False for c in configs)
    assert all(c.providers == (("CPUExecutionProvider", ()),) for c in configs)


def _split(budget, costs, sessions=None):
    import dfl_perf.devices

    saved = dfl_perf.devices.cpu_budget
    dfl_perf.devices.cpu_budget = lambda: budget
    try:
        configs = SessionConfig.for_pipeline(sessions or len(costs), costs=costs, providers="cpu")
    finally:
        dfl_perf.devices.cpu_budget = saved
    return [c.intra_op_threads for c in configs]


def test_for_pipeline_rejects_bad_arguments():
    with pytest.raises(ValueError, match="costs has 2 entries for 3 sessions"):
        SessionConfig.for_pipeline(3, costs=[1, 2])
    with pytest.raises(ValueError, match="sessions"):
        SessionConfig.for_pipeline(0)


def test_with_provider_options_merges_and_checks():
    config = SessionConfig(providers=[("CUDAExecutionProvider", {"device_id": "0"}), "cpu"])
    tuned = config.with_provider_options("cuda", gpu_mem_limit=1 << 30, enable_cuda_graph=True)
    assert dict(tuned.providers[0][1]) == {"device_id": "0", "gpu_mem_limit": str(1 << 30), "enable_cuda_graph": "1"}
    with pytest.raises(ValueError, match="does not use TensorrtExecutionProvider"):
        config.with_provider_options("trt", trt_fp16_enable=True)


# ----------------------------------------------------------------------------------- create_session

def test_create_session_from_path_bytes_and_proto(ok_path):
    x = np.array([[-1, 0, 1, 2]], np.float32)
    for model in (ok_path, str(ok_path), ok_path.read_bytes(), tiny_model()):
        session = create_session(model, SessionConfig.tuned(threads=1))
        np.testing.assert_allclose(session.run(None, {"x": x})[0], [[1, 1, 2, 3]])


@pytest.mark.parametrize("case, error, words", [
    ("missing", ModelNotFoundError, "not found"),
    ("directory", ModelNotFoundError, "directory"),
    ("empty", InvalidModelError, "empty"),
    ("truncated", InvalidModelError, "truncated"),
    ("not_onnx", InvalidModelError, "not a valid ONNX model"),
    ("opset99", UnsupportedModelError, "opset 99"),
])
def test_create_session_errors_are_typed_and_name_the_file(tmp_path, case, error, words):
    path = tmp_path / ("%s.onnx" % case)
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        data = tiny_model(pad=256).SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    elif case == "not_onnx":
        path.write_bytes(b"PK\x03\x04 this is a zip file, not a model" * 8)
    elif case == "opset99":
        save(tiny_model(opset=99), path)
    with pytest.raises(error) as info:
        create_session(path, SessionConfig.tuned(threads=1))
    assert isinstance(info.value, ModelLoadError)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and words in str(info.value)
    assert "onnxruntime_src" not in str(info.value) and "[ONNXRuntimeError]" not in str(info.value)
    assert pickle.loads(pickle.dumps(info.value)).path == str(path)


def _one_node(op: str, domain: str = "", ir: int = 8):
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir
    return model


@pytest.mark.parametrize("model, words", [
    (_one_node("NoSuchOp"), "NoSuchOp"),
    (_one_node("Foo", domain="my.domain"), "my.domain"),
    (_one_node("Relu", ir=99), "IR version"),
])
def test_models_this_onnxruntime_cannot_run(tmp_path, model, words):
    path = save(model, tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModelError, match="cannot run on onnxruntime") as info:
        create_session(path, SessionConfig(providers=["cuda", "cpu"]))  # not blamed on a provider
    assert words in str(info.value) and str(path) in str(info.value)


def test_in_memory_errors_say_so():
    with pytest.raises(InvalidModelError, match="empty"):
        create_session(b"")
    with pytest.raises(UnsupportedModelError, match="in-memory model") as info:
        create_session(tiny_model(opset=99).SerializeToString())
    assert info.value.path is None
    with pytest.raises(TypeError, match="path, model bytes or onnx.ModelProto"):
        create_session(42)


def test_unavailable_provider_falls_back_with_a_warning(ok_path, caplog):
    config = SessionConfig(providers=["cuda", "cpu"])
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        info = create_session_with_info(ok_path, config)
    assert info.providers == ["CPUExecutionProvider"]
    assert any("CUDAExecutionProvider is not available" in r.getMessage() for r in caplog.records)
    assert info.fallbacks and str(ok_path) in info.fallbacks[0]


def test_unavailable_provider_raises_when_strict(ok_path):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider is not available") as info:
        create_session(ok_path, SessionConfig(providers=["cuda", "cpu"], strict=True))
    assert info.value.path == str(ok_path)
    with pytest.raises(ProviderError, match="no usable execution provider"):
        create_session(ok_path, SessionConfig(providers=["cuda"]))


def test_zero_inputs_use_declared_and_given_dims():
    session = create_session(tiny_model(dims=("batch", 4)), SessionConfig.tuned(threads=1))
    assert zero_inputs(session)["x"].shape == (1, 4)
    assert zero_inputs(session, {"batch": 3})["x"].shape == (3, 4)


# ------------------------------------------------------------------------------------- disk cache

def _entries(root: Path):
    return sorted(p.name for p in root.iterdir() if p.is_file())


@pytest.mark.timeout(60)
def test_disk_cache_stores_then_hits_with_identical_outputs(cache_dir, tmp_path):
    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    first = create_session_with_info(path, config)
    second = create_session_with_info(path, config)
    assert (first.disk_cache, second.disk_cache) == ("stored", "hit")
    root = optimized_cache_dir()
    assert root == cache_dir / "optimized"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    names = _entries(root)
    assert len([n for n in names if n.endswith(".onnx")]) == 1 and len([n for n in names if n.endswith(".json")]) == 1
    assert not [n for n in names if n.endswith((".tmp", ".lock"))]
    x = np.random.RandomState(1).rand(1, 3, 32, 32).astype(np.float32)
    cold = create_session(path, config.replace(disk_cache=False))
    np.testing.assert_allclose(second.session.run(None, {"x": x})[0], cold.run(None, {"x": x})[0], rtol=1e-5,
                               atol=1e-6)
    # another thread count shares the entry; another optimisation level does not
    assert create_session_with_info(path, config.replace(intra_op_threads=2)).disk_cache == "hit"
    assert create_session_with_info(path, config.replace(graph_optimization="basic")).disk_cache == "stored"


@pytest.mark.timeout(60)
def test_disk_cache_off_by_default(cache_dir, ok_path):
    assert create_session_with_info(ok_path, SessionConfig.tuned(threads=1)).disk_cache == "off"
    assert not (cache_dir / "optimized").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "sidecar_garbage", "missing_model"])
def test_corrupt_cache_entry_is_detected_and_rebuilt(cache_dir, tmp_path, caplog, damage):
    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    assert create_session_with_info(path, config).disk_cache == "stored"
    root = optimized_cache_dir()
    model_file = next(root.glob("*.onnx"))
    sidecar = model_file.with_suffix(".json")
    data = bytearray(model_file.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0xFF
        model_file.write_bytes(bytes(data))
    elif damage == "truncate":
        model_file.write_bytes(bytes(data[:100]))
    elif damage == "sidecar_garbage":
        sidecar.write_text("{not json")
    else:
        model_file.unlink()
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        info = create_session_with_info(path, config)
    assert info.disk_cache == "stored"
    meta = json.loads(sidecar.read_text())
    assert OptimizedModelCache(root).verified_file(model_file.stem, meta) == model_file
    assert create_session_with_info(path, config).disk_cache == "hit"


_RACE_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from dfl_perf.sessions import SessionConfig, create_session_with_info
    start = float(sys.argv[3])
    while time.time() < start:
        time.sleep(0.001)
    info = create_session_with_info(sys.argv[2], SessionConfig.tuned(threads=1, providers="cpu").replace(
        disk_cache=True))
    import numpy as np
    out = info.session.run(None, {"x": np.ones((1, 3, 32, 32), np.float32)})[0]
    print(info.disk_cache, float(out.sum()))
""")


@pytest.mark.timeout(120)
def test_two_processes_racing_on_the_disk_cache(cache_dir, tmp_path):
    path = save(conv_model(channels=16), tmp_path / "conv.onnx")
    script = tmp_path / "race.py"
    script.write_text(_RACE_SCRIPT)
    start = "%f" % (time.time() + 3.0)  # both are imported and waiting by then
    env = dict(os.environ, DFL_PERF_CACHE_DIR=str(cache_dir))
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO), str(path), start], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
             for _ in range(2)]
    results = [p.communicate(timeout=100) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    outcomes = [out.split()[0] for out, _ in results]
    print("race outcomes", outcomes)
    sums = {round(float(out.split()[1]), 3) for out, _ in results}
    assert len(sums) == 1
    assert outcomes.count("stored") == 1 and set(outcomes) <= {"stored", "hit", "busy"}, outcomes
    root = optimized_cache_dir()
    models = list(root.glob("*.onnx"))
    assert len(models) == 1 and not list(root.glob("*.tmp")) and not list(root.glob("*.lock"))
    meta = json.loads(models[0].with_suffix(".json").read_text())
    assert OptimizedModelCache(root).verified_file(models[0].stem, meta) == models[0]
    assert create_session_with_info(path, SessionConfig.tuned(threads=1, providers="cpu").replace(
        disk_cache=True)).disk_cache == "hit"


def test_fresh_process_loads_the_cached_file(cache_dir, tmp_path):
    path = save(conv_model(), tmp_path / "conv.onnx")
    script = tmp_path / "one.py"
    script.write_text(_RACE_SCRIPT)
    env = dict(os.environ, DFL_PERF_CACHE_DIR=str(cache_dir))
    outcomes = []
    for _ in range(2):
        out = subprocess.run([sys.executable, str(script), str(REPO), str(path), "0"], env=env,
                             capture_output=True, text=True, timeout=100)
        assert out.returncode == 0, out.stderr
        outcomes.append(out.stdout.split()[0])
    assert outcomes == ["stored", "hit"]


def _disk_cache_entry(tmp_path):
    """A conv model file, a disk-cache config, the cache, and the key its entry will have."""
    from dfl_perf.sessions.source import resolve_model

    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    cache = OptimizedModelCache()
    key = cache.key(cache.source_digest(resolve_model(path))[0], config, list(config.providers))
    return path, config, cache, key


_HOLD_LOCK = ("import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\nlock.acquire()\n"
              "print('held', flush=True)\ntime.sleep(600)\n")


@pytest.mark.timeout(120)
def test_a_busy_lock_builds_without_saving_and_a_dead_holders_lock_is_free(cache_dir, tmp_path):
    path, config, cache, key = _disk_cache_entry(tmp_path)
    with cache.writing(key) as writer:  # this process is writing the entry: another build does not wait
        assert writer is not None
        assert create_session_with_info(path, config).disk_cache == "busy"
    lock = cache.directory() / "locks" / (key + ".lock")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock)], stdout=subprocess.PIPE,
                              universal_newlines=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert create_session_with_info(path, config).disk_cache == "busy"
        assert not list(cache.root.glob("*.onnx"))
    finally:
        holder.kill()  # dies holding the lock, as a crashed writer would
        holder.wait(30)
        holder.stdout.close()
    assert create_session_with_info(path, config).disk_cache == "stored"


def test_uncacheable_entry_is_remembered(cache_dir, tmp_path):
    path, config, cache, key = _disk_cache_entry(tmp_path)
    with cache.writing(key) as writer:
        writer.mark_uncacheable("onnxruntime refused to save it")
    info = create_session_with_info(path, config)
    assert info.disk_cache == "uncacheable" and info.session is not None


def test_external_data_model_is_keyed_by_its_data(cache_dir, tmp_path):
    model = conv_model(channels=64)
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    x = np.ones((1, 3, 32, 32), np.float32)
    first = create_session_with_info(path, config)
    assert first.disk_cache == "stored"
    expected = first.session.run(None, {"x": x})[0]
    hit = create_session_with_info(path, config)
    assert hit.disk_cache == "hit"
    np.testing.assert_allclose(hit.session.run(None, {"x": x})[0], expected, rtol=1e-5)
    # new weights in the external file, same .onnx file: a different entry, not the stale graph
    onnx.save(conv_model(channels=64, seed=5), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    changed = create_session_with_info(path, config)
    assert changed.disk_cache == "stored"
    assert not np.allclose(changed.session.run(None, {"x": x})[0], expected)


def test_bytes_and_proto_models_use_the_disk_cache(cache_dir):
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    model = conv_model()
    assert create_session_with_info(model, config).disk_cache == "stored"
    assert create_session_with_info(model.SerializeToString(), config).disk_cache == "hit"


def test_model_errors_are_raised_through_the_disk_cache(cache_dir, tmp_path):
    path = save(tiny_model(opset=99), tmp_path / "op99.onnx")
    with pytest.raises(UnsupportedModelError):
        create_session(path, SessionConfig.tuned(threads=1).replace(disk_cache=True))
    assert not list(optimized_cache_dir().glob("*.onnx"))
    assert not list(optimized_cache_dir().glob("*.tmp"))


def test_entry_that_onnxruntime_cannot_load_is_rebuilt(cache_dir, tmp_path, caplog):
    import hashlib

    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    assert create_session_with_info(path, config).disk_cache == "stored"
    model_file = next(optimized_cache_dir().glob("*.onnx"))
    sidecar = model_file.with_suffix(".json")
    junk = b"not a model at all" * 10  # a matching sha256, yet onnxruntime refuses it
    model_file.write_bytes(junk)
    meta = json.loads(sidecar.read_text())
    meta.update(sha256=hashlib.sha256(junk).hexdigest(), size=len(junk))
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        assert create_session_with_info(path, config).disk_cache == "stored"
    assert any("does not load" in r.getMessage() for r in caplog.records)
    assert create_session_with_info(path, config).disk_cache == "hit"


def test_invalidate_removes_an_entry(cache_dir, tmp_path):
    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    create_session_with_info(path, config)
    cache = OptimizedModelCache()
    key = next(cache.root.glob("*.onnx")).stem
    cache.invalidate(key)
    assert not list(cache.root.glob(key + ".*"))
    assert create_session_with_info(path, config).disk_cache == "stored"


@pytest.fixture
def cuda_listed(monkeypatch):
    """onnxruntime claims a CUDA provider it cannot start. No CUDA exists on the test machine, so only
    the availability list is faked: the real onnxruntime then runs the session on the CPU."""
    real = ort.get_available_providers
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider"] + list(real()))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_provider_that_fails_to_start_falls_back(ok_path, cuda_listed, caplog):
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        info = create_session_with_info(ok_path, SessionConfig(providers=["cuda", "cpu"]))
    assert info.providers[0] == "CPUExecutionProvider"
    assert any("CUDAExecutionProvider failed to initialise" in r.getMessage() and str(ok_path) in r.getMessage()
               for r in caplog.records)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_provider_that_fails_to_start_raises_when_strict(ok_path, cuda_listed):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider failed to initialise") as info:
        create_session(ok_path, SessionConfig.dfl_default("cuda"))
    assert info.value.path == str(ok_path)


def test_unchanged_cache_file_is_not_rehashed_but_a_touched_one_is(cache_dir, tmp_path, monkeypatch):
    import dfl_perf.sessions.diskcache as diskcache

    path = save(conv_model(), tmp_path / "conv.onnx")
    config = SessionConfig.tuned(threads=1, providers="cpu").replace(disk_cache=True)
    assert create_session_with_info(path, config).disk_cache == "stored"
    hashed = []
    real = diskcache.sha256_file
    monkeypatch.setattr(diskcache, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert create_session_with_info(path, config).disk_cache == "hit"
    assert hashed == []
    model_file = next(optimized_cache_dir().glob("*.onnx"))
    os.utime(str(model_file), ns=(1, 1))  # same bytes, new stamp: checked in full, still valid
    assert create_session_with_info(path, config).disk_cache == "hit"
    assert hashed == [model_file]
    monkeypatch.setattr(diskcache, "ALWAYS_VERIFY_SHA256", True)
    create_session_with_info(path, config)
    assert len(hashed) == 2


def test_a_crashed_writers_temp_files_are_removed(cache_dir, tmp_path):
    path, config, cache, key = _disk_cache_entry(tmp_path)
    leftover = cache.directory() / (key + ".12345.onnx.tmp")
    leftover.write_bytes(b"half a model")
    assert create_session_with_info(path, config).disk_cache == "stored"
    assert not leftover.exists() and not list(cache.root.glob("*.tmp"))


def test_one_model_identity_for_files_bytes_and_content(tmp_path):
    from dfl_perf.sessions.source import model_identity, resolve_model

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(tiny_model(bias=1.0), str(a))
    onnx.save(tiny_model(bias=1.0), str(b))
    key_a, key_b = model_identity(resolve_model(a)), model_identity(resolve_model(b))
    assert key_a[0] == "file" and key_a != key_b  # two files, two keys
    assert model_identity(resolve_model(str(a))) == key_a
    by_content = model_identity(resolve_model(a), by_content=True)
    assert by_content == model_identity(resolve_model(b), by_content=True)
    assert by_content == model_identity(resolve_model(a.read_bytes()))  # the same model in memory
    onnx.save(tiny_model(bias=2.0), str(a))
    assert model_identity(resolve_model(a)) != key_a
    assert model_identity(resolve_model(a), by_content=True) != by_content

