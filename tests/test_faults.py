"""Fault injection across the modules (issue 10, section 2), mostly on the real reference pipeline.

Bad frames, a failing or short source, a stalled stage, a slow or failing sink, KeyboardInterrupt,
``close()`` from another thread, model files changed under a ModelCache, a broken disk cache.
Every case: a clear error or a counted drop, no hang (timeouts), no thread left, exact accounting
(submitted = done + dropped + late + error), and no pooled frame buffer left leased.

Covered elsewhere (not repeated here): the processor alone (stage errors, consumer that stops
reading, close under load, Ctrl-C) in test_processor.py; corrupt disk-cache entries, two processes
racing on one entry and stale locks in test_sessions.py; single-flight loads and failing loads in
test_sessions_cache.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import threading
import time
from collections import Counter

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from dfl_perf.buffers import BufferPool, DFMRunner  # noqa: E402
from dfl_perf.facepipe.workload import (  # noqa: E402
    BadFrameError,
    BaselineRunner,
    OptimizedRunner,
    Workload,
    standin_model_path,
)
from dfl_perf.monitor import PerformanceMonitor  # noqa: E402
from dfl_perf.processor import FrameStatus, Pipeline, ProcessorClosed, Stage  # noqa: E402
from dfl_perf.sessions import ModelCache, SessionConfig, create_session_with_info  # noqa: E402
from dfl_perf.sessions.errors import InvalidModelError, ModelNotFoundError  # noqa: E402

FAST = Workload(dfm_cost="5ms")
CPU1 = SessionConfig.tuned(threads=1, providers="cpu")


# ----------------------------------------------------------------------------------- helpers

class Counts:
    """A duck-typed monitor that counts outcomes as the pipeline reports them to its reader."""

    def __init__(self):
        self.lock = threading.Lock()
        self.n = Counter()

    def _add(self, key, n=1):
        with self.lock:
            self.n[key] += n

    def record(self, stage, seconds):
        pass

    def frame_done(self, latency):
        self._add("done")

    def frame_dropped(self, n=1):
        self._add("dropped", n)

    def frame_late(self, n=1):
        self._add("late", n)

    def frame_failed(self, n=1):
        self._add("error", n)


def assert_accounted(acc, submitted=None):
    assert acc["in_flight"] == 0, acc
    assert acc["submitted"] == acc["done"] + acc["dropped"] + acc["late"] + acc["error"], acc
    if submitted is not None:
        assert acc["submitted"] == submitted, acc


def frame_buffers_leased(runner):
    """Pooled buffers of frames (crops, faces, masks, outputs) still leased. The per-thread IOBinding
    buffers (float32 detector and DFM tensors) stay leased by design; frame buffers are uint8, or
    float32 (n, res, res) masks. Reads the pool's private books: BufferPool has no per-shape stats."""
    res = runner.resolution
    return [(s.key[0], str(s.key[1])) for s in list(runner.pool._leased.values())
            if s.key[1] == np.uint8 or (len(s.key[0]) == 3 and s.key[0][1:] == (res, res))]


def paced(frames, count, period, stamps=None):
    """``count`` frames, one per ``period``; ``stamps`` (a list) gets each frame's real hand-over time."""
    for i in range(count):
        time.sleep(period)
        if stamps is not None:
            stamps.append(time.monotonic())
        yield frames[i % len(frames)]


def endless(frames, period=0.01):
    for i in itertools.count():
        time.sleep(period)
        yield frames[i % len(frames)]


def add_model(bias):
    """y = x + bias (64 floats): models of different biases have files of the same size."""
    graph = helper.make_graph([helper.make_node("Add", ["x", "b"], ["y"])], "add",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              initializer=[numpy_helper.from_array(np.full((1, 64), bias, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def save_replacing(model, path, keep_stamp_of=None):
    """Write ``model`` to ``path`` through a temp file and a rename (a new inode), optionally
    keeping the old file's mtime, as ``cp -p``, ``rsync -t`` or an unzip would."""
    tmp = path.with_name(path.name + ".new")
    onnx.save(model, str(tmp))
    if keep_stamp_of is not None:
        os.utime(str(tmp), ns=(keep_stamp_of.st_atime_ns, keep_stamp_of.st_mtime_ns))
    os.replace(str(tmp), str(path))


def bias_of(session):
    return float(session.run(None, {"x": np.zeros((1, 64), np.float32)})[0][0, 0])


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One user cache for the module (the DFM stand-in is built once)."""
    patch = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("faults_cache")
    patch.setenv("DFL_PERF_CACHE_DIR", str(path))
    yield path
    patch.undo()


@pytest.fixture(scope="module")
def frames(module_cache):
    from dfl_perf.facepipe.clip import make_clip

    return make_clip(size=(320, 240), frames=6, seed=3).to_list()


@pytest.fixture(scope="module")
def standin(module_cache):
    return standin_model_path(FAST.dfm_resolution, FAST.dfm_cost)


@pytest.fixture(scope="module")
def shared_runner(frames):
    with OptimizedRunner(FAST, swap_workers=2) as runner:
        runner.run(frames[:3])  # sessions, bindings and pools warm
        yield runner


@pytest.fixture
def runner(shared_runner):
    """The module's runner; the test may change live/deadline/max_queue/monitor and patch stages."""
    r = shared_runner
    saved = (r.live, r.deadline, r.max_queue, r.monitor)
    yield r
    r.live, r.deadline, r.max_queue, r.monitor = saved
    for name in ("detect", "swap", "merge"):
        r.__dict__.pop(name, None)


def bad_frames(good):
    return {
        "grey": (np.zeros(good.shape[:2], np.uint8), r"got \(240, 320\) uint8 \(grey or BGRA"),
        "bgra": (np.zeros(good.shape[:2] + (4,), np.uint8), r"got \(240, 320, 4\) uint8"),
        "float32": (good.astype(np.float32), r"got \(240, 320, 3\) float32 \(scale it"),
        "uint16": (good.astype(np.uint16) * 256, r"got \(240, 320, 3\) uint16"),
        "nan": (np.full(good.shape, np.nan, np.float32), r"got \(240, 320, 3\) float32"),
        "none": (None, r"numpy array, got None"),
        "empty": (np.zeros((0, 0, 3), np.uint8), r"got \(0, 0, 3\) uint8 \(an empty image"),
        "text": ("frame.png", r"numpy array, got str"),
        "list": (good.tolist(), r"numpy array, got list"),
    }


# ------------------------------------------------------------------------------- bad frames

@pytest.mark.timeout(60)
def test_bad_frames_live_are_errors_named_and_the_others_go_on(runner, frames, no_thread_leak, caplog):
    bad = bad_frames(frames[0])
    feed, expect_bad = [], {}
    for frame, pattern in bad.values():
        feed.append(frames[len(feed) % len(frames)])
        expect_bad[len(feed)] = pattern
        feed.append(frame)
    feed.append(frames[1])
    runner.live, runner.max_queue = True, 64  # room for every frame: none is dropped
    runner.monitor = PerformanceMonitor()
    seen = []
    with caplog.at_level(logging.WARNING, logger="dfl_perf.facepipe"):
        stats = runner.run(feed, sink=lambda i, f: seen.append(i))
    acc = stats.accounting
    assert_accounted(acc, len(feed))
    assert (acc["error"], acc["done"]) == (len(bad), len(feed) - len(bad))
    summary = runner.monitor.summary()
    assert (summary["failed"], summary["frames"]) == (len(bad), len(feed) - len(bad))
    assert seen == [i for i in range(len(feed)) if i not in expect_bad]
    assert len(stats.errors) == len(bad)
    for message, (index, pattern) in zip(stats.errors, sorted(expect_bad.items())):
        assert message.startswith("frame %d failed in stage detect: BadFrameError: frame %d: " % (index, index))
        assert re.search(pattern, message), message
    assert sum("failed in stage detect" in r.getMessage() for r in caplog.records) == 1  # once per run
    assert frame_buffers_leased(runner) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["grey", "bgra", "float32", "uint16", "nan", "none", "empty", "text", "list"])
def test_bad_frame_in_a_file_is_a_clear_error_at_once(runner, frames, kind, no_thread_leak):
    frame, pattern = bad_frames(frames[0])[kind]
    seen = []
    feed = [frames[0], frame] + frames * 10  # enough behind it to fill every queue
    t0 = time.monotonic()
    with pytest.raises(BadFrameError, match=r"^frame 1: expected .*" + pattern):
        runner.run(feed, sink=lambda i, f: seen.append(i))
    assert time.monotonic() - t0 < 10
    assert seen == [0]  # in order: what came before the bad frame was written
    assert frame_buffers_leased(runner) == []


@pytest.mark.timeout(60)
def test_baseline_names_a_bad_frame_too(frames):
    runner = BaselineRunner(FAST)
    for frame, pattern in bad_frames(frames[0]).values():
        with pytest.raises(BadFrameError, match=r"^frame 1: .*" + pattern):
            runner.run([frames[0], frame])


@pytest.mark.timeout(60)
def test_odd_but_valid_frames_are_processed(runner, frames):
    fortran = np.asfortranarray(frames[0])
    read_only = frames[1].copy()
    read_only.flags.writeable = False
    odd = [np.zeros((1, 1, 3), np.uint8), np.full((5, 17, 3), 200, np.uint8), fortran, frames[2][::2, ::2],
           read_only, np.zeros((900, 20, 3), np.uint8)]
    shapes = {}
    stats = runner.run(odd, sink=lambda i, f: shapes.__setitem__(i, f.shape))
    assert shapes == {i: f.shape for i, f in enumerate(odd)}
    assert_accounted(stats.accounting, len(odd))
    assert stats.accounting["done"] == len(odd)


# ---------------------------------------------------------------------------------- sources

class SourceBroke(Exception):
    pass


def breaking_source(frames, after, period=0.0):
    for i in range(after):
        if period:
            time.sleep(period)
        yield frames[i % len(frames)]
    raise SourceBroke("camera unplugged after %d frames" % after)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("live", [False, True])
def test_source_that_raises_midstream_surfaces_its_error(runner, frames, live, no_thread_leak):
    runner.live, runner.monitor = live, Counts()
    seen = []
    with pytest.raises(SourceBroke, match="after 7 frames"):
        runner.run(breaking_source(frames, 7, period=0.03 if live else 0.0), sink=lambda i, f: seen.append(i))
    counts = runner.monitor.n
    assert sum(counts.values()) == 7, counts  # every frame it gave was decided and reported
    if not live:
        assert seen == list(range(7))
    assert frame_buffers_leased(runner) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("count", [0, 1])
def test_source_that_ends_early_returns_cleanly(runner, frames, live, count, no_thread_leak):
    runner.live = live
    stats = runner.run(iter(frames[:count]))
    assert_accounted(stats.accounting, count)
    assert stats.frames == stats.accounting["done"] == count


# ---------------------------------------------------------------------------- stalled stage

@pytest.mark.timeout(60)
def test_a_stage_stalling_for_seconds_live_drops_and_recovers(runner, frames, no_thread_leak):
    stall, stalled_index = 1.5, 5
    swap = runner.swap

    def stalling_swap(item):
        if item.index == stalled_index:
            time.sleep(stall)
        return swap(item)

    runner.swap = stalling_swap
    runner.live, runner.deadline = True, 0.3
    delivered, captured = [], []
    t0 = time.monotonic()
    stats = runner.run(paced(frames, 90, 1 / 30.0, captured),
                       sink=lambda i, f: delivered.append((i, time.monotonic())))
    assert time.monotonic() - t0 < 90 / 30.0 + stall + 5
    acc = stats.accounting
    assert_accounted(acc, 90)
    assert acc["dropped"] + acc["late"] > 0, acc  # frames behind the stall were not all kept
    after = [i for i, _ in delivered if i > stalled_index]
    assert after and max(after) >= 80, delivered  # it recovered: the last frames came through
    # the frames that finished behind the stalled one are dropped but for the newest output
    # queue's worth: without that, some 40 frames up to a stall old would come out in a burst.
    # Ages from each frame's real hand-over time (a busy machine's source drifts from the schedule).
    ages = [t - captured[i] for i, t in delivered if i > stalled_index]
    assert max(ages) < stall, ages
    assert frame_buffers_leased(runner) == []


@pytest.mark.timeout(60)
def test_frames_late_after_a_stage_give_their_buffers_back(runner, frames, no_thread_leak):
    # the first frame passes detect's deadline check (it has a whole second to get there), then
    # detect takes longer than the deadline: it is late for swap, holding its crops
    detect, slowed = runner.detect, threading.Event()

    def slow_first_detect(item, blob):
        if not slowed.is_set():
            slowed.set()
            time.sleep(1.3)
        return detect(item, blob)

    runner.detect = slow_first_detect
    runner.live, runner.deadline, runner.max_queue = True, 1.0, 16
    stats = runner.run(frames * 2)
    acc = stats.accounting
    assert_accounted(acc, 12)
    assert slowed.is_set() and acc["stages"][1]["late"] > 0, acc
    assert frame_buffers_leased(runner) == []


# --------------------------------------------------------------------------------- the sink

@pytest.mark.timeout(60)
def test_slow_sink_live_drops_unread_outputs_and_gives_their_buffers_back(runner, frames, no_thread_leak):
    runner.live = True
    stats = runner.run(paced(frames, 60, 1 / 60.0), sink=lambda i, f: time.sleep(0.1))
    acc = stats.accounting
    assert_accounted(acc, 60)
    assert acc["dropped_output"] > 0, acc
    assert frame_buffers_leased(runner) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("where", ["sink", "stage"])
def test_an_exception_in_the_sink_or_a_stage_stops_the_run_at_once(runner, frames, live, error, where,
                                                                   no_thread_leak):
    runner.live = live
    # live, frame 3 itself may be dropped: the first frame from 3 on fails
    failed, lock = [], threading.Lock()

    def sink(index, frame):
        if where == "sink" and index >= 3:
            raise error("stop at %d" % index)

    swap = runner.swap

    def failing_swap(item):
        with lock:
            fail = item.index >= 3 and not failed
            if fail:
                failed.append(item.index)
        if fail:
            raise error("stop at %d" % item.index)
        return swap(item)

    if where == "stage":
        runner.swap = failing_swap
    source = endless(frames) if live else frames * 50
    t0 = time.monotonic()
    if where == "stage" and error is RuntimeError:  # an ordinary stage error
        if live:  # live: one failed frame among the others
            stats = runner.run(itertools.islice(source, 20))
            assert stats.accounting["error"] == 1 and "RuntimeError: stop at" in stats.errors[0]
            return
        with pytest.raises(RuntimeError, match="frame 3 failed in stage swap: RuntimeError"):
            runner.run(source, sink=sink)
    else:
        with pytest.raises(error, match="stop at 3" if not live else r"stop at \d+"):
            runner.run(source, sink=sink)
    assert time.monotonic() - t0 < 5
    assert frame_buffers_leased(runner) == []
    assert runner.run(frames[:2]).frames == 2  # still usable


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_ctrl_c_while_run_waits_stops_it_cleanly(runner, frames, no_thread_leak):
    runner.live = True
    main = threading.get_ident()
    timer = threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(endless(frames, 0.02))
    finally:
        timer.join()
    assert time.monotonic() - t0 < 3
    assert runner.run(frames[:2]).frames == 2


# ---------------------------------------------------------------------------------- close()

@pytest.mark.timeout(60)
@pytest.mark.parametrize("live", [False, True])
def test_close_from_another_thread_stops_a_run(frames, standin, live, no_thread_leak):
    runner = OptimizedRunner(Workload(dfm=str(standin)), swap_workers=2, live=live)
    runner.run(frames[:2])
    closer = threading.Timer(0.5, runner.close)
    t0 = time.monotonic()
    closer.start()
    stats = runner.run(endless(frames, 0.005) if live else frames * 200)
    closer.join()
    assert time.monotonic() - t0 < 5
    acc = stats.accounting
    assert_accounted(acc)
    assert acc["submitted"] < (10 ** 9 if live else 1200) and acc["done"] > 0
    assert runner.pool.stats()["leased"] == 0  # closed: every buffer back, the runners' own too
    with pytest.raises(RuntimeError, match="OptimizedRunner is closed"):
        runner.run(frames)
    runner.close()  # idempotent


@pytest.mark.timeout(60)
def test_close_while_the_feeder_waits_for_room_stops_the_run(frames, standin, no_thread_leak):
    runner = OptimizedRunner(Workload(dfm=str(standin)), swap_workers=1, max_in_flight=1)
    sunk = threading.Event()

    def slow_sink(index, frame):  # the one frame in flight sits here: the feeder waits for room
        sunk.set()
        time.sleep(0.3)

    closer = threading.Thread(target=lambda: sunk.wait(30) and runner.close())
    closer.start()
    t0 = time.monotonic()
    stats = runner.run(frames * 100, sink=slow_sink)
    closer.join()
    assert time.monotonic() - t0 < 10
    assert_accounted(stats.accounting)
    assert stats.accounting["submitted"] < 10
    assert runner.pool.stats()["leased"] == 0


@pytest.mark.timeout(60)
def test_close_from_the_sink_ends_the_run(frames, standin, no_thread_leak):
    runner = OptimizedRunner(Workload(dfm=str(standin)), swap_workers=2, live=True)

    def sink(index, frame):
        if index >= 2:
            runner.close()

    stats = runner.run(endless(frames, 0.01), sink=sink)
    assert_accounted(stats.accounting)
    assert runner.pool.stats()["leased"] == 0


@pytest.mark.timeout(60)
def test_dfm_runner_used_after_close_raises_and_leases_nothing(standin):
    pool = BufferPool()
    dfm = DFMRunner(create_session_with_info(standin, CPU1).session, host_pool=pool)
    faces = np.zeros((1, dfm.resolution, dfm.resolution, 3), np.uint8)
    dfm.run(faces)
    dfm.close()
    assert pool.stats()["leased"] == 0
    with pytest.raises(RuntimeError, match="closed"):
        dfm.run(faces)
    assert pool.stats()["leased"] == 0


# ----------------------------------------------------------------------- model files changed

@pytest.mark.timeout(60)
def test_model_file_replaced_truncated_deleted_under_a_model_cache(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(add_model(1.0), str(path))
    with ModelCache(max_models=4, config=CPU1, measure=False) as cache:
        first = cache.get(path)
        save_replacing(add_model(2.0), path)
        os.utime(str(path), ns=(time.time_ns(), time.time_ns() + 10 ** 9))  # a later mtime, for sure
        assert bias_of(first) == 1.0  # the cached session keeps working
        second = cache.get(path)
        assert bias_of(second) == 2.0 and second is not first
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(InvalidModelError, match=re.escape(str(path))) as info:
            cache.get(path)
        assert info.value.path == str(path)
        path.unlink()
        with pytest.raises(ModelNotFoundError, match=re.escape(str(path))):
            cache.get(path)
        assert (bias_of(first), bias_of(second)) == (1.0, 2.0)
        assert cache.stats()["load_failures"] == 1  # the missing file fails before any load


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hash_keys", [False, True])
def test_same_size_replacement_keeping_the_mtime_is_not_served_stale(tmp_path, hash_keys):
    # the file's key holds its inode and ctime: a rename or a write changes them, whatever the mtime
    path = tmp_path / "m.onnx"
    onnx.save(add_model(1.0), str(path))
    before = os.stat(str(path))
    with ModelCache(max_models=4, config=CPU1, measure=False, hash_keys=hash_keys) as cache:
        assert bias_of(cache.get(path)) == 1.0
        save_replacing(add_model(2.0), path, keep_stamp_of=before)
        after = os.stat(str(path))
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert bias_of(cache.get(path)) == 2.0


@pytest.mark.timeout(60)
def test_disk_cache_sees_a_same_size_replacement_that_keeps_the_mtime(cache_dir, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(add_model(1.0), str(path))
    before = os.stat(str(path))
    config = CPU1.replace(disk_cache=True)
    assert create_session_with_info(path, config).disk_cache == "stored"
    save_replacing(add_model(2.0), path, keep_stamp_of=before)
    info = create_session_with_info(path, config)
    assert bias_of(info.session) == 2.0 and info.disk_cache == "stored"


@pytest.mark.timeout(60)
def test_runner_keeps_working_when_its_dfm_file_breaks(frames, standin, tmp_path, no_thread_leak):
    dfm = tmp_path / "model.onnx"
    dfm.write_bytes(standin.read_bytes())
    with ModelCache(max_models=4) as cache:
        with OptimizedRunner(Workload(dfm=str(dfm)), cache=cache, swap_workers=1) as runner:
            data = dfm.read_bytes()
            dfm.write_bytes(data[:1000])  # truncated while the runner holds its session
            assert runner.run(frames[:3]).frames == 3
            with pytest.raises(InvalidModelError, match=re.escape(str(dfm))):
                OptimizedRunner(Workload(dfm=str(dfm)), cache=cache)
            dfm.unlink()
            with pytest.raises(FileNotFoundError, match=re.escape(str(dfm))):
                OptimizedRunner(Workload(dfm=str(dfm)), cache=cache)
            assert runner.run(frames[:3]).frames == 3


# ------------------------------------------------------------------------- broken disk cache

def _cache_root_is_a_file(cache_dir):
    cache_dir.write_text("not a folder")


def _optimized_is_a_file(cache_dir):
    cache_dir.mkdir()
    (cache_dir / "optimized").write_text("not a folder")


def _read_only_optimized(cache_dir):
    root = cache_dir / "optimized"
    root.mkdir(parents=True, mode=0o700)
    root.chmod(0o500)
    if os.access(str(root), os.W_OK):  # root ignores permission bits
        pytest.skip("running as root: a read-only folder is still writable (the other cases cover this)")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("breakage", [_cache_root_is_a_file, _optimized_is_a_file, _read_only_optimized])
def test_unwritable_disk_cache_builds_the_session_anyway_with_a_warning(cache_dir, tmp_path, caplog, breakage):
    path = tmp_path / "m.onnx"
    onnx.save(add_model(3.0), str(path))
    breakage(cache_dir)
    try:
        with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
            info = create_session_with_info(path, CPU1.replace(disk_cache=True))
    finally:
        if (cache_dir / "optimized").is_dir():
            (cache_dir / "optimized").chmod(0o700)
    assert info.disk_cache == "failed" and bias_of(info.session) == 3.0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(cache_dir) in w for w in warnings), warnings


@pytest.mark.timeout(90)
def test_runner_with_a_corrupt_or_unusable_disk_cache_gives_the_same_frames(frames, standin, cache_dir, caplog,
                                                                           no_thread_leak):
    workload = Workload(dfm=str(standin))

    def outputs(**kwargs):
        got = {}
        with OptimizedRunner(workload, swap_workers=1, **kwargs) as runner:
            runner.run(frames[:3], sink=lambda i, f: got.__setitem__(i, f.copy()))
        return got

    expected = outputs()
    stored = outputs(disk_cache=True)
    root = cache_dir / "optimized"
    cached = list(root.glob("*.onnx"))
    assert len(cached) == 2  # the detector's and the DFM's optimized graphs
    for path in cached:
        data = bytearray(path.read_bytes())
        data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="dfl_perf.sessions"):
        rebuilt = outputs(disk_cache=True)
        for path in root.iterdir():
            if path.is_file():
                path.unlink()
            else:
                for inner in path.iterdir():
                    inner.unlink()
                path.rmdir()
        root.rmdir()
        root.write_text("not a folder")
        uncached = outputs(disk_cache=True)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "missing or corrupt" in messages and "cache unavailable" in messages
    for got in (stored, rebuilt, uncached):
        assert sorted(got) == [0, 1, 2]
        for i in got:
            assert np.abs(got[i].astype(int) - expected[i].astype(int)).max() <= 1


# ------------------------------------------------------------- property tests (section 3 gaps)

_POOL_SHAPES = [(0,), (3,), (8,), (2, 4), (4, 2), (1, 1, 3)]
_POOL_DTYPES = [np.uint8, np.float32, np.int16]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["acq", "acq", "rel", "trim", "budget"]), st.integers(0, 5),
                          st.integers(0, 2), st.integers(0, 7)), max_size=50))
def test_buffer_pool_never_aliases_two_held_buffers(ops):
    # test_buffers checks identity; this checks memory: no two held buffers overlap, and what a
    # holder wrote stays there whatever the pool does next
    pool = BufferPool(max_bytes=96)
    held = []  # (buffer, the byte pattern its holder wrote)
    for step, (op, shape, dtype, pick) in enumerate(ops):
        if op == "acq":
            buf = pool.acquire(_POOL_SHAPES[shape], _POOL_DTYPES[dtype])
            assert buf.shape == _POOL_SHAPES[shape] and buf.dtype == _POOL_DTYPES[dtype]
            view = buf.view(np.uint8).reshape(-1)
            view[:] = step % 251
            held.append((buf, step % 251))
        elif op == "rel" and held:
            pool.release(held.pop(pick % len(held))[0])
        elif op == "trim":
            pool.trim(pick * 8)
        elif op == "budget":
            pool.max_bytes = pick * 24
        for i, (a, mark) in enumerate(held):
            assert (a.view(np.uint8) == mark).all()
            for b, _ in held[i + 1:]:
                assert not np.shares_memory(a, b)
        s = pool.stats()
        assert s["leased"] == len(held) and s["bytes_leased"] == sum(b.nbytes for b, _ in held)
        assert s["bytes_free"] == 0 or s["bytes_held"] <= pool.max_bytes


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    faults=st.lists(st.sampled_from(["ok", "ok", "ok", "raise", "slow"]), min_size=1, max_size=40),
    policy=st.sampled_from(["oldest", "newest", "block"]),
    deadline=st.sampled_from([None, 0.005]),
    stop_at=st.one_of(st.none(), st.integers(0, 40)),
    drain=st.booleans(),
)
def test_pipeline_accounting_holds_under_injected_faults(faults, policy, deadline, stop_at, drain):
    # random stage errors and stalls, any drop policy, a deadline, and a close (drained or not)
    # at a random point: every id resolved at most once, in order, and the books balance
    def stage(i):
        if faults[i] == "raise":
            raise ValueError("frame %d" % i)
        if faults[i] == "slow":
            time.sleep(0.003)
        return i

    pipe = Pipeline([Stage(stage, workers=2, name="a"), Stage(lambda i: i, name="b")], drop=policy,
                    max_queue=2, deadline=deadline, max_output=1000)
    with pipe:
        for i in range(len(faults)):
            if stop_at is not None and i == stop_at:
                pipe.close(drain=drain)
            try:
                pipe.submit(i, timeout=1.0)
            except ProcessorClosed:
                break
        pipe.close()
        results = list(pipe.results())
    stats = pipe.stats()
    submitted = len(faults) if stop_at is None or stop_at >= len(faults) else stop_at
    assert stats["submitted"] == submitted
    assert_accounted(stats, submitted)
    assert [r.id for r in results] == list(range(submitted))
    counts = Counter(r.status for r in results)
    assert counts[FrameStatus.ERROR] == stats["error"] <= faults[:submitted].count("raise")
    assert all(r.output == r.id for r in results if r.ok)
    assert all(isinstance(r.error, ValueError) for r in results if r.status is FrameStatus.ERROR)
