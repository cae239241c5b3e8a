"""``dfl-perf soak``: the optimized pipeline, live, for a long time; fails on leaks, decay or lost frames.

Frames of the generated clip arrive at a camera's rate (``fps``, default 60, faster than a 2-core
machine can swap, so frames are dropped as in live use). Every ``interval`` seconds the soak
samples RSS, threads, open file descriptors, FPS and p99 latency. After a warm-up it checks:

- memory: RSS at the end exceeds RSS after warm-up by more than ``rss_tolerance`` (bytes or a
  fraction of the warm RSS, whichever is larger);
- threads or descriptors: more at the end than after warm-up;
- FPS decay: the median FPS of the last third falls below ``fps_floor`` x that of the first third;
- accounting: submitted != done + dropped + late + error once closed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

__all__ = ["SoakOptions", "run_soak", "judge", "format_verdict"]


@dataclass
class SoakOptions:
    duration: float = 60.0
    fps: float = 60.0
    interval: float = 1.0
    warmup: Optional[float] = None  # default: 20% of the duration, at least 3 s
    resolution: tuple = (640, 480)
    dfm_cost: str = "20ms"
    deadline: float = 0.5
    rss_tolerance_bytes: int = 48 << 20
    rss_tolerance_fraction: float = 0.10
    fps_floor: float = 0.6


def _process_counts() -> Dict[str, int]:
    import psutil

    proc = psutil.Process()
    fds = proc.num_fds() if hasattr(proc, "num_fds") else proc.num_handles()
    return {"rss": int(proc.memory_info().rss), "threads": proc.num_threads(),
            "py_threads": threading.active_count(), "fds": int(fds)}


def _sample_loop(monitor: Any, samples: List[Dict[str, Any]], interval: float, stop: threading.Event,
                 t0: float) -> None:
    last_frames = 0
    last_t = time.perf_counter()
    while not stop.wait(interval):
        now = time.perf_counter()
        summary = monitor.summary(stages=False)
        frames = summary["frames"]
        row = {"t": now - t0, "fps": (frames - last_frames) / (now - last_t),
               "p99": summary["latency"].get("p99"), "frames": frames, "dropped": summary["dropped"],
               "late": summary["late"], "failed": summary["failed"]}
        row.update(_process_counts())
        samples.append(row)
        last_frames, last_t = frames, now


def _median(values: List[float]) -> float:
    import statistics

    return float(statistics.median(values)) if values else float("nan")


def judge(samples: List[Dict[str, Any]], accounting: Dict[str, int], options: SoakOptions) -> Dict[str, Any]:
    """The verdict over the samples after warm-up: ``{"passed": bool, "failures": [...], "figures": {...}}``."""
    warmup = options.warmup if options.warmup is not None else max(3.0, 0.2 * options.duration)
    steady = [s for s in samples if s["t"] >= warmup]
    failures: List[str] = []
    figures: Dict[str, Any] = {"warmup_seconds": warmup, "steady_samples": len(steady)}
    resolved = sum(accounting.get(k, 0) for k in ("done", "dropped", "late", "error"))
    figures["accounting"] = dict(accounting, resolved=resolved)
    if accounting.get("submitted", -1) != resolved:
        failures.append("frames unaccounted for: submitted %s, done+dropped+late+error %d"
                        % (accounting.get("submitted"), resolved))
    if len(steady) < 3:
        failures.append("too few samples after warm-up (%d): run longer than %.0f s" % (len(steady), warmup))
        return {"passed": not failures, "failures": failures, "figures": figures}
    head, tail = steady[:3], steady[-3:]
    rss0, rss1 = _median([s["rss"] for s in head]), _median([s["rss"] for s in tail])
    allowed = max(options.rss_tolerance_bytes, options.rss_tolerance_fraction * rss0)
    figures.update(rss_after_warmup=rss0, rss_end=rss1, rss_growth=rss1 - rss0, rss_allowed_growth=allowed)
    if rss1 - rss0 > allowed:
        failures.append("memory grew %.1f MB after warm-up (allowed %.1f MB)" % ((rss1 - rss0) / 2 ** 20, allowed / 2 ** 20))
    for key in ("threads", "fds"):
        start, end = head[0][key], max(s[key] for s in tail)
        figures["%s_after_warmup" % key], figures["%s_end" % key] = start, end
        if end > start:
            failures.append("%s grew from %d to %d" % (key, start, end))
    third = max(1, len(steady) // 3)
    fps0, fps1 = _median([s["fps"] for s in steady[:third]]), _median([s["fps"] for s in steady[-third:]])
    figures.update(fps_first_third=fps0, fps_last_third=fps1)
    if fps1 < options.fps_floor * fps0:
        failures.append("FPS decayed from %.1f to %.1f (floor %.0f%%)" % (fps0, fps1, 100 * options.fps_floor))
    p99 = [s["p99"] for s in steady if s["p99"] is not None]
    figures["p99_first_third"] = _median(p99[:third])
    figures["p99_last_third"] = _median(p99[-third:])
    return {"passed": not failures, "failures": failures, "figures": figures}


def run_soak(options: SoakOptions, progress: bool = True) -> Dict[str, Any]:
    """Run the soak; returns ``{"options", "samples", "accounting", "verdict"}``."""
    from dfl_perf.facepipe.clip import make_clip
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload, paced_frames
    from dfl_perf.monitor import PerformanceMonitor
    from dfl_perf.progress import ProgressBar

    frames = make_clip(size=tuple(options.resolution), frames=60).to_list()
    samples: List[Dict[str, Any]] = []
    stop = threading.Event()
    bar = ProgressBar("soak", options.duration, enabled=None if progress else False, unit="s", unit_scale=True)
    with PerformanceMonitor(window=max(1.0, options.interval)) as monitor, \
            OptimizedRunner(Workload(dfm_cost=options.dfm_cost), live=True, deadline=options.deadline,
                            monitor=monitor) as runner:
        runner.run(frames[:5])  # warm the sessions and pools before sampling
        t0 = time.perf_counter()
        sampler = threading.Thread(target=_sample_loop, args=(monitor, samples, options.interval, stop, t0),
                                   name="dfl_perf-soak-sampler", daemon=True)
        sampler.start()
        try:
            stats = runner.run(paced_frames(frames, options.fps, options.duration, stop),
                               sink=lambda i, f: bar.update(time.perf_counter() - t0))
        finally:
            stop.set()
            sampler.join()
            bar.close()
    accounting = {k: int(v) for k, v in stats.accounting.items() if k in
                  ("submitted", "done", "dropped", "late", "error", "in_flight")}
    return {"options": asdict(options), "samples": samples, "accounting": accounting,
            "verdict": judge(samples, accounting, options)}


def format_verdict(report: Dict[str, Any]) -> str:
    v, f = report["verdict"], report["verdict"]["figures"]
    lines = ["soak %s" % ("PASSED" if v["passed"] else "FAILED")]
    if "rss_after_warmup" in f:
        lines.append("RSS %.1f -> %.1f MB (allowed growth %.1f MB); threads %d -> %d; fds %d -> %d" % (
            f["rss_after_warmup"] / 2 ** 20, f["rss_end"] / 2 ** 20, f["rss_allowed_growth"] / 2 ** 20,
            f["threads_after_warmup"], f["threads_end"], f["fds_after_warmup"], f["fds_end"]))
        lines.append("FPS %.1f -> %.1f (first vs last third); p99 latency %.1f -> %.1f ms" % (
            f["fps_first_third"], f["fps_last_third"], 1000 * f["p99_first_third"], 1000 * f["p99_last_third"]))
    a = f["accounting"]
    lines.append("frames: submitted %s = done %s + dropped %s + late %s + error %s" % (
        a.get("submitted"), a.get("done"), a.get("dropped"), a.get("late"), a.get("error")))
    lines += ["FAIL: " + msg for msg in v["failures"]]
    return "\n".join(lines)
