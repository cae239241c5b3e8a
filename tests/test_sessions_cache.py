"""dfl_perf.sessions.ModelCache: LRU (checked against a reference model), single flight, holds, trim."""

from __future__ import annotations

import gc
import sys
import threading
import time
import types
from collections import OrderedDict
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402
from onnx_models import tiny_model  # noqa: E402

import dfl_perf.sessions.cache as cache_module  # noqa: E402
from dfl_perf.sessions import ModelCache, SessionConfig  # noqa: E402
from dfl_perf.sessions.errors import InvalidModelError, ModelNotFoundError  # noqa: E402
from dfl_perf.sessions.measure import FILE_SIZE_FACTOR, clamp_measured, measured_create  # noqa: E402

X = np.array([[-1, 0, 1, 2]], np.float32)


def write_models(folder: Path, count: int):
    paths = []
    for i in range(count):
        path = folder / ("m%d.onnx" % i)
        onnx.save(tiny_model(bias=float(i), pad=1000 * (i + 1)), str(path))
        paths.append(path)
    return paths


CONFIG = SessionConfig.tuned(threads=1, providers="cpu")


@pytest.fixture
def models(tmp_path):
    return write_models(tmp_path, 4)


@pytest.fixture
def slow_loads(monkeypatch):
    """Make every load take 0.3 s (and count them) so that concurrent callers surely overlap.

    The real create function still runs; only a delay is added around it.
    """
    calls = []
    real = cache_module.create_session_with_info

    def slow(source, config):
        calls.append(source.label)
        time.sleep(0.3)
        return real(source, config)

    monkeypatch.setattr(cache_module, "create_session_with_info", slow)
    return calls


def test_hit_miss_and_config_in_the_key(models):
    with ModelCache(config=CONFIG) as cache:
        a = cache.get(models[0])
        assert cache.get(str(models[0])) is a
        other = cache.get(models[0], CONFIG.replace(intra_op_threads=2))
        assert other is not a
        np.testing.assert_allclose(a.run(None, {"x": X})[0], [[0, 0, 1, 2]])
        stats = cache.stats()
        assert (stats["hits"], stats["misses"], stats["loads"], stats["models"]) == (1, 2, 2, 2)
        assert stats["load_seconds"] > 0 and stats["bytes"] == cache.bytes_held() >= 2 * models[0].stat().st_size
        assert models[0] in cache and models[1] not in cache


def test_changed_file_is_a_new_key_and_hash_keys_share_content(tmp_path, models):
    with ModelCache(config=CONFIG, hash_keys=True) as cache:
        copy = tmp_path / "copy.onnx"
        copy.write_bytes(models[0].read_bytes())
        assert cache.get(copy) is cache.get(models[0])
    with ModelCache(config=CONFIG) as cache:
        first = cache.get(models[0])
        onnx.save(tiny_model(bias=7.0, pad=5), str(models[0]))
        second = cache.get(models[0])
        assert second is not first
        assert second.run(None, {"x": X})[0][0, 0] == 7.0


def test_bytes_and_proto_are_keyed_by_content():
    with ModelCache(config=CONFIG) as cache:
        model = tiny_model(bias=3.0)
        assert cache.get(model) is cache.get(model.SerializeToString())
        assert cache.stats()["loads"] == 1


def _at_once(n, call):
    """Run ``call`` in ``n`` threads released together; (results, exceptions)."""
    barrier = threading.Barrier(n)
    got, errors = [], []

    def ask():
        barrier.wait()
        try:
            got.append(call())
        except Exception as exc:  # collected for the caller to assert on
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, errors


@pytest.mark.timeout(30)
def test_eight_threads_one_load(models, slow_loads, no_thread_leak):
    with ModelCache(config=CONFIG) as cache:
        got, errors = _at_once(8, lambda: cache.get(models[0]))
        assert not errors and len(got) == 8 and all(s is got[0] for s in got)
        assert len(slow_loads) == 1
        stats = cache.stats()
        assert (stats["loads"], stats["misses"], stats["waits"]) == (1, 1, 7)


@pytest.mark.timeout(30)
def test_failing_load_raises_in_every_waiter_and_is_not_cached(tmp_path, slow_loads, no_thread_leak):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"definitely not a protobuf model" * 4)
    with ModelCache(config=CONFIG) as cache:
        _, errors = _at_once(8, lambda: cache.get(bad))
        assert len(errors) == 8 and all(isinstance(e, InvalidModelError) for e in errors)
        assert all(e.path == str(bad) for e in errors)
        assert len(slow_loads) == 1 and len(cache) == 0
        assert cache.stats()["load_failures"] == 1
        with pytest.raises(InvalidModelError):  # not cached: tried again
            cache.get(bad)
        assert len(slow_loads) == 2


def test_missing_file_raises_typed_error(tmp_path):
    with ModelCache(config=CONFIG) as cache:
        with pytest.raises(ModelNotFoundError):
            cache.get(tmp_path / "nope.onnx")
        assert cache.stats()["loads"] == 0


def test_evicted_session_keeps_working_for_its_holder(models):
    with ModelCache(max_models=1, config=CONFIG) as cache:
        held = cache.get(models[0])
        cache.get(models[1])
        assert models[0] not in cache and cache.stats()["evictions"] == 1
        np.testing.assert_allclose(held.run(None, {"x": X})[0], [[0, 0, 1, 2]])
        cache.clear()
        np.testing.assert_allclose(held.run(None, {"x": X})[0], [[0, 0, 1, 2]])


def test_max_bytes_evicts_lru_but_keeps_the_newest(models):
    sizes = [int(p.stat().st_size * FILE_SIZE_FACTOR) for p in models]
    with ModelCache(max_bytes=sizes[0] + sizes[1], config=CONFIG, measure=False) as cache:
        cache.get(models[0])
        cache.get(models[1])
        assert len(cache) == 2
        cache.get(models[0])  # now models[1] is least recently used
        cache.get(models[2])
        # models[2] is bigger than models[1] (more padding): models[0] has to go too
        assert list(cache._entries) == [(("file",) + _file_stamp(models[2]), CONFIG)]
        assert cache.bytes_held() == sizes[2] <= sizes[0] + sizes[1]
    with ModelCache(max_bytes=1, config=CONFIG, measure=False) as cache:
        cache.get(models[3])  # bigger than the budget alone: kept, it is the one being used
        assert len(cache) == 1


def test_trim_skips_held_and_leased_sessions(models):
    with ModelCache(config=CONFIG, measure=False) as cache:
        for p in models[:3]:
            cache.get(p)
        held = cache.get(models[1])
        with cache.lease(models[2]) as leased:
            freed = cache.trim()
            assert freed == int(models[0].stat().st_size * FILE_SIZE_FACTOR)
            assert models[0] not in cache and models[1] in cache and models[2] in cache
            assert leased.run(None, {"x": X})[0][0, 3] == 4.0
        del leased
        assert cache.trim() == int(models[2].stat().st_size * FILE_SIZE_FACTOR)
        assert models[1] in cache
        del held
        gc.collect()
        assert cache.trim(max_bytes_to_free=1) == int(models[1].stat().st_size * FILE_SIZE_FACTOR)
        assert len(cache) == 0 and cache.bytes_held() == 0
        assert cache.stats()["trimmed"] == 3


def test_hash_keys_see_external_data_files(tmp_path):
    # Two copies of a model whose .onnx files are byte for byte the same while their external data
    # (weights.bin) differ: content keys must tell them apart (the .onnx file's hash alone does not).
    paths = []
    for bias in (1.0, 2.0):
        folder = tmp_path / ("m%d" % bias)
        folder.mkdir()
        onnx.save(tiny_model(bias=bias), str(folder / "m.onnx"), save_as_external_data=True,
                  all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        paths.append(folder / "m.onnx")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with ModelCache(config=CONFIG, measure=False, hash_keys=True) as cache:
        outs = [cache.get(p).run(None, {"x": X})[0][0, 0] for p in paths]
        assert outs == [1.0, 2.0] and len(cache) == 2


def test_held_is_decided_without_reference_counts(models, monkeypatch):
    # Reference counts differ between Python versions and do not exist on PyPy: a session that a
    # caller still references must count as held without them, and a trimmed one must be freed.
    import weakref

    monkeypatch.delattr(sys, "getrefcount")
    with ModelCache(config=CONFIG, measure=False) as cache:
        holder = {"session": cache.get(models[0])}
        dropped = weakref.ref(cache.get(models[1]))
        assert cache.trim() == int(models[1].stat().st_size * FILE_SIZE_FACTOR)
        assert dropped() is None  # freed at once, not just forgotten
        assert models[0] in cache and cache.get(models[0]) is holder["session"]
        del holder
        assert cache.trim() == int(models[0].stat().st_size * FILE_SIZE_FACTOR)
        assert len(cache) == 0


def test_memory_kind_and_bytes_by_kind(models):
    with ModelCache(config=CONFIG) as cache:
        assert cache.memory_kind == "host"
        cache.get(models[0])
        assert cache.bytes_held("host") == cache.bytes_held() >= models[0].stat().st_size
        assert cache.bytes_held("device") == 0
        stats = cache.stats()
        assert stats["bytes_host"] == stats["bytes"] and stats["bytes_device"] == 0


@pytest.mark.timeout(30)
def test_preload_in_background_returns_futures(models, tmp_path, no_thread_leak):
    bad = tmp_path / "missing.onnx"
    with ModelCache(config=CONFIG) as cache:
        futures = cache.preload(models[:2] + [bad])
        assert all(isinstance(f, Future) for f in futures)
        first = futures[0].result(timeout=20)
        assert futures[1].result(timeout=20) is cache.get(models[1])
        assert isinstance(futures[2].exception(timeout=20), ModelNotFoundError)
        assert cache.get(models[0]) is first
        assert any(t.name.startswith("dfl_perf-preload") for t in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        cache.get(models[0])


def test_preload_in_foreground(models):
    with ModelCache(config=CONFIG) as cache:
        futures = cache.preload(models[:2], background=False)
        assert all(f.done() for f in futures) and len(cache) == 2
        assert not any(t.name.startswith("dfl_perf-preload") for t in threading.enumerate())


def test_warmup_uses_the_configs_free_dimensions(models):
    config = CONFIG.replace(free_dimensions={"N": 3})
    with ModelCache(config=config) as cache:
        session = cache.get(models[0])
        assert len(cache.warmup(session, runs=2)) == 2
    from dfl_perf.sessions.warmup import zero_inputs

    plain = ModelCache(config=CONFIG)
    assert zero_inputs(plain.get(models[0]), {"N": 3})["x"].shape == (3, 4)
    assert len(plain.warmup(plain.get(models[0]))) == 1
    plain.close()


def test_bad_limits_are_rejected():
    with pytest.raises(ValueError, match="max_models"):
        ModelCache(max_models=0)
    with pytest.raises(ValueError, match="max_bytes"):
        ModelCache(max_bytes=-1)


# ------------------------------------------------------------------------------- byte measurement

@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10 ** 10), delta=st.integers(-(10 ** 9), 10 ** 13))
def test_measured_bytes_are_kept_within_sane_bounds(size, delta):
    got = clamp_measured(delta, size)
    cap = clamp_measured(10 ** 15, size)
    assert size <= got <= cap  # a session holds at least its weights, and a noisy delta is capped
    assert cap >= 3 * size and cap < 10 ** 15
    if size <= delta <= 3 * size:
        assert got == delta  # a plausible measurement is kept as it is
    assert size <= clamp_measured(None, size) <= cap  # unmeasured: an estimate, at least the file size
    assert clamp_measured(None, 10 ** 6) > 10 ** 6  # (onnxruntime keeps more than the weights)


def test_measured_create_sees_what_the_call_allocates():
    # 64 MiB, every page written. RSS is the whole process's: a thread left by an earlier test that frees
    # memory meanwhile lowers one delta, so the best of three tries must see the allocation
    tries = [measured_create(lambda: b"\x01" * (64 << 20), device_id=None) for _ in range(3)]
    hosts = [host for _, host, _ in tries]
    assert None not in hosts and max(hosts) >= 48 << 20, hosts  # psutil is a dependency: RSS is always readable
    assert all(device is None for _, _, device in tries)  # no device asked for
    _, host, device = measured_create(lambda: b"\x01" * (64 << 20), device_id=None, measure=False)
    assert host is None and device is None


def test_device_bytes_come_from_nvml(monkeypatch):
    # No NVIDIA GPU or driver exists on the test machine: a stand-in pynvml module reports this
    # process using 100 MiB more GPU memory after creation than before.
    import os

    used = [1 << 20]
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=used[0])],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    def create():
        used[0] += 100 << 20
        return "session"

    result, _, device = measured_create(create, device_id=0)
    assert result == "session" and device == 100 << 20


# ---------------------------------------------------------------------- LRU against a reference

class _Reference:
    """The LRU the cache must behave like: an OrderedDict of key -> bytes, oldest first."""

    def __init__(self, max_models, max_bytes):
        self.max_models, self.max_bytes = max_models, max_bytes
        self.entries = OrderedDict()
        self.loads = self.hits = self.evictions = 0

    def get(self, key, size):
        if key in self.entries:
            self.entries.move_to_end(key)
            self.hits += 1
            return
        self.loads += 1
        self.entries[key] = size
        while True:
            over = ((self.max_models is not None and len(self.entries) > self.max_models)
                    or (self.max_bytes is not None and sum(self.entries.values()) > self.max_bytes))
            victims = [k for k in self.entries if k != key]
            if not over or not victims:
                break
            del self.entries[victims[0]]
            self.evictions += 1

    def evict(self, key):
        if key in self.entries:
            del self.entries[key]
            self.evictions += 1
            return True
        return False

    def trim(self, limit):
        freed = 0
        for key in list(self.entries):
            if limit is not None and freed >= limit:
                break
            freed += self.entries.pop(key)
            self.evictions += 1
        return freed


class LruMachine(RuleBasedStateMachine):
    paths = []  # set by the test: the model files
    configs = [CONFIG, CONFIG.replace(intra_op_threads=2)]

    @initialize(max_models=st.one_of(st.none(), st.integers(1, 4)),
                budget=st.one_of(st.none(), st.integers(0, 40000)))
    def start(self, max_models, budget):
        self.cache = ModelCache(max_models=max_models, max_bytes=budget, config=CONFIG, measure=False)
        self.ref = _Reference(max_models, budget)

    def _key(self, model, config):
        return (("file",) + _file_stamp(self.paths[model]), config)

    def _size(self, model):
        return int(self.paths[model].stat().st_size * FILE_SIZE_FACTOR)

    @rule(model=st.integers(0, 3), config=st.integers(0, 1))
    def get(self, model, config):
        session = self.cache.get(self.paths[model], self.configs[config])
        assert session.run(None, {"x": X})[0][0, 0] == float(model)
        self.ref.get(self._key(model, self.configs[config]), self._size(model))

    @rule(model=st.integers(0, 3), config=st.integers(0, 1))
    def evict(self, model, config):
        got = self.cache.evict(self.paths[model], self.configs[config])
        assert got == self.ref.evict(self._key(model, self.configs[config]))

    @rule(limit=st.one_of(st.none(), st.integers(0, 30000)))
    def trim(self, limit):
        assert self.cache.trim(limit) == self.ref.trim(limit)

    @rule()
    def clear(self):
        self.cache.clear()
        self.ref.evictions += len(self.ref.entries)
        self.ref.entries.clear()

    @invariant()
    def same_contents(self):
        if not hasattr(self, "cache"):
            return
        stats = self.cache.stats()
        assert stats["models"] == len(self.ref.entries)
        assert stats["bytes"] == sum(self.ref.entries.values())
        assert (stats["loads"], stats["hits"], stats["evictions"]) == (
            self.ref.loads, self.ref.hits, self.ref.evictions)
        assert list(self.cache._entries) == list(self.ref.entries)  # same keys, same LRU order

    def teardown(self):
        if hasattr(self, "cache"):
            self.cache.close()


def _file_stamp(path):
    import os

    from dfl_perf.files import file_stamp

    real = os.path.realpath(str(path))
    return (real,) + tuple(file_stamp(os.stat(real)))


@pytest.mark.timeout(120)
def test_lru_matches_the_reference_model(tmp_path):
    LruMachine.paths = write_models(tmp_path, 4)
    test = LruMachine.TestCase
    test.settings = settings(max_examples=30, stateful_step_count=20, deadline=None,
                             suppress_health_check=list(HealthCheck))
    test().runTest()


def test_same_size_replacement_keeping_the_mtime_is_seen(tmp_path):
    import os

    path = tmp_path / "m.onnx"
    onnx.save(tiny_model(bias=1.0), str(path))
    before = os.stat(str(path))
    for hash_keys in (False, True):
        with ModelCache(config=CONFIG, measure=False, hash_keys=hash_keys) as cache:
            onnx.save(tiny_model(bias=1.0), str(path))
            os.utime(str(path), ns=(before.st_atime_ns, before.st_mtime_ns))
            assert cache.get(path).run(None, {"x": X})[0][0, 0] == 1.0
            replacement = tmp_path / "new.onnx"
            onnx.save(tiny_model(bias=2.0), str(replacement))  # same size, other weights
            os.utime(str(replacement), ns=(before.st_atime_ns, before.st_mtime_ns))
            os.replace(str(replacement), str(path))
            after = os.stat(str(path))
            assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
            assert cache.get(path).run(None, {"x": X})[0][0, 0] == 2.0
