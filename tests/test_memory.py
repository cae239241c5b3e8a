"""Tests for dfl_perf.memory: budgets over pools and caches, pressure warnings, cleanup, sampling."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Dict, List, Optional

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dfl_perf import memory
from dfl_perf.memory import MemoryManager, Trimmable
from dfl_perf.memory._budget import resolve_budget
from dfl_perf.memory._pressure import PressureEvent

GB = 10 ** 9


# ---------------------------------------------------------------- in-test fakes of the protocol


class FakePool:
    """Idle buffers freed least recently released first; leased ones are never freed."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.free: OrderedDict[int, int] = OrderedDict()
        self.leased: Dict[int, int] = {}
        self._next = 0

    def acquire(self, nbytes: int) -> int:
        self._next += 1
        self.leased[self._next] = nbytes
        return self._next

    def release(self, handle: int) -> None:
        self.free[handle] = self.leased.pop(handle)

    def bytes_held(self) -> int:
        return sum(self.free.values()) + sum(self.leased.values())

    def bytes_free(self) -> int:
        return sum(self.free.values())

    def trim(self, max_bytes_to_free: Optional[int] = None) -> int:
        want = self.bytes_free() if max_bytes_to_free is None else max_bytes_to_free
        freed = 0
        while freed < want and self.free:
            freed += self.free.popitem(last=False)[1]
        return freed


class FakeCache:
    """Sessions by name with a holder count; trim evicts least recently used unheld sessions."""

    def __init__(self, memory_kind: str = "host") -> None:
        self.memory_kind = memory_kind
        self.sessions: OrderedDict[str, List[int]] = OrderedDict()  # name -> [bytes, holders]

    def get(self, name: str, nbytes: int) -> str:
        entry = self.sessions.setdefault(name, [nbytes, 0])
        entry[1] += 1
        self.sessions.move_to_end(name)
        return name

    def put(self, name: str) -> None:
        self.sessions[name][1] -= 1

    def bytes_held(self) -> int:
        return sum(size for size, _ in self.sessions.values())

    def trim(self, max_bytes_to_free: Optional[int] = None) -> int:
        freed = 0
        for name in list(self.sessions):
            if max_bytes_to_free is not None and freed >= max_bytes_to_free:
                break
            size, holders = self.sessions[name]
            if holders == 0:
                del self.sessions[name]
                freed += size
        return freed

    def clear(self) -> None:
        self.sessions.clear()

    def idle_bytes(self) -> int:
        return sum(size for size, holders in self.sessions.values() if holders == 0)


def _real_buffer_pool():
    try:
        from dfl_perf.buffers import BufferPool
    except ImportError as exc:
        pytest.skip("dfl_perf.buffers.BufferPool not importable yet: %s" % exc)
    return BufferPool()


def _sample(used: int, total: int = 100) -> dict:
    return {"time": 0.0, "process_rss": None, "process_cpu_percent": None,
            "system_total": total, "system_available": total - used, "gpus": []}


# ---------------------------------------------------------------- registry and budgets


def test_fakes_and_real_pool_satisfy_the_protocol():
    assert isinstance(FakePool(), Trimmable) and isinstance(FakeCache(), Trimmable)
    assert not isinstance(object(), Trimmable)


def test_register_rejects_objects_without_the_protocol_and_duplicates():
    manager = MemoryManager()
    with pytest.raises(TypeError, match="no trim"):
        manager.register(type("NoTrim", (), {"bytes_held": lambda self: 0})())
    pool = FakePool()
    manager.register(pool, name="p")
    with pytest.raises(ValueError, match="already registered"):
        manager.register(pool)
    with pytest.raises(ValueError, match="named 'p'"):
        manager.register(FakePool(), name="p")
    with pytest.raises(ValueError, match="kind"):
        manager.register(FakePool(), kind="disk")
    manager.unregister("p")
    with pytest.raises(KeyError):
        manager.unregister(pool)


def test_kind_role_and_priority_come_from_the_object():
    manager = MemoryManager()
    manager.register(FakePool(), name="host_pool")
    manager.register(FakePool(device="cuda:1"), name="gpu_pool")
    manager.register(FakeCache(memory_kind="device"), name="gpu_cache")
    manager.register(FakeCache(), name="cache")
    got = {e["name"]: (e["kind"], e["role"], e["priority"]) for e in manager.summary()["entries"]}
    assert got == {"host_pool": ("host", "pool", 0), "gpu_pool": ("device", "pool", 0),
                   "gpu_cache": ("device", "cache", 100), "cache": ("host", "cache", 100)}


def test_budget_values_are_checked():
    assert resolve_budget(None, "host") is None
    assert resolve_budget(1234, "host") == 1234
    import psutil

    assert resolve_budget(0.25, "host") == int(0.25 * psutil.virtual_memory().total)
    for bad in (1.5, 0.0, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            resolve_budget(bad, "host")
    with pytest.raises(ValueError, match=">= 0"):
        resolve_budget(-1, "host")
    with pytest.raises(TypeError):
        resolve_budget("2GB", "host")
    with pytest.raises(ValueError, match="soft"):
        MemoryManager(soft=0.9, hard=0.8)


@pytest.mark.parametrize("text, budget", [
    ("512M", 512 * 10 ** 6), ("1.5GB", 15 * 10 ** 8), ("2GiB", 2 << 30), ("64mb", 64 * 10 ** 6),
    ("800000000", 800000000), ("25%", 0.25), ("0.25", 0.25), (4096, 4096), (0.5, 0.5),
])
def test_budgets_written_by_users(text, budget):
    from dfl_perf.memory._budget import parse_budget

    assert parse_budget(text) == budget and type(parse_budget(text)) is type(budget)


@pytest.mark.parametrize("text", ["lots", "-5M", "1.5X", "", "3.5", "M"])
def test_a_budget_that_is_not_one_says_how_to_write_it(text):
    from dfl_perf.memory._budget import parse_budget

    with pytest.raises(ValueError, match="memory budget"):
        parse_budget(text)


def test_device_fraction_without_gpu_is_a_clear_error(monkeypatch):
    from dfl_perf import devices

    empty = devices.GpuList()
    empty.reason = "NVML not available"
    monkeypatch.setattr(devices, "detect_gpus", lambda: empty)
    with pytest.raises(ValueError, match="no such GPU was found: NVML not available"):
        MemoryManager(device_budget=0.5)
    assert MemoryManager(device_budget=2 * GB).budget("device") == 2 * GB


def test_device_fraction_reads_the_gpu_size(monkeypatch):
    # NVML cannot exist on this machine: detect_gpus is replaced by a list with one fake GPU.
    from dfl_perf import devices

    gpus = devices.GpuList([devices.GpuInfo(0, "Fake GPU", 8 * GB, 6 * GB, 2 * GB, 0, None, None)])
    monkeypatch.setattr(devices, "detect_gpus", lambda: gpus)
    assert MemoryManager(device_budget=0.5).budget("device") == 4 * GB
    with pytest.raises(ValueError, match="GPU 1"):
        MemoryManager(device_budget=0.5, device_index=1)


def test_pools_are_trimmed_before_caches_and_held_sessions_stay():
    pool, cache = FakePool(), FakeCache()
    manager = MemoryManager(host_budget=1000)
    manager.register(cache, name="cache")
    manager.register(pool, name="pool")
    held = cache.get("in_use", 400)
    cache.put(cache.get("idle", 300))
    handle = pool.acquire(200)
    pool.release(handle)
    assert manager.bytes_held("host") == 900
    pool.release(pool.acquire(250))  # 1150 > 1000: the 200 idle pool bytes go first
    assert manager.enforce() == 200
    assert set(cache.sessions) == {"in_use", "idle"} and manager.bytes_held("host") == 950
    cache.get("big", 500)  # 1450: the pool's last 250 then the idle session
    assert manager.enforce() == 550
    assert set(cache.sessions) == {"in_use", "big"} and held in cache.sessions


def test_budget_is_enforced_on_register_and_set_budget():
    pool = FakePool()
    for _ in range(10):
        pool.release(pool.acquire(100))
    manager = MemoryManager(host_budget=600)
    manager.register(pool)
    assert pool.bytes_held() <= 600
    manager.set_budget("host", 200)
    assert pool.bytes_held() <= 200
    assert pool.bytes_held() == 200 and manager.summary()["budgets"]["host"]["headroom"] == 0


def test_device_budget_touches_only_device_entries():
    host, gpu = FakePool(), FakePool(device="cuda:0")
    for p in (host, gpu):
        p.release(p.acquire(500))
    manager = MemoryManager(device_budget=100)
    manager.register(host)
    manager.register(gpu)
    assert (host.bytes_held(), gpu.bytes_held()) == (500, 0)


_op = st.one_of(
    st.tuples(st.just("acquire"), st.integers(0, 1), st.integers(1, 400)),
    st.tuples(st.just("release"), st.integers(0, 1), st.integers(0, 50)),
    st.tuples(st.just("load"), st.sampled_from("abcdef"), st.integers(1, 600)),
    st.tuples(st.just("unload"), st.sampled_from("abcdef"), st.just(0)),
    st.tuples(st.just("enforce"), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(0, 3000), ops=st.lists(_op, max_size=60))
def test_budget_holds_under_random_sequences(budget, ops):
    pools = [FakePool(), _real_pool_or_fake()]
    cache = FakeCache()
    manager = MemoryManager(host_budget=budget)
    for p in pools:
        manager.register(p)
    manager.register(cache)
    leased: List[list] = [[], []]
    holders: Dict[str, int] = {}
    for op, which, value in ops:
        if op == "acquire":
            leased[which].append(_acquire(pools[which], value))
        elif op == "release" and leased[which]:
            pools[which].release(leased[which].pop(value % len(leased[which])))
        elif op == "load":
            cache.get(which, cache.sessions.get(which, [value])[0])
            holders[which] = holders.get(which, 0) + 1
        elif op == "unload" and holders.get(which):
            cache.put(which)
            holders[which] -= 1
        elif op == "enforce":
            manager.enforce()
            _assert_budget_or_nothing_idle(manager, pools, cache, budget)
        for name, count in holders.items():  # a held session is never evicted from under its holder
            assert count == 0 or name in cache.sessions
    manager.enforce()
    _assert_budget_or_nothing_idle(manager, pools, cache, budget)


def _real_pool_or_fake():
    try:
        from dfl_perf.buffers import BufferPool
    except ImportError:
        return FakePool()
    return BufferPool()


def _acquire(pool, nbytes: int):
    if isinstance(pool, FakePool):
        return pool.acquire(nbytes)
    return pool.acquire((nbytes,), "uint8")


def _assert_budget_or_nothing_idle(manager, pools, cache, budget):
    held = manager.bytes_held("host")
    assert held == sum(p.bytes_held() for p in pools) + cache.bytes_held()
    idle = sum(p.bytes_free() for p in pools) + cache.idle_bytes()
    assert held <= budget or idle == 0, "held %d > budget %d with %d idle bytes left" % (held, budget, idle)


def _tiny_model(floats: int) -> bytes:
    """y = x + w with ``floats`` weights: a real ONNX model whose size grows with ``floats``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(floats, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "tiny_%d" % floats,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [floats])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [floats])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def tiny_models() -> List[bytes]:
    pytest.importorskip("onnx")
    return [_tiny_model(n) for n in (1000, 4000, 16000, 30000)]


_cache_op = st.one_of(
    st.tuples(st.just("get"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("drop"), st.integers(0, 3), st.just(False)),
    st.tuples(st.just("buffer"), st.integers(1, 40000), st.booleans()),
    st.tuples(st.just("enforce"), st.just(0), st.just(False)),
)


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(0, 300000), ops=st.lists(_cache_op, max_size=25))
def test_budget_holds_over_a_real_model_cache_and_held_sessions_stay(tiny_models, budget, ops):
    from dfl_perf.sessions import ModelCache

    pool = _real_buffer_pool()
    with ModelCache(measure=False) as cache:
        manager = MemoryManager(host_budget=budget)
        manager.register(cache, name="models")
        manager.register(pool, name="buffers")
        assert [e["role"] for e in manager.summary()["entries"]] == ["pool", "cache"]
        held: Dict[int, list] = {i: [] for i in range(len(tiny_models))}
        for op, arg, keep in ops:
            if op == "get":
                session = cache.get(tiny_models[arg])
                if keep:
                    held[arg].append(session)
                del session
            elif op == "drop" and held[arg]:
                held[arg].pop()
            elif op == "buffer":
                buf = pool.acquire((arg,), "uint8")
                if not keep:
                    pool.release(buf)
            else:
                manager.enforce()
                held_bytes = manager.bytes_held("host")
                idle = pool.bytes_free() + _idle_cache_bytes(cache, tiny_models, held)
                assert held_bytes <= budget or idle == 0
            for index, refs in held.items():  # never evicted from under its holder
                assert not refs or tiny_models[index] in cache


def _idle_cache_bytes(cache, models, held) -> int:
    """Bytes of cached sessions nobody in the test holds (the cache counts 1.5x the model size)."""
    from dfl_perf.sessions.measure import estimate_bytes

    return sum(estimate_bytes(len(m)) for i, m in enumerate(models) if m in cache and not held[i])


@pytest.mark.timeout(60)
def test_concurrent_use_and_enforcement_keep_the_books(no_thread_leak):
    pool = _real_buffer_pool()
    manager = MemoryManager(host_budget=64 * 1024)
    manager.register(pool)
    errors: List[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for i in range(300):
                with pool.lease(((seed * 7 + i) % 13 + 1) * 1024, "uint8"):
                    if i % 10 == 0:
                        manager.enforce()
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    manager.enforce()
    assert pool.bytes_held() <= 64 * 1024
    assert pool.stats()["leased"] == 0


# ---------------------------------------------------------------- growth: the budget holds without enforce()

MiB = 1 << 20


@pytest.mark.timeout(120)
def test_the_budget_holds_as_a_real_pool_and_cache_grow_without_enforce(tmp_path):
    # Issue 21: a 64 MB host budget over a BufferPool and a ModelCache sat at 88 MB after three models
    # loaded, because the manager enforced only on register(), enforce() or a sampler tick.
    import numpy as np

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx_models import tiny_model

    from dfl_perf.buffers import BufferPool
    from dfl_perf.sessions import ModelCache, SessionConfig

    paths = []
    for i in range(3):  # 16 MiB files: the cache counts 24 MiB for each (measure=False: 1.5x the file)
        paths.append(tmp_path / ("m%d.onnx" % i))
        onnx.save(tiny_model(bias=float(i), pad=4 * MiB - 1000), str(paths[-1]))
    pool = BufferPool()
    with ModelCache(config=SessionConfig.tuned(threads=1, providers="cpu"), measure=False) as cache:
        manager = MemoryManager(host_budget=64 * MiB)
        manager.register(pool, name="buffers")
        manager.register(cache, name="models")
        pool.release(pool.acquire((16 * MiB,), "uint8"))  # 16 MiB of idle buffers
        held = cache.get(paths[0])  # a caller keeps using the first model
        peaks = []
        for path in paths[1:]:
            cache.get(path)
            peaks.append(manager.bytes_held("host"))
        assert max(peaks) <= 64 * MiB, "held %s MiB under a 64 MiB budget" % [p / MiB for p in peaks]
        assert pool.bytes_held() == 0  # idle buffers go first
        assert paths[0] in cache and held.run(None, {"x": np.zeros((1, 4), np.float32)})[0].shape == (1, 4)
        assert paths[1] not in cache and paths[2] in cache  # then the least recently used idle session
        assert manager.summary()["freed"]["budget"] >= 16 * MiB + 23 * MiB  # the pool, then one session
        manager.close()
        cache.get(paths[1])  # a closed manager no longer listens
        assert manager.bytes_held("host") > 64 * MiB


def test_a_pool_keeps_the_budget_as_it_allocates_and_stops_after_unregister():
    pool = _real_buffer_pool()
    manager = MemoryManager(host_budget=10_000)
    manager.register(pool)
    for size in range(1000, 9000, 1000):  # a new shape each time: every acquire allocates
        pool.release(pool.acquire((size,), "uint8"))
        assert pool.bytes_held() <= 10_000
    with pool.lease((9000,), "uint8"):
        assert pool.bytes_held() == 9000 + pool.bytes_free() and pool.bytes_free() <= 1000
    manager.unregister(pool)
    for size in (5000, 6000):
        pool.release(pool.acquire((size,), "uint8"))
    assert pool.bytes_held() > 10_000


def test_an_over_budget_that_nothing_idle_can_fix_is_said_once(caplog):
    pool = _real_buffer_pool()
    manager = MemoryManager(host_budget=1000)
    manager.register(pool)
    with caplog.at_level(logging.WARNING, logger="dfl_perf.memory"):
        leased = [pool.acquire((800,), "uint8") for _ in range(3)]
    messages = [r.getMessage() for r in caplog.records if "cannot hold" in r.getMessage()]
    assert len(messages) == 1 and "budget of 1.00 kB" in messages[0], messages
    for buf in leased:
        pool.release(buf)
    manager.enforce()
    assert pool.bytes_held() <= 1000


# ---------------------------------------------------------------- cleanup


@pytest.mark.parametrize("level", ["trim", "evict", "all"])
def test_cleanup_frees_what_it_reports(level):
    pool, cache = FakePool(), FakeCache()
    real = _real_pool_or_fake()
    manager = MemoryManager()
    for obj in (pool, real, cache):
        manager.register(obj)
    for _ in range(3):
        pool.release(pool.acquire(100))
    real.release(_acquire(real, 1000))
    cache.put(cache.get("idle", 300))
    cache.get("held", 500)
    before = manager.bytes_held()
    report = manager.cleanup(level)
    after = manager.bytes_held()
    assert report["held_before"] == before and report["held_after"] == after
    assert report["total_freed"] == before - after == sum(report["freed"].values())
    expected = {"trim": 1300, "evict": 1600, "all": 2100}[level]
    assert report["total_freed"] == expected
    assert manager.summary()["freed"]["cleanup"] == expected
    with pytest.raises(ValueError, match="cleanup level"):
        manager.cleanup("everything")


# ---------------------------------------------------------------- pressure


def _warnings(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dfl_perf.memory" and r.levelno == logging.WARNING]


def test_warning_fires_once_per_crossing_with_numbers(caplog):
    manager = MemoryManager(soft=0.8, hard=0.9, hysteresis=0.05)
    caplog.set_level(logging.WARNING, logger="dfl_perf.memory")
    for used in (50, 81, 85, 88, 80):  # one crossing of soft; 80 stays above 80 - 5
        manager.on_sample(_sample(used))
    assert len(_warnings(caplog)) == 1
    assert "system_memory" in _warnings(caplog)[0] and "81 B used of a 100 B limit (81%" in _warnings(caplog)[0]
    manager.on_sample(_sample(74))  # below soft - hysteresis: re-armed
    manager.on_sample(_sample(82))
    assert len(_warnings(caplog)) == 2
    manager.on_sample(_sample(95))  # a hard crossing is a new crossing
    assert len(_warnings(caplog)) == 3
    manager.on_sample(_sample(86))  # back under hard, but within the hysteresis: still armed off
    manager.on_sample(_sample(93))
    assert len(_warnings(caplog)) == 3
    assert manager.summary()["warning_count"] == 3
    assert [w["level"] for w in manager.summary()["warnings"]] == ["soft", "soft", "hard"]


def _reference_warning_count(readings: List[int], soft: int, hard: int, hyst: int) -> int:
    """Independent model: count the readings at which a threshold is crossed upward while armed."""
    count, soft_armed, hard_armed = 0, True, True
    for used in readings:
        if used < soft - hyst:
            soft_armed = True
        if used < hard - hyst:
            hard_armed = True
        if used >= hard and hard_armed:
            count += 1
            hard_armed = soft_armed = False
        elif used >= soft and soft_armed:
            count += 1
            soft_armed = False
    return count


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(readings=st.lists(st.integers(0, 100), max_size=40))
@example(readings=[95, 87, 95])
@example(readings=[75, 66, 75])
def test_warnings_match_an_independent_model(readings):
    manager = MemoryManager(soft=0.7, hard=0.9, hysteresis=0.05)
    for used in readings:
        manager.on_sample(_sample(used))
    assert manager.summary()["warning_count"] == _reference_warning_count(readings, 70, 90, 5)


def test_hard_pressure_frees_idle_memory_and_tells_callbacks():
    pool, cache = FakePool(), FakeCache()
    events: List[PressureEvent] = []
    manager = MemoryManager(soft=0.5, hard=0.9, hysteresis=0.0, on_pressure=events.append)
    manager.register(pool)
    manager.register(cache)
    for _ in range(4):
        pool.release(pool.acquire(10))
    cache.put(cache.get("idle", 30))
    cache.get("held", 30)
    manager.on_sample(_sample(60))
    assert [(e.level, e.freed) for e in events] == [("soft", 0)]
    assert pool.bytes_held() == 40  # soft only warns
    manager.on_sample(_sample(95))  # 45 over soft: 40 from the pool, then the idle session
    assert (events[-1].level, events[-1].previous, events[-1].freed) == ("hard", "soft", 70)
    assert set(cache.sessions) == {"held"}
    manager.on_sample(_sample(40))
    assert events[-1].level == "normal"
    assert manager.summary()["freed"]["pressure"] == 70


def test_gpu_pressure_frees_only_that_gpus_device_memory():
    host, gpu0, gpu1 = FakePool(), FakePool(device="cuda:0"), FakePool(device="cuda:1")
    for p in (host, gpu0, gpu1):
        p.release(p.acquire(GB))
    manager = MemoryManager(soft=0.5, hard=0.8, gpu_limit=0.5)
    for p in (host, gpu0, gpu1):
        manager.register(p)
    sample = _sample(0)
    sample["gpus"] = [{"index": 1, "name": "Fake", "memory_used": 5 * GB, "memory_total": 8 * GB,
                       "utilization": None, "temperature": None}]
    events = manager.on_sample(sample)  # 5 GB of a 4 GB limit: hard on gpu:1
    assert [(e.signal, e.level) for e in events] == [("gpu:1", "hard")]
    assert (host.bytes_held(), gpu0.bytes_held(), gpu1.bytes_held()) == (GB, GB, 0)


def test_rss_is_watched_against_its_limit_and_a_failing_callback_is_logged(caplog):
    def broken(event):
        raise RuntimeError("host callback bug")

    manager = MemoryManager(rss_limit=1000, soft=0.8, hard=0.95)
    manager.add_callback(broken)
    sample = _sample(0)
    sample["process_rss"] = 900
    caplog.set_level(logging.WARNING, logger="dfl_perf.memory")
    events = manager.on_sample(sample)
    assert [(e.signal, e.level) for e in events] == [("process_rss", "soft")]
    assert any("callback" in r.getMessage() and r.exc_info for r in caplog.records)
    manager.remove_callback(broken)
    assert manager.summary()["pressure"]["process_rss"] == {"level": "soft", "used": 900, "limit": 1000}


def test_missing_readings_are_ignored():
    manager = MemoryManager(rss_limit=1000)
    assert manager.on_sample({"time": 0.0, "process_rss": None, "system_total": None,
                              "system_available": None, "gpus": [{"index": 0, "memory_used": None,
                                                                  "memory_total": None}]}) == []


# ---------------------------------------------------------------- sampling thread


@pytest.mark.timeout(30)
def test_start_sampling_reacts_and_close_stops_the_thread(no_thread_leak):
    with MemoryManager(rss_limit=1) as manager:  # any RSS is far past a 1-byte limit
        manager.register(FakePool())
        manager.start_sampling(0.01)
        with pytest.raises(RuntimeError, match="already"):
            manager.start_sampling(0.01)
        deadline = threading.Event()
        for _ in range(500):
            if "process_rss" in manager.summary()["pressure"]:
                break
            deadline.wait(0.01)
        summary = manager.summary()
    assert summary["pressure"]["process_rss"]["level"] == "hard"
    assert summary["warning_count"] >= 1
    with pytest.raises(RuntimeError, match="closed"):
        manager.start_sampling(0.01)


def test_an_external_sampler_is_listened_to_but_not_closed():
    class Sampler:  # the SystemSampler listener contract, without a thread
        def __init__(self):
            self.listeners = []
            self.closed = False

        def add_listener(self, fn):
            self.listeners.append(fn)

        def remove_listener(self, fn):
            self.listeners.remove(fn)

        def close(self):
            self.closed = True

    sampler = Sampler()
    manager = MemoryManager(sampler=sampler, soft=0.5)
    assert len(sampler.listeners) == 1
    for fn in sampler.listeners:
        fn(_sample(60))
    assert manager.summary()["pressure"]["system_memory"]["level"] == "soft"
    manager.close()
    assert sampler.listeners == [] and not sampler.closed


def test_module_import_is_cheap():
    assert memory.__name__ == "dfl_perf.memory"
    import subprocess
    import sys

    code = "import sys, dfl_perf.memory; print(sorted(m for m in ('numpy', 'psutil', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == "[]"
