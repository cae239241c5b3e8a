"""One benchmark run in a fresh process: ``python -m dfl_perf.benchmark.worker SPEC.json OUT.json``.

Each mode runs alone in its own process so that its peak RSS, thread pools and caches are its own.
The spec names the mode ('baseline', 'optimized' or 'startup'), the frames file and the workload.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Dict

import numpy as np

from dfl_perf.benchmark.measure import allocations_per_frame, peak_rss_bytes
from dfl_perf.facepipe.workload import (
    BaselineRunner,
    OptimizedRunner,
    RunStats,
    Workload,
    paced_frames,
    run_live_latest,
)


def _stats_dict(stats: RunStats) -> Dict[str, Any]:
    return {"frames": stats.frames, "seconds": stats.seconds, "fps": stats.fps, "not_done": stats.not_done,
            "latency": stats.latency_percentiles(), "timeline": stats.timeline()}


def _live_dict(stats: RunStats, spec: Dict[str, Any]) -> Dict[str, Any]:
    offered = stats.frames + stats.not_done
    return {"camera_fps": spec["live_fps"], "seconds": spec["live_seconds"], "offered": offered,
            "done": stats.frames, "fps": stats.frames / spec["live_seconds"], "latency": stats.latency_percentiles()}


def _overload(runner: OptimizedRunner, frames: np.ndarray, spec: Dict[str, Any], capacity: float) -> Dict[str, Any]:
    """Live at ``overload`` x ``capacity`` FPS offered: fixed quality, then holding that rate as the target."""
    rate, seconds = spec["overload"] * capacity, spec["live_seconds"]
    out: Dict[str, Any] = {"factor": spec["overload"], "offered_fps": rate, "seconds": seconds}
    for mode, target in (("fixed", None), ("adaptive", rate)):
        with OptimizedRunner(runner.workload, spec["provider"], cache=runner.cache, live=True,
                             deadline=spec["live_deadline"], target_fps=target) as live:
            live.run(frames[: spec["warmup"]])  # its worker plan, outside the measured run
            stats = live.run(paced_frames(frames, rate, seconds))
        out[mode] = {"fps": stats.frames / seconds, "done": stats.frames, "lost": stats.not_done,
                     "latency": stats.latency_percentiles(), "settings": stats.adaptive.get("settings"),
                     "changes": [(c["window"], c["knob"], c["new"]) for c in stats.adaptive.get("changes", [])]}
    return out


def _baseline(spec: Dict[str, Any], frames: np.ndarray) -> Dict[str, Any]:
    runner = BaselineRunner(Workload(**spec["workload"]), spec["provider"])
    runner.run(frames[: spec["warmup"]])
    stats = runner.run(frames)
    out = _stats_dict(stats)
    out["peak_rss"] = peak_rss_bytes()
    out["session_seconds"] = runner.session_seconds
    n = min(spec["trace_frames"], len(frames))
    out["alloc_per_frame"] = allocations_per_frame(lambda i: runner.process(frames[i]), n)
    if spec["live_seconds"] > 0:
        out["live"] = _live_dict(run_live_latest(runner.process, frames, spec["live_fps"], spec["live_seconds"]), spec)
    return out


def _optimized(spec: Dict[str, Any], frames: np.ndarray) -> Dict[str, Any]:
    from dfl_perf.devices import cpu_budget
    from dfl_perf.facepipe.workload import FrameItem
    from dfl_perf.processor import measure_stages

    with OptimizedRunner(Workload(**spec["workload"]), spec["provider"], max_queue=spec["max_queue"]) as runner:
        runner.run(frames[: spec["warmup"]])
        stats = runner.run(frames)
        out = _stats_dict(stats)
        out["peak_rss"] = peak_rss_bytes()
        out["session_seconds"] = runner.session_seconds
        out["swap_workers"] = runner.swap_workers
        out["workers"] = runner.workers
        blob = runner._detect_state()
        stages = [("detect", lambda item: runner.detect(item, blob)), ("swap", runner.swap), ("merge", runner.merge)]
        n = min(spec["trace_frames"], len(frames))
        _, cpu = measure_stages(stages, (FrameItem(i, frames[i]) for i in range(n)), finish=runner.release)
        budget = cpu_budget()
        out["stage_cpu_seconds"] = cpu
        out["bound_fps"] = budget / max(sum(cpu.values()), 1e-9)

        def one(i: int) -> None:
            item = runner.merge(runner.swap(runner.detect(FrameItem(i, frames[i]), blob)))
            runner.release(item)

        one(0)  # first use of the sequential path's pooled shapes is not steady state
        out["alloc_per_frame"] = allocations_per_frame(one, n)
        if spec["live_seconds"] > 0:
            with OptimizedRunner(runner.workload, spec["provider"], cache=runner.cache, live=True,
                                 deadline=spec["live_deadline"]) as live:
                live.run(frames[: spec["warmup"]])  # its worker plan, outside the measured run
                live_stats = live.run(paced_frames(frames, spec["live_fps"], spec["live_seconds"]))
            out["live"] = _live_dict(live_stats, spec)
            if spec.get("overload"):
                out["overload"] = _overload(runner, frames, spec, out["fps"])
    return out


def _startup(spec: Dict[str, Any], frames: np.ndarray) -> Dict[str, Any]:
    """Session creation for the DFM: DFL-style, tuned cold or disk-cached, and an in-process cache hit."""
    from dfl_perf.sessions import ModelCache, SessionConfig, create_session

    workload = Workload(**spec["workload"])
    path = workload.dfm_path()
    t0 = time.perf_counter()
    create_session(path, SessionConfig.dfl_default(spec["provider"]))
    t1 = time.perf_counter()
    cache = ModelCache(max_models=2)
    config = SessionConfig.tuned(threads=1, providers=[spec["provider"]]).replace(disk_cache=True)
    cache.get(path, config)
    t2 = time.perf_counter()
    cache.get(path, config)
    t3 = time.perf_counter()
    return {"dfl_create": t1 - t0, "tuned_create": t2 - t1, "cache_hit": t3 - t2}


MODES = {"baseline": _baseline, "optimized": _optimized, "startup": _startup}


def main(argv: Any = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(open(argv[0]).read())
    frames = np.load(spec["frames_path"], mmap_mode=None)
    result = MODES[spec["mode"]](spec, frames)
    result["mode"] = spec["mode"]
    result["frames_bytes"] = int(frames.nbytes)  # held by both modes: part of each peak RSS
    with open(argv[1], "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
