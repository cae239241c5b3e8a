"""PerformanceMonitor: percentiles, FPS on an injected clock, counters, thread safety, timeline."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfl_perf.monitor import PerformanceMonitor
from dfl_perf.monitor.stats import describe, percentile


class FakeClock:
    """An injected clock: time moves only when the test says so."""

    def __init__(self, start: float = 128.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def run_frames(monitor, clock, count, period, latency=None, stage=None):
    for _ in range(count):
        clock.advance(period)
        if stage is not None:
            monitor.record(stage, period / 2)
        monitor.frame_done(period if latency is None else latency)


# -- percentiles ---------------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    [3.0],
    [1.0, 2.0],
    [5.0, 1.0, 4.0, 2.0, 3.0],
    [0.010, 0.012, 0.011, 0.5, 0.013, 0.009, 0.010, 0.011, 0.012, 0.3],
    list(np.random.default_rng(1).exponential(0.02, 1000)),
])
def test_percentiles_match_numpy_on_known_samples(values):
    ordered = sorted(values)
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
        assert percentile(ordered, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-15)
    stats = describe(values)
    assert stats["count"] == len(values)
    assert stats["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    assert stats["max"] == max(values)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=300),
       st.floats(min_value=0.0, max_value=100.0))
def test_percentile_matches_numpy_property(values, q):
    assert percentile(sorted(values), q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-12)


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    with pytest.raises(ValueError, match="0..100"):
        percentile([1.0], 101)
    assert describe([])["p95"] is None


def test_stage_stats_are_numpy_percentiles_over_the_last_samples():
    monitor = PerformanceMonitor(samples=1000)
    values = np.random.default_rng(7).gamma(2.0, 0.01, 5000)
    for value in values:
        monitor.record("swap", float(value))
    stats = monitor.summary()["stages"]["swap"]
    window = values[-1000:]
    assert stats["count"] == 5000 and stats["window"] == 1000
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert stats[key] == pytest.approx(float(np.percentile(window, q)), rel=1e-12)
    assert stats["max"] == pytest.approx(float(window.max()))
    assert stats["mean"] == pytest.approx(float(window.mean()), rel=1e-12)
    assert stats["sum"] == pytest.approx(float(values.sum()), rel=1e-9)


@pytest.mark.parametrize("frames", [5, 1024, 1500, 8191, 8192, 8193, 10000, 16384 + 700])
def test_end_to_end_latency_covers_the_newest_samples(frames):
    monitor = PerformanceMonitor(samples=1024)
    latencies = np.random.default_rng(frames).exponential(0.03, frames)
    for value in latencies:
        monitor.frame_done(float(value))
    stats = monitor.summary()["latency"]
    newest = latencies[-1024:]
    assert stats["count"] == len(newest) and stats["sum"] == pytest.approx(latencies.sum(), rel=1e-9)
    for key, q in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert stats[key] == pytest.approx(float(np.percentile(newest, q)), rel=1e-12)
    assert stats["max"] == newest.max() and stats["mean"] == pytest.approx(newest.mean(), rel=1e-12)


def test_default_window_keeps_at_least_1000_samples():
    monitor = PerformanceMonitor()
    for index in range(3000):
        monitor.record("detect", float(index))
        monitor.frame_done(float(index))
    summary = monitor.summary()
    assert summary["stages"]["detect"]["window"] >= 1000
    assert summary["latency"]["count"] >= 1000
    assert summary["latency"]["max"] == 2999.0


# -- FPS -----------------------------------------------------------------------------------

def test_fps_is_right_from_the_first_frame():
    clock = FakeClock()
    monitor = PerformanceMonitor(window=2.0, clock=clock)
    run_frames(monitor, clock, 10, 0.1)
    assert monitor.summary()["fps"] == pytest.approx(10.0)  # 10 frames over 1 s, not 10 / 2 s window
    fresh = PerformanceMonitor(window=2.0, clock=clock)
    run_frames(fresh, clock, 1, 0.04)
    assert fresh.fps() == pytest.approx(25.0)


def test_fps_ignores_start_up_time_before_the_first_frame():
    clock = FakeClock()
    monitor = PerformanceMonitor(window=5.0, clock=clock)
    clock.advance(3.0)  # loading models
    assert monitor.mark("models loaded") == pytest.approx(3.0)
    assert monitor.fps() == 0.0
    run_frames(monitor, clock, 5, 0.04)
    summary = monitor.summary()
    assert summary["fps"] == pytest.approx(25.0)
    assert summary["fps_mean"] == pytest.approx(25.0)
    assert summary["marks"] == {"models loaded": pytest.approx(3.0)}


def test_fps_slides_with_the_window_and_falls_to_zero_on_a_stall():
    clock = FakeClock()
    monitor = PerformanceMonitor(window=2.0, clock=clock)
    run_frames(monitor, clock, 40, 0.125)  # 5 s at 8 fps (binary fractions keep the clock exact)
    assert monitor.fps() == pytest.approx(8.0)
    run_frames(monitor, clock, 32, 0.0625)  # 2 s at 16 fps: the window now holds only these
    assert monitor.fps() == pytest.approx(16.0)
    clock.advance(1.0)
    assert monitor.fps() == pytest.approx(8.0)  # 16 frames in the last 2 s
    clock.advance(1.5)
    assert monitor.fps() == 0.0


@pytest.mark.parametrize("frames", [8191, 8192, 8193, 12000, 20000])
def test_fps_around_and_beyond_the_frame_log_capacity(frames):
    clock = FakeClock()
    monitor = PerformanceMonitor(window=10.0, clock=clock)
    run_frames(monitor, clock, frames, 0.0009765625)  # 1024 fps; the frame log keeps 8192 frames
    assert monitor.fps() == pytest.approx(1024.0, rel=1e-3)
    clock.advance(9.0)
    expected = min(frames, 1024)  # the last second of frames is still inside the 10 s window
    assert monitor.fps() == pytest.approx(expected / min(10.0, frames / 1024.0 + 9.0), rel=1e-3)


# -- counters, stages, marks ---------------------------------------------------------------

def test_counters_and_stage_context_manager():
    clock = FakeClock()
    monitor = PerformanceMonitor(clock=clock)
    monitor.frame_dropped()
    monitor.frame_dropped(3)
    monitor.frame_late(2)
    monitor.frame_failed()
    with monitor.stage("swap"):
        clock.advance(0.25)
    with pytest.raises(RuntimeError):
        with monitor.stage("swap"):
            clock.advance(0.5)
            raise RuntimeError("model failed")
    summary = monitor.summary()
    assert (summary["dropped"], summary["late"], summary["failed"], summary["frames"]) == (4, 2, 1, 0)
    swap = summary["stages"]["swap"]
    assert swap["count"] == 2 and swap["max"] == pytest.approx(0.5) and swap["p50"] == pytest.approx(0.375)
    assert summary["latency"]["p95"] is None and summary["fps"] == 0.0
    assert summary["system"] is None
    assert monitor.stage_names() == ["swap"]
    light = monitor.summary(stages=False)
    assert light["stages"] == {} and light["dropped"] == 4


def test_summary_is_plain_json_ready_data():
    import json

    monitor = PerformanceMonitor()
    monitor.record("detect", 0.01)
    monitor.frame_done(0.02)
    monitor.mark("ready")
    text = json.dumps(monitor.summary(), allow_nan=False)
    assert json.loads(text)["stages"]["detect"]["count"] == 1


def test_bad_stage_names_and_too_many_stages():
    monitor = PerformanceMonitor()
    with pytest.raises(TypeError, match="stage name must be a str"):
        monitor.record(3, 0.1)
    with pytest.raises(TypeError, match=r"record\('swap', seconds\): seconds must be a number, got str"):
        monitor.record("swap", "0.1")
    with pytest.raises(TypeError, match="frame_done.*got NoneType"):
        monitor.frame_done(None)
    assert monitor.summary()["frames"] == 0 and monitor.summary()["stages"]["swap"]["count"] == 0
    for index in range(63):  # "swap" above is the 64th
        monitor.record("s%d" % index, 0.1)
    with pytest.raises(ValueError, match="too many stages"):
        monitor.record("one more", 0.1)
    with pytest.raises(ValueError, match="window and interval"):
        PerformanceMonitor(window=0)


def test_memory_stays_bounded():
    monitor = PerformanceMonitor(samples=100)
    ring_before = monitor._stages.get("x")
    for _ in range(20000):
        monitor.record("x", 0.1)
        monitor.frame_done(0.1)
    ring = monitor._stages["x"]
    assert ring_before is None and len(ring.values) == 100
    assert len(monitor._frames.times) == monitor._frames.capacity


def test_reset_forgets_samples_but_keeps_marks():
    clock = FakeClock()
    monitor = PerformanceMonitor(clock=clock)
    monitor.mark("models loaded")
    run_frames(monitor, clock, 10, 0.1, stage="swap")
    monitor.frame_dropped()
    monitor.reset()
    summary = monitor.summary()
    assert summary["frames"] == 0 and summary["dropped"] == 0 and summary["fps"] == 0.0
    assert summary["stages"]["swap"]["count"] == 0 and "models loaded" in summary["marks"]
    assert monitor.timeline() == []
    run_frames(monitor, clock, 4, 0.05)
    assert monitor.fps() == pytest.approx(20.0)


@pytest.mark.timeout(60)
def test_record_is_thread_safe():
    monitor = PerformanceMonitor(samples=1000)
    per_thread = 20000

    def work(value):
        for _ in range(per_thread):
            monitor.record("swap", value)
            monitor.frame_done(value)

    threads = [threading.Thread(target=work, args=(0.001 * (k + 1),)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    summary = monitor.summary()
    assert summary["stages"]["swap"]["count"] == 4 * per_thread
    assert summary["frames"] == 4 * per_thread
    assert summary["stages"]["swap"]["sum"] == pytest.approx(per_thread * 0.010, rel=1e-9)


# -- timeline ------------------------------------------------------------------------------

def test_timeline_rows_per_interval_with_stalls():
    clock = FakeClock()
    monitor = PerformanceMonitor(interval=1.0, clock=clock)
    clock.advance(2.0)  # start-up: no rows before the first frame
    run_frames(monitor, clock, 8, 0.125, stage="swap")  # 1 s at 8 fps
    run_frames(monitor, clock, 16, 0.0625, latency=0.25)  # 1 s at 16 fps
    monitor.frame_dropped(2)  # at t=4.0: still in the second interval
    clock.advance(0.5)
    monitor.frame_late()
    clock.advance(2.5)  # stall; intervals are (start, end], so the one ending now is still open
    assert [row["fps"] for row in monitor.timeline()] == [8.0, 16.0, 0.0, 0.0]
    clock.advance(0.001)
    rows = monitor.timeline()
    assert [row["frames"] for row in rows] == [8, 16, 0, 0, 0]
    assert [row["fps"] for row in rows] == [8.0, 16.0, 0.0, 0.0, 0.0]
    assert rows[0]["time"] == pytest.approx(3.0) and rows[-1]["time"] == pytest.approx(7.0)
    assert rows[0]["p95"] == pytest.approx(0.125) and rows[1]["p50"] == pytest.approx(0.25)
    assert [row["dropped"] for row in rows] == [0, 2, 0, 0, 0]
    assert [row["late"] for row in rows] == [0, 0, 1, 0, 0]
    assert rows[2]["p95"] is None
    assert rows[0]["stages"]["swap"]["count"] == 8
    assert rows[0]["stages"]["swap"]["p95"] == pytest.approx(0.0625)


def test_timeline_is_bounded():
    clock = FakeClock()
    monitor = PerformanceMonitor(interval=1.0, timeline_length=10, clock=clock)
    run_frames(monitor, clock, 1, 0.1)
    clock.advance(1000.0)
    rows = monitor.timeline()
    assert len(rows) == 10 and rows[-1]["time"] == pytest.approx(1000.0, abs=1.0)


# -- lifecycle and imports -----------------------------------------------------------------

@pytest.mark.timeout(30)
def test_monitor_owns_its_sampler(no_thread_leak):
    with PerformanceMonitor(sample_system=0.02) as monitor:
        assert monitor.sampler is not None and monitor.sampler.running
        monitor.sampler.sample_once()
        system = monitor.summary()["system"]
        assert system["process_rss"] > 10 << 20  # a Python process with numpy: tens of MB
    assert not monitor.sampler.running
    monitor.close()  # idempotent


def test_import_is_light():
    code = ("import sys, dfl_perf.monitor as m; m.PerformanceMonitor().record('a', 1.0);"
            "print(sorted(k for k in ('psutil', 'pynvml', 'cv2', 'numpy') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert out.stdout.strip() == "[]"
