"""The two queues of the processor: a bounded stage queue and the reorder/output buffer.

Both are a deque guarded by one lock with two Conditions on it. Waiters are counted so that a
put or a take notifies only when someone actually waits, and a batch of n items wakes at most n
workers: on the hot path a frame costs one uncontended lock round-trip per hop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional

from ._types import FrameResult, FrameStatus

__all__ = ["StageQueue", "OutputBuffer", "TIMED_OUT"]

_log = logging.getLogger("dfl_perf.processor")
_DONE, _DROPPED, _LATE, _ERROR = FrameStatus.DONE, FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR
TIMED_OUT = object()  # OutputBuffer.take: nothing arrived in time (None means: finished and empty)


class StageQueue:
    """Bounded FIFO feeding one stage's workers."""

    __slots__ = (
        "items",
        "capacity",
        "lock",
        "not_empty",
        "not_full",
        "idle",
        "putters",
        "closed",
        "cancelled",
    )

    def __init__(self, capacity: int) -> None:
        self.items: Deque[FrameResult] = deque()
        self.capacity = capacity
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.idle = 0  # workers asleep in not_empty; the notifier decrements (their waits are untimed)
        self.putters = 0  # threads asleep in not_full; each decrements itself (their waits may time out)
        self.closed = False  # no more puts: workers leave once it is empty
        self.cancelled = False  # close(drain=False) or a fatal error: queued frames are dropped

    def wake_workers(self, n: int) -> None:
        """Wake up to n idle workers; call with the lock held."""
        k = self.idle if self.idle < n else n
        self.idle -= k
        self.not_empty.notify(k)

    def take(self, workers: int, limit: int) -> Optional[List[FrameResult]]:
        """Up to ``limit`` frames (a fair share when several workers), or None once closed and empty."""
        with self.lock:
            items = self.items
            while not items:
                if self.closed:
                    return None
                self.idle += 1
                self.not_empty.wait()
            n = len(items)
            if workers > 1:
                n = n // workers or 1
            if n > limit:
                n = limit
            if n == 1:
                batch = [items.popleft()]
            elif n == len(items):
                batch = list(items)
                items.clear()
            else:
                batch = [items.popleft() for _ in range(n)]
            if self.putters:
                self.not_full.notify(n)
            return batch

    def put_many(self, recs: List[FrameResult]) -> bool:
        """Append a batch, waiting while full (back-pressure); False when cancelled (frames not taken)."""
        with self.lock:
            while len(self.items) >= self.capacity and not self.cancelled:
                self.putters += 1
                try:
                    self.not_full.wait()
                finally:
                    self.putters -= 1
            if self.cancelled:
                return False
            self.items.extend(recs)
            if self.idle:
                self.wake_workers(len(recs))
            return True

    def close(self) -> None:
        """No more frames: workers finish what is queued, then leave."""
        with self.lock:
            self.closed = True
            self.idle = 0
            self.not_empty.notify_all()
            self.not_full.notify_all()

    def cancel(self, on_dropped: Callable[[List[FrameResult]], None]) -> None:
        """Close and empty the queue; the waiting frames go to ``on_dropped``, called with the lock
        held so that no worker can finish the stream before they are handed over."""
        with self.lock:
            self.closed = True
            self.cancelled = True
            if self.items:
                dropped = list(self.items)
                self.items.clear()
                on_dropped(dropped)
            self.idle = 0
            self.not_empty.notify_all()
            self.not_full.notify_all()


class OutputBuffer:
    """Reorder buffer plus bounded ready queue; the consumer side of a Pipeline.

    Frames are counted (and the monitor told) when they reach the user: taken by ``take``, passed to
    ``on_result``, or discarded because the ready queue overflowed in live mode.
    """

    def __init__(
        self,
        ordered: bool,
        capacity: int,
        live: bool,
        monitor: Any,
        on_result: Optional[Callable[[FrameResult], Any]],
        on_callback_error: Callable[[BaseException], None],
    ) -> None:
        self.ordered = ordered
        self.capacity = capacity
        self.live = live
        self.monitor = monitor
        self.on_result = on_result
        self._on_callback_error = on_callback_error
        self.lock = threading.Lock()
        self.not_empty = threading.Condition(self.lock)
        self.not_full = threading.Condition(self.lock)
        self.pending: Dict[int, FrameResult] = {}
        self.next_id = 0
        self.ready: Deque[FrameResult] = deque()
        self.readers = 0
        self.putters = 0
        self.unbounded = False
        self.finished = False
        self.delivering = False
        self.counts = {_DONE: 0, _DROPPED: 0, _LATE: 0, _ERROR: 0}
        self.dropped_output = 0
        self.callback_errors = 0

    # -- producer side (workers, submit) ------------------------------------------------------
    def put(self, recs: List[FrameResult], wait: bool = False, deliver: bool = True) -> None:
        """Hand decided frames over. Over capacity, live mode drops unread results (light ones
        first); otherwise ``wait=True`` (a last-stage worker) waits for the reader: back-pressure.
        ``deliver=False`` (caller holds a queue lock) leaves on_result calls to ``deliver()``."""
        evicted = 0
        claim = False
        with self.lock:
            ready = self.ready
            before = len(ready)
            if self.ordered:
                self._reorder(recs)
            else:
                ready.extend(recs)
            if len(ready) > before:
                now = time.perf_counter()
                for i in range(before, len(ready)):
                    ready[i].ready = now
            if self.readers and len(ready) > before:
                self.not_empty.notify(len(ready) - before)
            if deliver and self.on_result is not None and not self.delivering:
                self.delivering = claim = True
            elif len(ready) > self.capacity and not self.unbounded:
                if self.live:
                    evicted = self._evict(len(ready) - self.capacity)
                elif wait:
                    while len(ready) > self.capacity and not self.unbounded:
                        self._wait_not_full()
        if evicted and self.monitor is not None:
            self.monitor.frame_dropped(evicted)
        if claim:
            self._deliver_loop()

    def deliver(self) -> None:
        """Pass ready results to on_result unless another thread already does."""
        if self.on_result is None:
            return
        with self.lock:
            if self.delivering or not self.ready:
                return
            self.delivering = True
        self._deliver_loop()

    def _reorder(self, recs: List[FrameResult]) -> None:
        pending = self.pending
        for rec in recs:
            pending[rec.id] = rec
        nid = self.next_id
        rec = pending.pop(nid, None)
        while rec is not None:
            self.ready.append(rec)
            nid += 1
            rec = pending.pop(nid, None)
        self.next_id = nid

    def _evict(self, n: int) -> int:
        """Drop n unread results: the oldest without output (dropped, late, failed) first, so that a
        burst of drops never pushes out a processed frame; then the oldest processed ones."""
        ready = self.ready
        light = [i for i, rec in enumerate(ready) if rec.status is not _DONE][:n]
        for i in reversed(light):
            del ready[i]
        for _ in range(n - len(light)):
            ready.popleft()
        self.counts[_DROPPED] += n
        self.dropped_output += n
        return n

    def _wait_not_full(self) -> None:
        self.putters += 1
        try:
            self.not_full.wait()
        finally:
            self.putters -= 1

    def _deliver_loop(self) -> None:
        """Run by the one thread holding the delivery turn: pass ready frames to on_result in order."""
        try:
            while True:
                with self.lock:
                    if not self.ready:
                        self.delivering = False
                        return
                    batch = list(self.ready)
                    self.ready.clear()
                    for rec in batch:
                        self.counts[rec.status] += 1
                    if self.putters:
                        self.not_full.notify_all()
                for rec in batch:
                    self._tell_monitor(rec)
                    try:
                        self.on_result(rec)
                    except Exception as exc:
                        with self.lock:
                            self.callback_errors += 1
                        _log.exception("on_result raised for frame %d", rec.id)
                        self._on_callback_error(exc)
        except BaseException:
            with self.lock:
                self.delivering = False
            raise

    # -- consumer side -------------------------------------------------------------------------
    def take(self, timeout: Optional[float]) -> Any:
        """Next ready frame; TIMED_OUT if none within ``timeout``; None once finished and empty."""
        with self.lock:
            ready = self.ready
            if not ready:
                end = None if timeout is None else time.monotonic() + timeout
                while not ready:
                    if self.finished:
                        return None
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return TIMED_OUT
                    self.readers += 1
                    try:
                        self.not_empty.wait(remaining)
                    finally:
                        self.readers -= 1
            rec = ready.popleft()
            self.counts[rec.status] += 1
            if self.putters:
                self.not_full.notify()
        if self.monitor is not None:
            self._tell_monitor(rec)
        return rec

    def _tell_monitor(self, rec: FrameResult) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        status = rec.status
        if status is _DONE:
            monitor.frame_done(rec.latency)
        elif status is _DROPPED:
            monitor.frame_dropped(1)
        elif status is _LATE:
            monitor.frame_late(1)
        else:
            monitor.frame_failed(1)

    # -- shutdown ------------------------------------------------------------------------------
    def unbind(self) -> None:
        """Lift the capacity (closing): a drain must never wait on a reader who has gone."""
        with self.lock:
            self.unbounded = True
            self.not_full.notify_all()

    def finish(self) -> None:
        """Every worker has left: release what the reorder buffer holds and end the stream."""
        with self.lock:
            if self.pending:  # only if a frame id went missing (a bug); never strand the others
                _log.error("reorder buffer held %d frames at finish", len(self.pending))
                for fid in sorted(self.pending):
                    self.ready.append(self.pending.pop(fid))
            self.finished = True
            self.unbounded = True
            deliver = self.on_result is not None and not self.delivering and bool(self.ready)
            if deliver:
                self.delivering = True
            self.not_empty.notify_all()
            self.not_full.notify_all()
        if deliver:
            self._deliver_loop()

    def snapshot(self) -> Dict[str, int]:
        with self.lock:
            return {
                "done": self.counts[_DONE],
                "dropped": self.counts[_DROPPED],
                "late": self.counts[_LATE],
                "error": self.counts[_ERROR],
                "ready": len(self.ready),
                "reorder": len(self.pending),
                "dropped_output": self.dropped_output,
                "callback_errors": self.callback_errors,
            }
