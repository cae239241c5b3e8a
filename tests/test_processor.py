"""Tests of dfl_perf.processor: ordering, dropping, deadlines, accounting, errors, shutdown."""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfl_perf.processor import (
    AsyncFrameProcessor,
    FrameResult,
    FrameStatus,
    Pipeline,
    ProcessorClosed,
    Stage,
    measure_stages,
    plan_workers,
)
from dfl_perf.processor._types import Ticket

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("no_thread_leak")]

DONE, DROPPED, LATE, ERROR = FrameStatus.DONE, FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR


class RecordingMonitor:
    """A small stand-in with PerformanceMonitor's duck-typed methods (kept independent of dfl_perf.monitor)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.done = []
        self.dropped = self.late = self.failed = 0

    def record(self, stage_name, seconds):
        with self.lock:
            self.records.append((stage_name, seconds))

    def frame_done(self, latency_seconds):
        with self.lock:
            self.done.append(latency_seconds)

    def frame_dropped(self, n=1):
        with self.lock:
            self.dropped += n

    def frame_late(self, n=1):
        with self.lock:
            self.late += n

    def frame_failed(self, n=1):
        with self.lock:
            self.failed += n


def assert_accounting(proc, results=None):
    """The identity at any instant; with ``results`` (everything read, after close): one result per id."""
    s = proc.stats()
    assert s["submitted"] == s["done"] + s["dropped"] + s["late"] + s["error"] + s["in_flight"], s
    assert s["in_flight"] >= 0, s
    if results is not None:
        counts = Counter(r.status for r in results)
        assert s["in_flight"] == 0, s
        assert sorted(r.id for r in results) == list(range(s["submitted"])), "every id exactly once"
        assert (counts[DONE], counts[DROPPED], counts[LATE], counts[ERROR]) == (
            s["done"], s["dropped"], s["late"], s["error"]), s
        assert all(r.output is None for r in results if not r.ok)
    return s


def wait_until(condition, timeout=10.0, what="the condition"):
    """Poll ``condition()`` until it holds; fail after ``timeout`` seconds (never a fixed sleep)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for %s" % what
        time.sleep(0.002)


def blocked_in(thread, function_name):
    """True when ``thread`` is inside a call of ``function_name`` (it blocks there, not just late)."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code.co_name == function_name:
            return True
        frame = frame.f_back
    return False


def produce(proc, frames, then_close=True):
    """Submit frames on a thread (block-mode submits may wait), then close."""

    def run():
        for f in frames:
            proc.submit(f)
        if then_close:
            proc.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


class Gate:
    """fn that blocks until opened, and says when a worker is inside."""

    def __init__(self):
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self, x):
        self.entered.set()
        assert self.open.wait(10)
        return x


# -- ordering ----------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delays=st.lists(st.integers(0, 3), min_size=1, max_size=40),
    workers=st.integers(1, 4),
    two_stages=st.booleans(),
)
def test_ordered_output_under_random_delays(delays, workers, two_stages):
    def slow(i):
        time.sleep(delays[i] / 1000.0)
        return i

    stages = [Stage(slow, workers=workers, name="slow")]
    if two_stages:
        stages.append(Stage(lambda i: i * 10, workers=workers, name="scale"))
    with Pipeline(stages, drop="block", max_queue=3) as proc:
        thread = produce(proc, range(len(delays)))
        results = list(proc.results())
        thread.join()
    assert [r.id for r in results] == list(range(len(delays)))
    assert [r.output for r in results] == [i * (10 if two_stages else 1) for i in range(len(delays))]
    assert all(r.status is DONE for r in results)
    assert_accounting(proc, results)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delays=st.lists(st.integers(0, 2), min_size=1, max_size=60),
    workers=st.integers(1, 3),
    policy=st.sampled_from(["oldest", "newest"]),
    deadline=st.sampled_from([None, 0.004]),
)
def test_live_policies_keep_order_and_account_every_frame(delays, workers, policy, deadline):
    def slow(i):
        time.sleep(delays[i] / 1000.0)
        return i

    stages = [Stage(slow, workers=workers, name="slow"), Stage(lambda i: i, name="id")]
    with Pipeline(stages, drop=policy, max_queue=2, deadline=deadline, max_output=1000) as proc:
        for i in range(len(delays)):
            proc.submit(i)
        proc.close()
        results = list(proc.results())
    assert [r.id for r in results] == list(range(len(delays)))  # every id once, in order
    assert all(r.output == r.id for r in results if r.ok)
    assert_accounting(proc, results)


def test_unordered_delivers_every_frame():
    rng = random.Random(1)
    delays = [rng.random() * 0.003 for _ in range(60)]
    with AsyncFrameProcessor(
        lambda i: time.sleep(delays[i]) or i, workers=4, drop="block", ordered=False
    ) as proc:
        thread = produce(proc, range(60))
        results = list(proc.results())
        thread.join()
    assert sorted(r.output for r in results) == list(range(60))


def test_dropped_and_failed_frames_are_not_waited_for():
    gate = Gate()

    def fn(i):
        if i == 0:
            gate(i)  # frame 0 blocks a worker...
        if i == 2:
            raise ValueError("bad frame")
        return i

    with AsyncFrameProcessor(fn, workers=2, drop="block", max_queue=8) as proc:
        for i in range(5):
            proc.submit(i)
        assert gate.entered.wait(5)
        wait_until(lambda: proc.stats()["reorder"] == 4, what="frames 1-4 decided behind frame 0")
        assert proc.get(timeout=0) is None  # ...and holds back the frames after it (ordered)
        gate.open.set()
        results = [proc.get(timeout=5) for _ in range(5)]
    assert [r.id for r in results] == [0, 1, 2, 3, 4]
    assert [r.status for r in results] == [DONE, DONE, ERROR, DONE, DONE]


# -- drop policies -------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_drop_policies_live(policy):
    gate = Gate()
    with AsyncFrameProcessor(gate, max_queue=2, drop=policy) as proc:
        assert proc.submit("f0")
        assert gate.entered.wait(5)  # the worker holds f0; the queue is empty
        t1, t2 = proc.submit("f1"), proc.submit("f2")
        t3 = proc.submit("f3")
        assert t1 and t2 and (t1.evicted, t2.evicted) == (None, None)
        if policy == "oldest":
            assert t3 and t3.accepted and t3.evicted == 1
            expected = [DONE, DROPPED, DONE, DONE]
        else:
            assert not t3 and t3.accepted is False and t3.evicted is None
            expected = [DONE, DONE, DONE, DROPPED]
        gate.open.set()
        proc.close()
        results = list(proc.results())
    assert [r.id for r in results] == [0, 1, 2, 3]
    assert [r.status for r in results] == expected
    dropped = [r for r in results if r.status is DROPPED][0]
    assert dropped.output is None and dropped.started is None and dropped.finished >= dropped.queued
    assert_accounting(proc, results)


def test_drop_block_waits_for_room_and_times_out():
    gate = Gate()
    with AsyncFrameProcessor(gate, max_queue=1, drop="block") as proc:
        proc.submit(0)
        assert gate.entered.wait(5)
        proc.submit(1)  # fills the queue
        t0 = time.monotonic()
        refused = proc.submit(2, timeout=0.1)
        assert not refused and time.monotonic() - t0 >= 0.09
        accepted = []
        waiter = threading.Thread(target=lambda: accepted.append((proc.submit(3), time.monotonic())))
        waiter.start()
        wait_until(lambda: blocked_in(waiter, "_wait_for_room"), what="the submit to wait for room")
        opened = time.monotonic()
        gate.open.set()
        waiter.join(5)
        assert accepted and accepted[0][0].accepted and accepted[0][1] >= opened
        proc.close()
        results = list(proc.results())
    assert [r.status for r in results] == [DONE, DONE, DROPPED, DONE]
    assert_accounting(proc, results)


def test_submit_blocked_in_block_mode_is_released_by_close():
    gate = Gate()
    proc = AsyncFrameProcessor(gate, max_queue=1, drop="block")
    proc.submit(0)
    assert gate.entered.wait(5)
    proc.submit(1)
    errors = []

    def blocked():
        try:
            proc.submit(2)
        except ProcessorClosed as exc:
            errors.append(exc)

    thread = threading.Thread(target=blocked)
    thread.start()
    wait_until(lambda: blocked_in(thread, "_wait_for_room"), what="the submit to wait for room")
    closer = threading.Thread(target=proc.close, kwargs={"drain": False})
    closer.start()
    thread.join(5)
    assert errors, "a submit blocked on a full queue must end with ProcessorClosed when closed"
    gate.open.set()
    closer.join(5)
    assert_accounting(proc, list(proc.results()))


# -- accounting and overload --------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["oldest", "newest"])
def test_exact_accounting_under_overload(policy):
    monitor = RecordingMonitor()
    proc = AsyncFrameProcessor(
        lambda x: time.sleep(0.002) or x, workers=2, max_queue=3, drop=policy, deadline=0.006, monitor=monitor
    )
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(proc.results()))
    reader.start()
    checks = 0
    for i in range(400):
        proc.submit(i, meta={"i": i})
        if i % 50 == 0:
            assert_accounting(proc)
            checks += 1
        time.sleep(0.0002)
    proc.close()
    reader.join(10)
    s = assert_accounting(proc, seen)
    assert s["submitted"] == 400 and s["dropped"] > 0 and s["done"] > 0
    assert [r.id for r in seen] == sorted(r.id for r in seen)
    assert all(r.meta == {"i": r.id} for r in seen)
    assert len(monitor.done) == s["done"] and monitor.dropped == s["dropped"] and monitor.late == s["late"]
    assert Counter(name for name, _ in monitor.records)["process"] == s["stages"][0]["processed"]


def test_consumer_that_stops_reading_live_mode_bounds_memory():
    max_output = 8
    with AsyncFrameProcessor(lambda x: x, workers=2, max_queue=4, max_output=max_output, drop="oldest") as proc:
        t0 = time.monotonic()
        unread = []
        for i in range(3000):
            assert proc.submit(np.zeros(16, np.uint8))
            if i % 100 == 0:
                unread.append(proc.stats()["unread_outputs"])
        assert time.monotonic() - t0 < 10  # never blocked
        wait_until(lambda: proc.stats()["ready"] == 3000, what="every frame resolved")
        # How many of the burst the workers processed (the rest the queue dropped) depends on their speed:
        # on a busy machine, fewer than max_output. Then max_output + 1 frames more, one at a time, each
        # processed: more outputs than the reader's share were made, so the oldest must have gone.
        submitted = 3000
        for _ in range(max_output + 1):
            assert proc.submit(np.zeros(16, np.uint8))
            submitted += 1
            wait_until(lambda n=submitted: proc.stats()["ready"] == n, what="the frame resolved")
            unread.append(proc.stats()["unread_outputs"])
        s = proc.stats()
        assert max(unread) <= max_output  # outputs held for the reader: bounded
        assert s["queued"] == 0 and s["dropped_output"] > 0
        proc.close()
        results = list(proc.results())
    s = assert_accounting(proc, results)  # every id still yields its result: dropped ones without output
    assert s["submitted"] == submitted and s["done"] + s["dropped"] == submitted
    assert [r.status for r in results[-max_output:]] == [DONE] * max_output  # the newest outputs kept
    assert s["dropped"] >= s["dropped_output"] > 0


def test_unread_outputs_dropped_live_still_yield_their_results_in_order():
    with AsyncFrameProcessor(lambda x: x, max_queue=16, max_output=2, drop="oldest") as proc:
        for i in range(6):
            proc.submit(i, meta="m%d" % i)
        wait_until(lambda: proc.stats()["ready"] == 6, what="six results ready")
        assert proc.stats()["unread_outputs"] == 2
        results = [proc.get(timeout=5) for _ in range(6)]
    assert [r.id for r in results] == list(range(6))
    assert [r.status for r in results] == [DROPPED] * 4 + [DONE] * 2  # the oldest outputs went
    assert [r.output for r in results] == [None] * 4 + [4, 5]
    assert [r.meta for r in results] == ["m%d" % i for i in range(6)]
    assert all(r.started is not None and r.finished >= r.started for r in results)
    assert_accounting(proc, results)


def test_consumer_that_stops_reading_block_mode_does_not_deadlock():
    with AsyncFrameProcessor(lambda x: x, max_queue=2, max_output=2, drop="block") as proc:
        accepted, refused = [], []
        for i in range(50):  # nobody reads: back-pressure reaches submit, which times out
            t0 = time.monotonic()
            (accepted if proc.submit(i, timeout=0.01) else refused).append(i)
            assert time.monotonic() - t0 < 5, "a submit with a timeout blocked"
        assert accepted and refused  # the reader's absence reached submit, and nothing hung
        s = proc.stats()
        assert s["in_flight"] == 50  # nothing reached a reader
        proc.close(drain=True)  # drains although nobody reads
        results = list(proc.results())
    assert [r.id for r in results if r.ok] == accepted
    assert [r.id for r in results if r.status is DROPPED] == refused
    assert_accounting(proc, results)


# -- deadline ----------------------------------------------------------------------------------
def test_deadline_marks_old_frames_late_and_bounds_latency():
    service, deadline = 0.02, 0.03
    with AsyncFrameProcessor(
        lambda x: time.sleep(service) or x, max_queue=10, drop="block", deadline=deadline
    ) as proc:
        for i in range(10):
            proc.submit(i)
        proc.close()
        results = list(proc.results())
    statuses = [r.status for r in results]
    assert statuses[0] is DONE and LATE in statuses
    late = [r for r in results if r.status is LATE]
    assert all(r.stage == "process" and r.output is None and r.started is None for r in late)
    for r in results:
        if r.status is DONE:
            assert r.started - r.queued <= deadline  # the check and the start read one clock value
    assert_accounting(proc, results)


def test_pipeline_deadline_is_checked_before_each_stage():
    def slow(x):
        time.sleep(0.05)
        return x

    with Pipeline([Stage(slow, name="a"), Stage(lambda x: x, name="b")], drop="block", deadline=0.03) as proc:
        proc.submit(0)
        proc.close()
        (result,) = list(proc.results())
    assert result.status is LATE and result.stage == "b"
    assert result.started is not None  # stage a did start it


# -- errors ------------------------------------------------------------------------------------
def test_error_is_isolated_to_its_frame():
    def fn(i):
        if i % 3 == 1:
            raise ValueError("frame %d is bad" % i)
        return i

    monitor = RecordingMonitor()
    with AsyncFrameProcessor(fn, workers=2, drop="block", monitor=monitor) as proc:
        thread = produce(proc, range(30))
        results = list(proc.results())
        thread.join()
    assert [r.id for r in results] == list(range(30))
    for r in results:
        if r.id % 3 == 1:
            assert r.status is ERROR and isinstance(r.error, ValueError) and r.output is None
            assert "frame %d is bad" % r.id in r.traceback and "in fn" in r.traceback
            assert r.stage == "process"
        else:
            assert r.status is DONE and r.output == r.id
    s = assert_accounting(proc, results)
    assert s["error"] == 10 and monitor.failed == 10 and s["stages"][0]["errors"] == 10


def test_on_error_raise_stops_and_raises_in_reader_and_submit():
    def fn(i):
        if i == 5:
            raise KeyError("boom")
        return i

    proc = AsyncFrameProcessor(fn, drop="block", max_queue=100, on_error="raise")
    for i in range(20):
        proc.submit(i)
    got = []
    with pytest.raises(KeyError, match="boom"):
        for r in proc.results():
            got.append(r)
    assert [r.id for r in got] == [0, 1, 2, 3, 4]
    with pytest.raises(ProcessorClosed):
        proc.submit(99)  # the reader already saw the error
    proc.close()
    rest = list(proc.results())
    assert rest and all(r.status is DROPPED for r in rest)
    s = assert_accounting(proc)
    assert s["in_flight"] == 0 and s["error"] == 1 and s["done"] == 5


def test_on_error_raise_surfaces_once_through_submit():
    proc = AsyncFrameProcessor(lambda x: 1 / 0, on_error="raise", drop="block")
    proc.submit(0)
    with pytest.raises(ZeroDivisionError):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            proc.submit(1)
            time.sleep(0.005)
    with pytest.raises(ProcessorClosed) as info:
        proc.submit(2)
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    proc.close()


def test_on_error_raise_unseen_error_raises_when_leaving_with_block():
    calls = []
    with pytest.raises(RuntimeError, match="nope"):
        with AsyncFrameProcessor(
            lambda x: (_ for _ in ()).throw(RuntimeError("nope")), on_error="raise"
        ) as proc:
            proc.submit(0, meta="m")  # the drain on leaving the block meets the error
            calls.append(1)
    assert calls and proc.closed


def test_failing_init_stops_the_pipeline_instead_of_hanging():
    def init():
        raise OSError("no device")

    proc = Pipeline([Stage(lambda x, state: x, init=init, workers=2, name="s")], drop="block")
    wait_until(lambda: proc.closed, what="the failed init to stop the pipeline")
    with pytest.raises(OSError, match="no device"):
        proc.submit(0)
    proc.close()
    assert list(proc.results()) == []


def test_callback_error_is_counted_not_fatal_in_skip_mode():
    def on_result(r):
        if r.id == 1:
            raise ValueError("callback")

    with AsyncFrameProcessor(lambda x: x, drop="block", on_result=on_result) as proc:
        for i in range(3):
            proc.submit(i)
    s = proc.stats()
    assert s["callback_errors"] == 1 and s["done"] == 3


# -- shutdown ----------------------------------------------------------------------------------
def test_close_under_load_from_another_thread():
    proc = Pipeline(
        [Stage(lambda x: time.sleep(0.001) or x, workers=2, name="a"), Stage(lambda x: x, name="b")],
        drop="oldest",
        max_queue=4,
    )
    stop = threading.Event()

    def producer():
        try:
            while not stop.is_set():
                proc.submit(0)
        except ProcessorClosed:
            pass

    seen = []
    threads = [
        threading.Thread(target=producer),
        threading.Thread(target=lambda: seen.extend(proc.results())),
    ]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    proc.close(drain=False)
    assert time.monotonic() - t0 < 2
    stop.set()
    for t in threads:
        t.join(5)
        assert not t.is_alive()
    assert_accounting(proc, seen)
    proc.close()  # idempotent
    proc.close(drain=False)


def test_close_drain_processes_everything_and_results_end():
    proc = AsyncFrameProcessor(lambda x: time.sleep(0.001) or x + 1, workers=3, max_queue=50, drop="block")
    for i in range(50):
        assert proc.submit(i)
    proc.close(drain=True)
    assert proc.stats()["ready"] == 50
    with pytest.raises(ProcessorClosed):
        proc.submit(0)
    results = list(proc.results())
    assert [r.output for r in results] == list(range(1, 51))
    assert list(proc.results()) == [] and proc.get(timeout=0.01) is None
    assert_accounting(proc, results)


def test_close_without_drain_drops_queued_frames_quickly():
    gate = Gate()
    proc = AsyncFrameProcessor(lambda x: gate(x) if x == 0 else time.sleep(0.05) or x, max_queue=100,
                               drop="block")
    for i in range(100):
        proc.submit(i)
    assert gate.entered.wait(5)  # frame 0 is running; 99 wait in the queue (a 5 s drain)
    threading.Timer(0.05, gate.open.set).start()
    t0 = time.monotonic()
    proc.close(drain=False)
    assert time.monotonic() - t0 < 2.5  # the running call finishes; nothing else runs
    results = list(proc.results())
    assert [r.status for r in results] == [DONE] + [DROPPED] * 99
    assert all(r.started is None for r in results[1:])
    assert_accounting(proc, results)


def test_keyboard_interrupt_in_with_block_closes_without_drain():
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with AsyncFrameProcessor(lambda x: time.sleep(0.05) or x, max_queue=100, drop="block") as proc:
            for i in range(100):
                proc.submit(i)
            raise KeyboardInterrupt
    assert time.monotonic() - t0 < 2.5  # not the 5 s drain
    assert proc.closed and proc.stats()["dropped"] == 0  # not read yet, but decided:
    assert len(list(proc.results())) == 100
    assert_accounting(proc)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_ctrl_c_while_reader_waits_stops_cleanly():
    main = threading.get_ident()
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
    read = []
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with AsyncFrameProcessor(lambda x: time.sleep(0.05) or x, max_queue=50, drop="block") as proc:
            for i in range(50):
                proc.submit(i)
            timer.start()
            for result in proc.results():  # blocks: the pipeline never ends by itself
                read.append(result)
    timer.join()
    assert time.monotonic() - t0 < 2.5  # not the 2.5 s drain (50 x 50 ms) after the 0.2 s
    assert proc.closed
    rest = list(proc.results())  # the frames left were decided (dropped), none lost
    assert len(read) < 50 and any(r.status is DROPPED for r in rest)
    assert_accounting(proc, read + rest)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
def test_ctrl_c_during_a_drain_stops_draining():
    proc = AsyncFrameProcessor(lambda x: time.sleep(0.05) or x, max_queue=100, drop="block")
    for i in range(100):  # a 5 s drain
        proc.submit(i)
    main = threading.get_ident()
    timer = threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        proc.close(drain=True)
    timer.join()
    assert time.monotonic() - t0 < 3  # not the 5 s drain
    results = list(proc.results())
    assert len(results) == 100 and Counter(r.status for r in results)[DROPPED] > 50
    assert_accounting(proc, results)


def test_close_from_on_result_callback_does_not_deadlock():
    holder = {}

    def on_result(r):
        if r.id == 3:
            holder["proc"].close()

    proc = AsyncFrameProcessor(lambda x: x, drop="block", on_result=on_result, max_queue=2)
    holder["proc"] = proc
    submitted = 0
    try:
        for i in range(100):
            proc.submit(i)
            submitted += 1
    except ProcessorClosed:
        pass
    proc.close()
    assert 3 < submitted < 100  # the close inside the callback reached the producer
    assert proc.stats()["in_flight"] == 0
    assert_accounting(proc)


# -- callbacks, state, monitor -------------------------------------------------------------------
def test_on_result_is_ordered_and_excludes_results_iterator():
    got = []
    delays = [0.003, 0.0, 0.001, 0.0, 0.002, 0.0] * 5
    proc = AsyncFrameProcessor(
        lambda i: time.sleep(delays[i]) or i, workers=3, drop="block", on_result=got.append, max_queue=6
    )
    with proc:
        for i in range(len(delays)):
            proc.submit(i)
        with pytest.raises(RuntimeError, match="on_result"):
            proc.get()
    assert [r.id for r in got] == list(range(len(delays)))
    assert proc.stats()["in_flight"] == 0


def test_on_result_never_runs_on_the_submitting_thread():
    calls = []
    main = threading.get_ident()
    gate = Gate()
    with AsyncFrameProcessor(
        lambda x: gate(x) if x == 0 else x,
        max_queue=1,
        drop="newest",
        on_result=lambda r: calls.append((r, threading.get_ident())),
    ) as proc:
        proc.submit(0)
        assert gate.entered.wait(5)  # the worker holds frame 0: the queue of 1 fills, then refusals
        refused = sum(not proc.submit(i) for i in range(1, 50))
        gate.open.set()
    assert refused == 48
    assert [r.id for r, _ in calls] == list(range(50))
    assert all(ident != main for _, ident in calls)
    assert sum(r.status is DROPPED for r, _ in calls) == refused


def test_init_gives_per_thread_state():
    inits = []

    def init():
        inits.append(threading.get_ident())
        return threading.get_ident()

    def fn(x, state):
        assert state == threading.get_ident()
        time.sleep(0.001)
        return state

    with AsyncFrameProcessor(fn, workers=3, init=init, drop="block", max_queue=30) as proc:
        for i in range(30):
            proc.submit(i)
        proc.close()
        outputs = {r.output for r in proc.results()}
    assert len(inits) == 3 and outputs <= set(inits)


def test_pipeline_feeds_monitor_per_stage_and_keeps_order():
    monitor = RecordingMonitor()
    stages = [
        Stage(lambda x: x + 1, name="detect"),
        Stage(lambda x: time.sleep(0.0005) or x * 2, workers=3, name="swap"),
        Stage(lambda x: -x, name="merge"),
    ]
    with Pipeline(stages, drop="block", max_queue=8, monitor=monitor) as proc:
        thread = produce(proc, range(100))
        results = list(proc.results())
        thread.join()
    assert [r.output for r in results] == [-(i + 1) * 2 for i in range(100)]
    assert Counter(name for name, _ in monitor.records) == {"detect": 100, "swap": 100, "merge": 100}
    assert len(monitor.done) == 100 and all(lat > 0 for lat in monitor.done)
    s = proc.stats()
    assert [st_["name"] for st_ in s["stages"]] == ["detect", "swap", "merge"]
    assert all(st_["processed"] == 100 for st_ in s["stages"])
    assert s["stages"][1]["workers"] == 3 and s["stages"][1]["mean_ms"] > 0.4
    for r in results:
        assert r.queued <= r.started <= r.finished <= r.ready and r.latency == r.ready - r.queued


def test_ordered_latency_includes_the_wait_behind_a_slower_frame():
    others = threading.Semaphore(0)

    def work(x):
        if x == 0:  # frame 0 finishes only after frames 1-3 have
            for _ in range(3):
                assert others.acquire(timeout=10)
            time.sleep(0.01)
        else:
            others.release()
        return x

    with Pipeline([Stage(work, workers=4)], drop="block", max_queue=4, ordered=True) as proc:
        for i in range(4):
            proc.submit(i)
        proc.close()
        results = list(proc.results())
    assert [r.id for r in results] == [0, 1, 2, 3]
    first = results[0]
    for r in results[1:]:
        assert r.finished < first.finished, "frame %d was not finished before frame 0" % r.id
        assert r.ready >= first.finished and r.latency == r.ready - r.queued, (
            "frame %d: its latency leaves out its wait for frame 0" % r.id)


def test_results_get_timeout_and_ticket():
    with AsyncFrameProcessor(lambda x: x) as proc:
        assert proc.get(timeout=0.01) is None
        ticket = proc.submit("a")
        assert isinstance(ticket, Ticket) and ticket and int(ticket) == 0 and [10, 20][ticket] == 10
        r = proc.get(timeout=5)
        assert isinstance(r, FrameResult) and r.ok and r.output == "a" and "done" in repr(r)
    assert FrameStatus("late") is LATE and LATE == "late"


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="drop"):
        AsyncFrameProcessor(lambda x: x, drop="latest")
    with pytest.raises(ValueError, match="workers"):
        Stage(lambda x: x, workers=0)
    with pytest.raises(TypeError, match="callable"):
        Stage("not a function")
    with pytest.raises(ValueError, match="unique"):
        Pipeline([Stage(lambda x: x, name="a"), Stage(lambda x: x, name="a")])
    with pytest.raises(ValueError, match="deadline"):
        AsyncFrameProcessor(lambda x: x, deadline=0)
    with pytest.raises(ValueError, match="max_queue"):
        AsyncFrameProcessor(lambda x: x, max_queue=0)
    with pytest.raises(ValueError, match="on_error"):
        AsyncFrameProcessor(lambda x: x, on_error="ignore")


# -- planning workers -----------------------------------------------------------------------------
def test_plan_gives_the_costly_stage_the_workers_to_keep_up():
    plan = plan_workers({"detect": 0.004, "swap": 0.010, "merge": 0.002}, cpu_budget=2)
    assert plan.bottleneck == "cpu" and plan.rate == pytest.approx(2 / 0.016)
    assert plan.workers["swap"] > plan.workers["detect"] >= 1 and plan.workers["merge"] >= 1
    for name, cost in plan.cpu_seconds.items():
        assert plan.workers[name] / cost >= plan.rate, "%s cannot keep up with the plan's rate" % name
    applied = plan.apply([Stage(lambda x: x, name=n) for n in ("detect", "swap", "merge")])
    assert [s.workers for s in applied] == [plan.workers[n] for n in ("detect", "swap", "merge")]
    assert "swap" in plan.describe()


@settings(max_examples=200, deadline=None)
@given(
    costs=st.lists(st.floats(1e-5, 0.2), min_size=1, max_size=5),
    budget=st.integers(1, 32),
    on_device=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_plan_properties(costs, budget, on_device):
    names = ["s%d" % i for i in range(len(costs))]
    cpu = dict(zip(names, costs))
    device = {n: 2 * c for n, c, d in zip(names, costs, on_device) if d}
    plan = plan_workers(cpu, cpu_budget=budget, device_seconds=device)
    host = [n for n in names if n not in device]
    assert all(1 <= plan.workers[n] <= 64 for n in names)
    assert all(plan.workers[n] == 1 for n in device)
    assert all(plan.rate <= 1 / device[n] + 1e-9 for n in device)  # a device stage bounds the rate
    if host:
        cores = max(1, budget - len(device))
        assert plan.rate <= cores / sum(cpu[n] for n in host) * (1 + 1e-9)  # within the cores
        for n in host:  # every CPU stage keeps up (unless capped)
            assert plan.workers[n] == 64 or plan.workers[n] / cpu[n] >= plan.rate * (1 - 1e-9)
    more = plan_workers(cpu, cpu_budget=budget + 1, device_seconds=device)
    assert all(more.workers[n] >= plan.workers[n] for n in names)  # more cores never take workers away


def test_plan_on_a_gpu_keeps_one_worker_per_device_stage():
    plan = plan_workers({"detect": 0.001, "swap": 0.002, "merge": 0.003}, cpu_budget=4,
                        device_seconds={"detect": 0.002, "swap": 0.008})
    assert plan.workers["detect"] == plan.workers["swap"] == 1
    assert plan.bottleneck == "swap" and plan.rate == pytest.approx(125.0)
    assert plan.workers["merge"] == 1  # 125 frames/s x 3 ms needs less than one core


def test_plan_defaults_to_the_process_cpu_budget_and_names_bad_input():
    from dfl_perf.devices import cpu_budget

    assert plan_workers({"a": 0.01}).cpu_budget == cpu_budget()
    with pytest.raises(ValueError, match="device_seconds names no stage"):
        plan_workers({"a": 0.01}, cpu_budget=2, device_seconds={"b": 0.01})
    with pytest.raises(ValueError, match="'a' must be seconds"):
        plan_workers({"a": -1.0}, cpu_budget=2)
    with pytest.raises(ValueError, match="cpu_budget"):
        plan_workers({"a": 0.01}, cpu_budget=0)
    with pytest.raises(ValueError, match="at least one stage"):
        plan_workers({}, cpu_budget=2)


def test_measure_stages_chains_items_and_splits_wall_from_cpu_time():
    finished = []

    def waits(x):
        time.sleep(0.02)  # time, no CPU: like a stage waiting on a device or a server
        return x + 1

    def spins(x):
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            pass
        return x * 10

    wall, cpu = measure_stages([("wait", waits), ("spin", spins)], [0, 1, 2, 3], finish=finished.append,
                               warmup=1)
    assert finished == [10, 20, 30, 40]  # each item went through both stages, in order
    assert wall["wait"] >= 0.02 and cpu["wait"] < 0.01
    assert cpu["spin"] >= 0.005 and wall["spin"] >= cpu["spin"]
    with pytest.raises(ValueError, match="no item measured"):
        measure_stages([("a", lambda x: x)], [1], warmup=1)
