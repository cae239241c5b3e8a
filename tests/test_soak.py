"""`dfl-perf soak`: the verdict rules on known samples (each rule can fail), and a short real soak."""

from __future__ import annotations

import pytest

from dfl_perf.soak import SoakOptions, format_verdict, judge

OK_ACCOUNTING = {"submitted": 100, "done": 60, "dropped": 38, "late": 2, "error": 0, "in_flight": 0}


def _samples(n=12, **changes):
    """One sample a second; each field a constant or a function of the sample's index."""
    fields = dict(rss=200 << 20, threads=10, fds=8, fps=20.0, p99=0.05)
    fields.update(changes)
    return [dict({k: (v(i) if callable(v) else v) for k, v in fields.items()}, t=float(i + 1)) for i in range(n)]


OPTS = SoakOptions(duration=12, warmup=2)


def test_steady_run_passes():
    verdict = judge(_samples(), OK_ACCOUNTING, OPTS)
    assert verdict["passed"], verdict["failures"]


def test_memory_growth_fails():
    verdict = judge(_samples(rss=lambda i: (200 << 20) + i * (10 << 20)), OK_ACCOUNTING, OPTS)
    assert not verdict["passed"] and "memory grew" in verdict["failures"][0]


def test_thread_and_fd_growth_fail():
    verdict = judge(_samples(threads=lambda i: 10 + (i > 8), fds=lambda i: 8 + (i > 9)), OK_ACCOUNTING, OPTS)
    assert {f.split()[0] for f in verdict["failures"]} == {"threads", "fds"}


def test_fps_decay_fails():
    verdict = judge(_samples(fps=lambda i: 20.0 if i < 6 else 8.0), OK_ACCOUNTING, OPTS)
    assert any("FPS decayed" in f for f in verdict["failures"])


def test_lost_frames_fail():
    verdict = judge(_samples(), dict(OK_ACCOUNTING, done=59), OPTS)
    assert any("unaccounted" in f for f in verdict["failures"])


def test_too_short_fails():
    verdict = judge(_samples(n=3), OK_ACCOUNTING, OPTS)
    assert any("too few samples" in f for f in verdict["failures"])


@pytest.mark.timeout(180)
def test_short_real_soak(cache_dir, no_thread_leak):
    pytest.importorskip("cv2")
    pytest.importorskip("onnxruntime")
    from dfl_perf.soak import run_soak

    report = run_soak(SoakOptions(duration=5, warmup=1, fps=60, dfm_cost="5ms"), progress=False)
    acc = report["accounting"]
    assert acc["submitted"] == acc["done"] + acc["dropped"] + acc["late"] + acc["error"]
    assert acc["done"] > 0 and len(report["samples"]) >= 4
    assert "soak" in format_verdict(report)
