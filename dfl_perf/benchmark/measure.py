"""Measurements the benchmark children take: peak RSS, per-frame allocations, per-stage CPU time."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any, Callable, Dict, List, Optional

import numpy as np

__all__ = ["peak_rss_bytes", "RssSplitSampler", "allocations_per_frame"]

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


def _rss_split() -> Optional[Dict[str, int]]:
    """This process's resident memory now, split: ``anon`` (its own allocations) and ``file``
    (mapped files: library code, memory-mapped weights). Linux only (None elsewhere)."""
    split: Dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("RssAnon:", "RssFile:")):
                    split["anon" if line.startswith("RssAnon") else "file"] = int(line.split()[1]) * 1024
    except OSError:
        return None
    return split if len(split) == 2 else None


class RssSplitSampler:
    """Sampled peaks of anonymous and file-backed RSS, from a thread, while the ``with`` block runs.

    The kernel keeps a high-water mark of the total only (``peak_rss_bytes``); the split shows
    which part a peak is: memory the process allocated, or pages of mapped files (shared library
    code, whose resident size also depends on how the page cache holds those files). A peak
    shorter than ``interval`` can be missed, so these are lower bounds. ``peaks`` is
    ``{"anon": bytes, "file": bytes}``, or None where ``/proc/self/status`` has no split.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peaks: Optional[Dict[str, int]] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        split = _rss_split()
        if split is not None:
            old = self.peaks or split
            self.peaks = {k: max(old[k], split[k]) for k in split}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RssSplitSampler:
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="rss-split-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


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
