"""Measurements the benchmark children take: peak RSS, per-frame allocations, per-stage CPU time."""

from __future__ import annotations

import gc
import sys
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np

__all__ = ["peak_rss_bytes", "allocations_per_frame", "stage_cpu_seconds"]

BIG_ALLOCATION = 64 * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (high-water mark), in bytes.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this program
    alone: ``ru_maxrss`` also counts the parent's RSS at fork (Linux keeps the larger across
    ``exec``), so a benchmark child started from a big parent would report the parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except ImportError:  # Windows
        import psutil

        info = psutil.Process().memory_info()
        return int(getattr(info, "peak_wset", info.rss))


def allocations_per_frame(process: Callable[[int], Any], frames: int) -> Dict[str, float]:
    """Python-side bytes a frame allocates, from tracemalloc (numpy reports its arrays to it).

    Per frame: the peak of traced memory with traces cleared just before it, i.e. the most the frame
    held at once beyond what existed before it (a lower bound on what it allocated). Returns the
    median, the max, and how many frames went over 64 KB.
    """
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    peaks: List[int] = []
    try:
        for i in range(frames):
            tracemalloc.clear_traces()
            base = tracemalloc.get_traced_memory()[0]
            process(i)
            peaks.append(max(0, tracemalloc.get_traced_memory()[1] - base))
    finally:
        tracemalloc.stop()
    values = np.asarray(peaks or [0])
    return {"median": float(np.median(values)), "max": float(values.max()),
            "frames_over_64k": int((values > BIG_ALLOCATION).sum()), "frames": len(peaks)}


def stage_cpu_seconds(stages: Sequence[Any], items: Sequence[Any]) -> Dict[str, float]:
    """Median single-thread CPU seconds per item for each stage, run one after another in this thread.

    ``stages`` are ``(name, fn)`` pairs; each stage's output is the next stage's input. CPU time of
    the calling thread (``time.thread_time``) is what a core spends, whatever else the machine does.
    """
    per_stage: Dict[str, List[float]] = {name: [] for name, _ in stages}
    for item in items:
        for name, fn in stages:
            t0 = time.thread_time()
            item = fn(item)
            per_stage[name].append(time.thread_time() - t0)
    return {name: float(np.median(v)) for name, v in per_stage.items()}
