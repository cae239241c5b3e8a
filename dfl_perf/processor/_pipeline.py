"""Pipeline: stages linked by bounded queues, each with its own worker threads."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from ._queues import TIMED_OUT, EntryQueue, OutputBuffer, QueueClosed, StageQueue
from ._types import (
    FrameResult,
    FrameStatus,
    ProcessorClosed,
    Stage,
    Ticket,
    check_options,
    check_stages,
    resolve,
)

__all__ = ["Pipeline"]

_DONE, _DROPPED, _LATE, _ERROR = FrameStatus.DONE, FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR
_SLOW_ITEM_S = 200e-6  # a stage slower than this per frame takes one frame at a time
_BATCH_WORK_S = 2e-3  # a cheap stage takes a batch worth about this much work per lock round-trip
_MAX_BATCH = 64


class _WorkerCounts:
    """What one worker thread did; written only by that worker, summed by ``stats()``."""

    __slots__ = ("processed", "late", "errors", "busy_seconds")

    def __init__(self) -> None:
        self.processed = 0
        self.late = 0
        self.errors = 0
        self.busy_seconds = 0.0


def _batch_limit(seconds_per_item: float) -> int:
    if seconds_per_item > _SLOW_ITEM_S:
        return 1
    return max(1, min(_MAX_BATCH, int(_BATCH_WORK_S / (seconds_per_item + 1e-7))))


class Pipeline:
    """Frames flow through ``stages``; each stage has its own worker threads and a bounded input queue.

    ``submit(frame, meta)`` applies the drop policy at the entry (``max_queue`` frames wait there):
    ``'oldest'`` pushes out the oldest waiting frame, ``'newest'`` refuses the new one, ``'block'``
    waits for room (lossless; the output then applies back-pressure too). Between stages, queues
    block (back-pressure), so an accepted frame is only lost to the ``deadline`` (seconds since
    submit, checked before each stage starts it: LATE), to an error, or to ``close(drain=False)``.

    Every frame id yields exactly one FrameResult, through ``results()``/``get()`` or, when given,
    ``on_result`` (called on a worker thread, or at close on the closing thread; never on the
    submitting thread; keep it short, never block in it). ``ordered=True`` delivers in submission order;
    dropped, late and failed frames take their place and are never waited for. Unread results wait
    in a queue of ``max_output`` (default ``max(8, max_queue, last stage's workers)``): beyond it,
    live modes (oldest/newest) drop unread results (those without output first, then the oldest
    processed ones) so a reader that stops never stalls the workers; block mode makes the
    workers wait for the reader. Stage queues adapt their size to their stage's measured cost.

    ``on_error='skip'``: a frame whose stage raises becomes an ERROR result and the others go on.
    ``'raise'``: the first error stops the pipeline (queued frames are dropped); the reader gets the
    exception when it reaches that frame, ``submit()`` raises it once (then ProcessorClosed), and
    leaving a ``with`` block raises it if nobody saw it.

    Accounting: ``stats()`` counts a frame once it reaches you (read, passed to on_result, or
    dropped), so ``submitted == done + dropped + late + error + in_flight`` at every instant and
    ``in_flight`` is 0 once closed and read. ``monitor`` (duck-typed: ``record(stage, seconds)``,
    ``frame_done(latency)``, ``frame_dropped(n)``, ``frame_late(n)``, ``frame_failed(n)``) hears
    every stage timing and every outcome.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        drop: str = "oldest",
        max_queue: int = 4,
        deadline: Optional[float] = None,
        ordered: bool = True,
        on_error: str = "skip",
        on_result: Optional[Callable[[FrameResult], Any]] = None,
        monitor: Any = None,
        max_output: Optional[int] = None,
        name: str = "pipeline",
    ) -> None:
        self._stages = check_stages(stages)
        check_options(drop, max_queue, deadline, on_error, on_result, max_output)
        self.name = name
        self._drop = drop
        self._deadline = None if deadline is None else float(deadline)
        self._on_error = on_error
        self._monitor = monitor
        self._has_callback = on_result is not None
        capacity = max_output if max_output is not None else max(8, max_queue, self._stages[-1].workers)
        self._output = OutputBuffer(
            ordered, capacity, drop != "block", monitor, on_result, self._callback_failed
        )
        self._entry = EntryQueue(max_queue, drop, self._hand_over_dropped)
        self._queues: List[StageQueue] = [self._entry]
        self._queues += [StageQueue(s.max_queue or s.workers) for s in self._stages[1:]]
        self._state_lock = threading.Lock()
        self._closing = False
        self._error: Optional[BaseException] = None
        self._error_surfaced = False
        self._alive = [s.workers for s in self._stages]
        self._alive_total = sum(self._alive)
        self._counts = [[_WorkerCounts() for _ in range(s.workers)] for s in self._stages]
        self._threads: List[threading.Thread] = []
        self._start_workers()

    # -- public API ------------------------------------------------------------------------------
    @property
    def stage_names(self) -> List[str]:
        return [s.name for s in self._stages]

    @property
    def closed(self) -> bool:
        return self._closing

    def submit(self, frame: Any, meta: Any = None, timeout: Optional[float] = None) -> Ticket:
        """Offer a frame; returns its Ticket at once (``drop='block'``: waits up to ``timeout`` for room).

        A falsy Ticket means the frame was refused (``'newest'`` with a full queue, or the block
        timeout passed); it still surfaces as a DROPPED result. Raises ProcessorClosed after close.
        """
        try:
            rec, dropped = self._entry.offer(frame, meta, timeout)
        except QueueClosed:
            rec = dropped = None
        if rec is None:
            raise self._closed_error()
        if dropped is rec:
            return Ticket(rec.id, accepted=False)
        return Ticket(rec.id, evicted=None if dropped is None else dropped.id)

    def results(self) -> Iterator[FrameResult]:
        """Yield results as they come; after close, yields what is left and ends."""
        self._check_reader()
        take = self._output.take
        while True:
            rec = take(None)
            if rec is None:
                self._raise_unsurfaced()
                return
            self._raise_if_fatal(rec)
            yield rec

    def get(self, timeout: Optional[float] = None) -> Optional[FrameResult]:
        """Next result, or None when none arrives within ``timeout`` or the stream has ended."""
        self._check_reader()
        rec = self._output.take(timeout)
        if rec is TIMED_OUT:
            return None
        if rec is None:
            self._raise_unsurfaced()
            return None
        self._raise_if_fatal(rec)
        return rec

    def close(self, drain: bool = True) -> None:
        """Stop accepting frames and wait for the workers to leave. Idempotent.

        ``drain=True`` processes what was accepted; ``drain=False`` drops every queued frame (a
        stage call already running still finishes). Results stay readable. Called from a worker
        thread (e.g. inside on_result), it starts the shutdown without waiting for it.
        """
        with self._state_lock:
            self._closing = True
        if drain and self._error is None:
            self._entry.close()
            self._output.unbind()
        else:
            self._cancel()
        self._join()

    def stats(self) -> Dict[str, Any]:
        """Counts (see the class doc for the accounting identity) and a dict per stage."""
        out = self._output.snapshot()
        submitted = self._entry.offered
        resolved = out["done"] + out["dropped"] + out["late"] + out["error"]
        stages = [self._stage_stats(k) for k in range(len(self._stages))]
        stats: Dict[str, Any] = {"submitted": submitted}
        stats.update(out)
        stats.update(
            in_flight=submitted - resolved,
            queued=sum(s["queued"] for s in stages),
            closed=self._closing,
            stages=stages,
        )
        return stats

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:  # includes KeyboardInterrupt: leave quickly, drop what waits
            self.close(drain=False)
            return
        self.close(drain=True)
        self._raise_unsurfaced()

    def __repr__(self) -> str:
        return "%s(name=%r, stages=%r, closed=%s)" % (
            type(self).__name__,
            self.name,
            self.stage_names,
            self._closing,
        )

    # -- workers ---------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        try:
            for k, stage in enumerate(self._stages):
                for w in range(stage.workers):
                    thread = threading.Thread(
                        target=self._work,
                        args=(k, w),
                        name="dfl_perf:%s:%s:%d" % (self.name, stage.name, w),
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
        except BaseException:
            started = len(self._threads)
            with self._state_lock:  # the workers never started will never leave: count them out
                self._alive_total -= sum(self._alive) - started
            self._cancel()
            self._join()
            raise

    def _work(self, k: int, w: int) -> None:
        try:
            self._work_loop(k, w)
        except BaseException as exc:  # init failed, or a bug: stop everything, never hang the reader
            self._fatal(exc)
            q = self._queues[k]
            batch = q.take(1, _MAX_BATCH)
            while batch is not None:
                now = time.perf_counter()
                self._output.put([resolve(rec, _DROPPED, now) for rec in batch])
                batch = q.take(1, _MAX_BATCH)
        finally:
            self._worker_left(k)

    def _work_loop(self, k: int, w: int) -> None:
        """One worker of stage k: take a batch, run the stage on each frame, pass the batch on."""
        stage = self._stages[k]
        fn, name, workers = stage.fn, stage.name, stage.workers
        with_state = stage.init is not None
        state = stage.init() if with_state else None
        q = self._queues[k]
        first, last = k == 0, k == len(self._stages) - 1
        nxt = None if last else self._queues[k + 1]
        output = self._output
        deadline, monitor = self._deadline, self._monitor
        counts = self._counts[k][w]
        adapt_capacity = k > 0 and stage.max_queue is None
        perf = time.perf_counter
        limit = 1
        while True:
            batch = q.take(workers, limit)
            if batch is None:
                return
            forward: List[FrameResult] = []  # processed by this stage
            decided: List[FrameResult] = []  # dropped, late or failed here
            busy = 0.0
            now = perf()
            for rec in batch:
                if q.cancelled:
                    decided.append(resolve(rec, _DROPPED, now))
                    continue
                if deadline is not None and now - rec.queued > deadline:
                    decided.append(resolve(rec, _LATE, now, stage=name))
                    counts.late += 1
                    continue
                if first:
                    rec.started = now
                try:
                    rec.output = fn(rec.output, state) if with_state else fn(rec.output)
                    end = perf()
                    if monitor is not None:
                        monitor.record(name, end - now)
                except BaseException as exc:
                    end = perf()
                    decided.append(self._frame_failed(rec, exc, name, end))
                    counts.errors += 1
                    now = end
                    continue
                busy += end - now
                if last:
                    resolve(rec, _DONE, end)
                forward.append(rec)
                now = end
            if forward:
                counts.processed += len(forward)
                counts.busy_seconds += busy
                limit = _batch_limit(busy / len(forward))
                if adapt_capacity:
                    q.capacity = workers if limit == 1 else 2 * limit * workers
            if last:
                output.put(forward + decided, wait_for_reader=True)
                continue
            if forward and not nxt.put_many(forward):  # cancelled meanwhile
                now = perf()
                decided.extend(resolve(rec, _DROPPED, now) for rec in forward)
            if decided:
                output.put(decided)

    def _frame_failed(self, rec: FrameResult, exc: BaseException, stage_name: str, now: float) -> FrameResult:
        resolve(rec, _ERROR, now, stage=stage_name, error=exc)
        if self._on_error == "raise" or not isinstance(exc, Exception):
            self._fatal(exc)
        return rec

    def _worker_left(self, k: int) -> None:
        with self._state_lock:
            self._alive[k] -= 1
            self._alive_total -= 1
            stage_done = self._alive[k] == 0
            all_done = self._alive_total == 0
        if stage_done and k + 1 < len(self._queues):
            self._queues[k + 1].close()
        if all_done:
            self._output.finish()

    # -- shutdown and errors -------------------------------------------------------------------
    def _cancel(self) -> None:
        with self._state_lock:
            self._closing = True
        self._output.unbind()
        for q in self._queues:
            q.cancel(self._drop_cancelled)
        self._output.deliver()

    def _drop_cancelled(self, recs: List[FrameResult]) -> None:
        """A cancelled queue's frames (decided DROPPED; a queue lock is held: no on_result call here)."""
        self._output.put(recs, deliver=False)

    def _hand_over_dropped(self, rec: FrameResult) -> None:
        """A frame the entry's drop policy dropped (the entry's lock is held: no on_result call here;
        the next worker hand-over, one is coming since the queue is full, or close() delivers it)."""
        self._output.put([rec], deliver=False)

    def _join(self) -> None:
        if threading.current_thread() in self._threads:
            return
        try:
            for thread in self._threads:
                thread.join()
        except KeyboardInterrupt:  # Ctrl-C during a drain: stop draining, then leave
            self._cancel()
            for thread in self._threads:
                thread.join()
            raise

    def _fatal(self, exc: BaseException) -> None:
        with self._state_lock:
            if self._error is None:
                self._error = exc
        self._cancel()

    def _callback_failed(self, exc: BaseException) -> None:
        if self._on_error == "raise":
            self._fatal(exc)

    def _closed_error(self) -> BaseException:
        with self._state_lock:
            error = self._error
            if error is not None and not self._error_surfaced:
                self._error_surfaced = True
                return error
        closed = ProcessorClosed("%s %r is closed" % (type(self).__name__, self.name))
        closed.__cause__ = error
        return closed

    def _raise_if_fatal(self, rec: FrameResult) -> None:
        if rec.error is not None and rec.error is self._error:
            with self._state_lock:
                self._error_surfaced = True
            raise rec.error

    def _raise_unsurfaced(self) -> None:
        with self._state_lock:
            error = self._error
            if error is None or self._error_surfaced:
                return
            self._error_surfaced = True
        raise error

    def _check_reader(self) -> None:
        if self._has_callback:
            raise RuntimeError(
                "%r delivers results to on_result; results() and get() are not available" % self
            )

    def _stage_stats(self, k: int) -> Dict[str, Any]:
        counts = self._counts[k]
        processed = sum(c.processed for c in counts)
        busy = sum(c.busy_seconds for c in counts)
        q = self._queues[k]
        return {
            "name": self._stages[k].name,
            "workers": self._stages[k].workers,
            "queued": len(q),
            "capacity": q.capacity,
            "processed": processed,
            "late": sum(c.late for c in counts),
            "errors": sum(c.errors for c in counts),
            "busy_seconds": busy,
            "mean_ms": busy / processed * 1e3 if processed else None,
        }
