"""Bounded sample rings and percentiles (numpy's default linear method, in pure Python)."""

from __future__ import annotations

import math
import threading
from array import array
from typing import Any, Dict, List, Optional, Sequence, Tuple

QUANTILES = (50.0, 95.0, 99.0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of an ascending, non-empty sequence.

    Same definition as ``numpy.percentile(values, q)`` (method "linear"): the value at virtual
    index ``(n - 1) * q / 100``, interpolated between its two neighbours.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError("percentile q must be within 0..100, got %r" % (q,))
    position = (n - 1) * (q / 100.0)
    below = int(math.floor(position))
    above = min(below + 1, n - 1)
    fraction = position - below
    low = sorted_values[below]
    high = sorted_values[above]
    if fraction >= 0.5:  # interpolate from the nearer end, as numpy does, for the same rounding
        return high - (high - low) * (1.0 - fraction)
    return low + (high - low) * fraction


def describe(values: Sequence[float]) -> Dict[str, Optional[float]]:
    """``{"count", "mean", "p50", "p95", "p99", "max"}`` of the values; None for each when empty."""
    ordered = sorted(values)
    return _describe_sorted(ordered, sum(ordered))


def _describe_sorted(ordered: Any, total: float) -> Dict[str, Optional[float]]:
    n = len(ordered)
    if n == 0:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    stats: Dict[str, Optional[float]] = {"count": n, "mean": float(total) / n}
    for q in QUANTILES:
        stats["p%d" % q] = float(percentile(ordered, q))
    stats["max"] = float(ordered[-1])
    return stats


def copy_ring(ring: SampleRing, newest: Optional[int] = None) -> Tuple[Any, int, float]:
    """(numpy copy of the newest ``newest`` kept samples (all by default), lifetime count, lifetime sum).

    Copied under the ring's lock; sorting a numpy copy is several times faster than sorting a list.
    """
    import numpy as np  # here, not at module import: only summaries need it

    with ring.lock:
        count, total, capacity = ring.count, ring.total, ring.capacity
        kept = min(count, capacity) if newest is None else min(newest, count, capacity)
        values = np.frombuffer(ring.values, dtype=np.float64)
        end = count % capacity if count >= capacity else count
        if kept <= end:
            data = values[end - kept:end].copy()
        else:
            data = np.concatenate((values[capacity - (kept - end):], values[:end]))
    return data, count, total


def describe_array(data: Any) -> Dict[str, Optional[float]]:
    """``describe`` for a numpy array (sorted in place)."""
    data.sort()
    return _describe_sorted(data, data.sum())


class SampleRing:
    """A fixed-size ring of float samples with a lifetime count and sum; thread-safe.

    ``add`` writes into a preallocated ``array('d')`` under the ring's lock: nothing grows per call.
    ``put`` is the same write for a caller that already holds the lock guarding the ring.
    """

    __slots__ = ("values", "capacity", "count", "total", "lock")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be >= 1, got %r" % (capacity,))
        self.values = array("d", bytes(8 * capacity))
        self.capacity = capacity
        self.count = 0
        self.total = 0.0
        self.lock = threading.Lock()

    def add(self, value: float) -> None:
        with self.lock:
            self.put(value)

    def put(self, value: float) -> int:
        """Write ``value`` into the next slot and return the slot. Call with the guarding lock held."""
        index = self.count % self.capacity
        self.values[index] = value  # TypeError for a non-number, before anything changed
        self.count += 1
        self.total += value
        return index

    def clear(self) -> None:
        with self.lock:
            self.count = 0
            self.total = 0.0

    def last(self, n: int) -> List[float]:
        """The newest ``min(n, kept)`` samples, oldest first. Call with ``lock`` held."""
        kept = min(n, self.count, self.capacity)
        if kept <= 0:
            return []
        end = self.count % self.capacity
        start = end - kept
        if start >= 0:
            return self.values[start:end].tolist()
        return self.values[start:].tolist() + self.values[:end].tolist()

    def snapshot(self) -> List[float]:
        """All kept samples, oldest first (takes the lock)."""
        with self.lock:
            return self.last(self.capacity)
