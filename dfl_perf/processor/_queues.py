"""The processor's queues: the entry and stage queues (bounded FIFOs) and the output buffer.

Each queue is a deque guarded by its own lock; callers use its methods, never its fields. Threads
that wait on a queue are counted (``_Waiters``), so a put or a take notifies only when someone
waits: on the hot path a frame costs one uncontended lock round-trip per hop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ._types import FrameResult, FrameStatus, resolve

__all__ = ["StageQueue", "EntryQueue", "OutputBuffer", "QueueClosed", "TIMED_OUT"]

_log = logging.getLogger("dfl_perf.processor")
_DONE, _DROPPED, _LATE, _ERROR = FrameStatus.DONE, FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR
TIMED_OUT = object()  # OutputBuffer.take: nothing arrived in time (None means: finished and empty)


class QueueClosed(Exception):
    """``EntryQueue.offer``: the queue is closed (it was, or it closed while the offer waited for room)."""


class _Waiters:
    """A Condition on a queue's lock and the number of threads waiting on it. Use with the lock held.

    ``wake`` does nothing when none waits; hot paths test ``count`` first and skip the call.
    """

    __slots__ = ("_condition", "count")

    def __init__(self, lock: threading.Lock) -> None:
        self._condition = threading.Condition(lock)
        self.count = 0

    def wait(self, timeout: Optional[float] = None) -> None:
        self.count += 1
        try:
            self._condition.wait(timeout)
        finally:
            self.count -= 1

    def wake(self, n: int = 1) -> None:
        if self.count:
            self._condition.notify(n)

    def wake_all(self) -> None:
        if self.count:
            self._condition.notify_all()


class StageQueue:
    """Bounded FIFO feeding one stage's workers.

    ``capacity`` may be changed at any time (a stage sizes its own queue to its measured cost).
    ``cancelled`` is set by ``cancel``; a worker reads it without the lock to drop what it holds.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.cancelled = False
        self._items: Deque[FrameResult] = deque()
        self._lock = threading.Lock()
        self._workers = _Waiters(self._lock)  # waiting for frames
        self._putters = _Waiters(self._lock)  # waiting for room
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def take(self, workers: int, limit: int) -> Optional[List[FrameResult]]:
        """Up to ``limit`` frames (a fair share when several workers), or None once closed and empty."""
        with self._lock:
            items = self._items
            while not items:
                if self._closed:
                    return None
                self._workers.wait()
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
            if self._putters.count:
                self._putters.wake(n)
            return batch

    def put_many(self, recs: List[FrameResult]) -> bool:
        """Append a batch, waiting while full (back-pressure); False when cancelled (frames not taken)."""
        with self._lock:
            while len(self._items) >= self.capacity and not self.cancelled:
                self._putters.wait()
            if self.cancelled:
                return False
            self._items.extend(recs)
            if self._workers.count:
                self._workers.wake(len(recs))
            return True

    def close(self) -> None:
        """No more frames: workers finish what is queued, then leave."""
        with self._lock:
            self._closed = True
            self._workers.wake_all()
            self._putters.wake_all()

    def cancel(self, on_dropped: Callable[[List[FrameResult]], None]) -> None:
        """Close and empty the queue; the waiting frames, decided DROPPED, go to ``on_dropped``,
        called with the lock held so that no worker can finish the stream before they are handed over."""
        with self._lock:
            self._closed = True
            self.cancelled = True
            if self._items:
                now = time.perf_counter()
                dropped = [resolve(rec, _DROPPED, now) for rec in self._items]
                self._items.clear()
                on_dropped(dropped)
            self._workers.wake_all()
            self._putters.wake_all()


class EntryQueue(StageQueue):
    """The first stage's queue: new frames get their ids here and meet the drop policy.

    ``policy``: 'oldest' drops the oldest waiting frame for a new one, 'newest' refuses the new one,
    'block' waits for room. A dropped frame's record goes to ``on_dropped`` while the lock is held,
    so that ``close()`` cannot end the stream before it arrives.
    """

    def __init__(self, capacity: int, policy: str, on_dropped: Callable[[FrameResult], None]) -> None:
        super().__init__(capacity)
        self.policy = policy
        self._on_dropped = on_dropped
        self._next_id = 0  # ids are 0, 1, 2...: the next id is also the count of frames offered

    @property
    def offered(self) -> int:
        with self._lock:
            return self._next_id

    def offer(self, frame: Any, meta: Any, timeout: Optional[float]) -> Tuple[FrameResult, Optional[FrameResult]]:
        """(the new frame's record, the record dropped for it or None): the evicted oldest frame, or the
        new frame itself when refused ('newest' when full, 'block' after ``timeout`` seconds).

        Raises QueueClosed when the queue is closed, also while waiting for room.
        """
        with self._lock:
            if self._closed:
                raise QueueClosed()
            items = self._items
            dropped = None
            refused = False
            if len(items) >= self.capacity:
                if self.policy == "oldest":
                    dropped = items.popleft()
                elif self.policy == "newest":
                    refused = True
                else:
                    refused = not self._wait_for_room(timeout)
            rec = FrameResult(self._next_id, frame, meta, time.perf_counter())
            self._next_id += 1
            if refused:
                dropped = rec
            else:
                items.append(rec)
                if self._workers.count:
                    self._workers.wake()
            if dropped is not None:
                self._on_dropped(resolve(dropped, _DROPPED, rec.queued))
            return rec, dropped

    def _wait_for_room(self, timeout: Optional[float]) -> bool:
        """Block policy, lock held: wait until there is room; False after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise QueueClosed()
            if len(self._items) < self.capacity:
                return True
            remaining = None if end is None else end - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._putters.wait(remaining)


class OutputBuffer:
    """Reorder buffer plus the queue of results ready for the reader; the consumer side of a Pipeline.

    At most ``capacity`` unread results hold an output. Beyond it, live mode drops the output of the
    oldest unread processed results (each is decided again, DROPPED, and still reaches the reader in
    its place: every frame id yields exactly one result); otherwise a last-stage worker waits for the
    reader (back-pressure). A result is counted, and the monitor told, when it reaches the user:
    taken by ``take`` or passed to ``on_result``.
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
        self._lock = threading.Lock()
        self._readers = _Waiters(self._lock)  # waiting for a result
        self._putters = _Waiters(self._lock)  # last-stage workers waiting for the reader (block mode)
        self._pending: Dict[int, FrameResult] = {}  # ordered: arrived before an earlier id
        self._next_id = 0
        self._ready: Deque[FrameResult] = deque()
        self._held: Deque[FrameResult] = deque()  # the DONE results in _ready, in the same order
        self._unbounded = False
        self._finished = False
        self._delivering = False
        self._counts = {_DONE: 0, _DROPPED: 0, _LATE: 0, _ERROR: 0}
        self._dropped_output = 0
        self._callback_errors = 0

    # -- producer side (workers, the entry) -----------------------------------------------------
    def put(self, recs: List[FrameResult], *, wait_for_reader: bool = False, deliver: bool = True) -> None:
        """Hand decided frames over. ``wait_for_reader``: a last-stage worker, which waits while
        ``capacity`` outputs are unread (not in live mode). ``deliver=False``: the caller holds a queue
        lock, so on_result calls are left to ``deliver()`` or the next put."""
        claim = False
        with self._lock:
            added = self._add_ready(recs)
            if added and self._readers.count:
                self._readers.wake(added)
            if deliver and self.on_result is not None and not self._delivering:
                self._delivering = claim = True
            elif len(self._held) > self.capacity and not self._unbounded:
                if self.live:
                    self._drop_unread_outputs()
                elif wait_for_reader:
                    while len(self._held) > self.capacity and not self._unbounded:
                        self._putters.wait()
        if claim:
            self._deliver_loop()

    def deliver(self) -> None:
        """Pass ready results to on_result unless another thread already does."""
        if self.on_result is None:
            return
        with self._lock:
            if self._delivering or not self._ready:
                return
            self._delivering = True
        self._deliver_loop()

    def _add_ready(self, recs: List[FrameResult]) -> int:
        """Queue ``recs`` for the reader (ordered: once every earlier id is there); returns how many."""
        return self._make_ready(self._next_in_order(recs) if self.ordered else recs)

    def _make_ready(self, recs: List[FrameResult]) -> int:
        if recs:
            now = time.perf_counter()
            for rec in recs:
                rec.ready = now
                if rec.status is _DONE:
                    self._held.append(rec)
            self._ready.extend(recs)
        return len(recs)

    def _next_in_order(self, recs: List[FrameResult]) -> List[FrameResult]:
        """Park ``recs`` in the reorder buffer; take out the run of ids that follows the last one out."""
        pending = self._pending
        for rec in recs:
            pending[rec.id] = rec
        run = []
        rec = pending.pop(self._next_id, None)
        while rec is not None:
            run.append(rec)
            rec = pending.pop(rec.id + 1, None)
        self._next_id += len(run)
        return run

    def _drop_unread_outputs(self) -> None:
        """Live mode, over capacity: the oldest unread outputs go; their results stay, as DROPPED."""
        now = time.perf_counter()
        held = self._held
        while len(held) > self.capacity:
            resolve(held.popleft(), _DROPPED, now)
            self._dropped_output += 1

    def _deliver_loop(self) -> None:
        """Run by the one thread holding the delivery turn: pass ready frames to on_result in order."""
        try:
            while True:
                with self._lock:
                    if not self._ready:
                        self._delivering = False
                        return
                    batch = list(self._ready)
                    self._ready.clear()
                    self._held.clear()
                    for rec in batch:
                        self._counts[rec.status] += 1
                    self._putters.wake_all()
                for rec in batch:
                    if self.monitor is not None:
                        self._tell_monitor(rec)
                    try:
                        self.on_result(rec)
                    except Exception as exc:
                        with self._lock:
                            self._callback_errors += 1
                        _log.exception("on_result raised for frame %d", rec.id)
                        self._on_callback_error(exc)
        except BaseException:
            with self._lock:
                self._delivering = False
            raise

    # -- consumer side -------------------------------------------------------------------------
    def take(self, timeout: Optional[float]) -> Any:
        """Next ready frame; TIMED_OUT if none within ``timeout``; None once finished and empty."""
        with self._lock:
            ready = self._ready
            if not ready:
                end = None if timeout is None else time.monotonic() + timeout
                while not ready:
                    if self._finished:
                        return None
                    remaining = None if end is None else end - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return TIMED_OUT
                    self._readers.wait(remaining)
            rec = ready.popleft()
            if rec.status is _DONE:
                self._held.popleft()  # rec itself: _held is _ready's DONE results in order
                if self._putters.count:
                    self._putters.wake()
            self._counts[rec.status] += 1
        if self.monitor is not None:
            self._tell_monitor(rec)
        return rec

    def _tell_monitor(self, rec: FrameResult) -> None:
        monitor = self.monitor
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
        with self._lock:
            self._unbounded = True
            self._putters.wake_all()

    def finish(self) -> None:
        """Every worker has left: release what the reorder buffer holds and end the stream."""
        with self._lock:
            if self._pending:  # only if a frame id went missing (a bug); never strand the others
                _log.error("reorder buffer held %d frames at finish", len(self._pending))
                stranded = [self._pending.pop(fid) for fid in sorted(self._pending)]
                self._make_ready(stranded)
            self._finished = True
            self._unbounded = True
            deliver = self.on_result is not None and not self._delivering and bool(self._ready)
            if deliver:
                self._delivering = True
            self._readers.wake_all()
            self._putters.wake_all()
        if deliver:
            self._deliver_loop()

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return {
                "done": self._counts[_DONE],
                "dropped": self._counts[_DROPPED],
                "late": self._counts[_LATE],
                "error": self._counts[_ERROR],
                "ready": len(self._ready),
                "unread_outputs": len(self._held),
                "reorder": len(self._pending),
                "dropped_output": self._dropped_output,
                "callback_errors": self._callback_errors,
            }
