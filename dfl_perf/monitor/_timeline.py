"""Timeline: one row of statistics per interval, rolled at the first event after an interval ends."""

from __future__ import annotations

import collections
import math
from typing import Any, Deque, Dict, List, Optional

from .stats import SampleRing, describe

_ZERO_COUNTS: Dict[str, Any] = {"frames": 0, "dropped": 0, "late": 0, "failed": 0, "stages": {}}


class Timeline:
    """Bounded rows of per-interval FPS, latency, counters and system state (guarded by the caller)."""

    def __init__(self, interval: float, length: int) -> None:
        self.interval = interval
        self.rows: Deque[Dict[str, Any]] = collections.deque(maxlen=length)
        self.next_roll = float("inf")  # end of the open interval; inf before the first frame
        self._start = 0.0
        self._before: Dict[str, Any] = _ZERO_COUNTS

    def begin(self, origin: float, start: float) -> None:
        """Open the first interval at ``origin``; row times are reported relative to ``start``.

        The first row also holds whatever came before the first frame (warm-up samples, drops).
        """
        self.next_roll = origin + self.interval
        self._start = start
        self._before = _ZERO_COUNTS

    def clear(self) -> None:
        self.rows.clear()
        self.next_roll = float("inf")
        self._before = _ZERO_COUNTS

    def roll(self, now: float, counts: Dict[str, Any], latencies: SampleRing, newest: int,
             stages: Dict[str, SampleRing], system: Optional[Dict[str, Any]]) -> None:
        """Close the interval ending at ``next_roll`` (and any empty ones up to ``now``).

        ``counts``: lifetime counters now; ``latencies``: the end-to-end ring (read as is: the caller
        holds its lock); at most ``newest`` of its samples describe a row.
        """
        before = self._before
        new_frames = counts["frames"] - before["frames"]
        latency = describe(latencies.last(min(new_frames, newest)))
        row: Dict[str, Any] = {
            "time": self.next_roll - self._start,
            "frames": new_frames,
            "fps": new_frames / self.interval,
            "p50": latency["p50"], "p95": latency["p95"], "p99": latency["p99"], "max": latency["max"],
            "dropped": counts["dropped"] - before["dropped"],
            "late": counts["late"] - before["late"],
            "failed": counts["failed"] - before["failed"],
            "stages": self._stage_rows(before["stages"], counts["stages"], stages),
            "system": system,
        }
        self.rows.append(row)
        self._before = counts
        self.next_roll += self.interval
        self._add_idle_rows(now, row)

    @staticmethod
    def _stage_rows(before: Dict[str, int], after: Dict[str, int],
                    stages: Dict[str, SampleRing]) -> Dict[str, Dict[str, Any]]:
        rows = {}
        for name, count in after.items():
            new = count - before.get(name, 0)
            ring = stages[name]
            with ring.lock:
                values = ring.last(min(new, ring.capacity))
            stats = describe(values)
            rows[name] = {"count": new, "p50": stats["p50"], "p95": stats["p95"]}
        return rows

    def _add_idle_rows(self, now: float, last: Dict[str, Any]) -> None:
        """Rows for whole intervals that passed without any event (a stall shows as fps 0)."""
        missed = int(math.ceil((now - self.next_roll) / self.interval)) if now > self.next_roll else 0
        limit = self.rows.maxlen or 0
        if missed > limit:
            self.next_roll += (missed - limit) * self.interval
            missed = limit
        for _ in range(missed):
            self.rows.append({
                "time": self.next_roll - self._start, "frames": 0, "fps": 0.0,
                "p50": None, "p95": None, "p99": None, "max": None, "dropped": 0, "late": 0, "failed": 0,
                "stages": {name: {"count": 0, "p50": None, "p95": None} for name in last["stages"]},
                "system": last["system"],
            })
            self.next_roll += self.interval

    def snapshot(self) -> List[Dict[str, Any]]:
        return list(self.rows)
