"""`dfl-perf benchmark` on a tiny workload: the report holds what users read, and the output
check fails when the optimized path changes the frames."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.benchmark import BenchmarkOptions, compare_outputs, run_benchmark  # noqa: E402
from dfl_perf.benchmark.report import format_table, plot  # noqa: E402

TINY = dict(resolution=(320, 240), duration=0.4, repeats=1, dfm_cost="5ms", warmup=2, trace_frames=4, live_seconds=1.0,
            progress=False)


@pytest.fixture(autouse=True)
def _cache(cache_dir):
    return cache_dir


@pytest.mark.timeout(300)
def test_benchmark_report(tmp_path):
    report = run_benchmark(BenchmarkOptions(**TINY))
    for mode in ("baseline", "optimized"):
        assert report[mode]["fps"] > 0
        # the child's own peak: above the frames it holds, far below a parent's carried-over peak
        assert report[mode]["frames_bytes"] == 12 * 320 * 240 * 3 < report[mode]["peak_rss"] < 1 << 30
        assert {"p50", "p95", "p99"} <= set(report[mode]["latency"])
        assert report[mode]["timeline"]
        live = report[mode]["live"]
        assert live["camera_fps"] == 30 and 0 < live["done"] <= live["offered"] and live["latency"]["p50"] > 0
    assert report["outputs_match"] is True
    assert report["output_check"]["frames_compared"] == report["workload"]["frames"] == 12
    assert report["speedup"] == pytest.approx(report["optimized"]["fps"] / report["baseline"]["fps"])
    assert report["compute_bound_fps"] > 0 and set(report["optimized"]["stage_cpu_ms"]) == {"detect", "swap", "merge"}
    assert report["session_start"]["cache_hit"] < report["session_start"]["tuned_cold"]
    assert report["machine"]["versions"]["onnxruntime"]
    load = report["optimized"]["overload"]  # live under load: offered above what the pipeline did, two ways
    assert load["offered_fps"] == pytest.approx(1.2 * report["optimized"]["fps"])  # one repeat: its own FPS
    assert load["fixed"]["fps"] > 0 and load["adaptive"]["fps"] > 0 and len(load["settings"]) == 1
    assert set(report["optimized"]["workers"]) == {"detect", "swap", "merge"}
    text = format_table(report)
    assert "live under load" in text and "holding the rate" in text
    assert "speedup" in text and "outputs_match True" in text and "of preloaded frames" in text
    per_frame = "%.1f kB" % (report["optimized"]["alloc_per_frame"] / 1e3)  # decimal units, like MB
    assert per_frame in text
    # plain JSON, no fallback: every value survives a strict round trip unchanged (NaN is not JSON)
    back = json.loads(json.dumps(report, allow_nan=False))
    assert back["speedup"] == report["speedup"] and back["outputs_match"] is True
    assert back["optimized"]["latency"] == report["optimized"]["latency"]
    assert back["workload"]["frames"] == 12 and back["machine"]["versions"] == report["machine"]["versions"]
    pytest.importorskip("matplotlib")
    plot(report, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").stat().st_size > 1000


@pytest.mark.timeout(300)
def test_output_check_catches_a_wrong_optimized_path(monkeypatch):
    from dfl_perf.facepipe import workload
    from dfl_perf.facepipe.clip import make_clip

    real_merge = workload.OptimizedRunner.merge

    def brighter(self, item):
        item = real_merge(self, item)
        np.add(item.output, 3, out=item.output, casting="unsafe")  # a "speed-up" that changes the frames
        return item

    monkeypatch.setattr(workload.OptimizedRunner, "merge", brighter)
    frames = np.stack(make_clip(size=(320, 240), frames=4).to_list())
    result = compare_outputs(frames, {"dfm_cost": "5ms"}, "CPUExecutionProvider")
    assert result["match"] is False and result["max_abs_diff"] >= 3


def test_quick_options_are_short():
    quick, default = BenchmarkOptions.quick(), BenchmarkOptions()

    def seconds_of_frames(o):  # per mode: every repeat runs the clip and the live phase
        return o.repeats * (o.duration + o.live_seconds)

    assert seconds_of_frames(quick) < seconds_of_frames(default)  # strictly: fails if quick == default
    assert quick.trace_frames < default.trace_frames
    assert quick.resolution == default.resolution and quick.model == default.model  # the same workload
    chosen = BenchmarkOptions.quick(resolution=(1280, 720))
    assert chosen.resolution == (1280, 720) and chosen.duration == quick.duration  # the user's choice wins


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork/exec carry-over of ru_maxrss is Linux's")
def test_peak_rss_of_a_child_does_not_count_its_parent():
    from dfl_perf.benchmark.measure import peak_rss_bytes

    ballast = np.ones(200 << 20, np.uint8)  # 200 MB resident in this (the parent) process
    assert peak_rss_bytes() >= ballast.nbytes
    code = "from dfl_perf.benchmark.measure import peak_rss_bytes; print(peak_rss_bytes())"
    child = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del ballast
    assert 1 << 20 < child < 100 << 20, "the child reported %d MB: its parent's peak, not its own" % (child >> 20)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon/RssFile are Linux's /proc/self/status")
def test_rss_split_sampler_sees_an_allocation_as_anonymous_and_stops(no_thread_leak):
    from dfl_perf.benchmark.measure import RssSplitSampler

    with RssSplitSampler(interval=0.001) as sampler:
        before = dict(sampler.peaks)
        ballast = np.ones(64 << 20, np.uint8)  # 64 MiB, every page touched
        deadline = time.monotonic() + 20  # the sampler thread may wait for a busy CPU: poll, no fixed sleep
        while sampler.peaks["anon"] < before["anon"] + (60 << 20) and time.monotonic() < deadline:
            time.sleep(0.01)
        del ballast
    assert sampler.peaks["anon"] >= before["anon"] + (60 << 20), (before, sampler.peaks)
    assert sampler.peaks["file"] >= before["file"] > 0
