"""Pipeline: stages linked by bounded queues, each with its own worker threads."""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from ._queues import TIMED_OUT, OutputBuffer, StageQueue
from ._types import FrameResult, FrameStatus, ProcessorClosed, Stage, Ticket, check_options, check_stages

__all__ = ["Pipeline"]

_DROPPED, _LATE, _ERROR = FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR
_SLOW_ITEM_S = 200e-6  # a stage slower than this per frame takes one frame at a time
_BATCH_WORK_S = 2e-3  # a cheap stage takes a batch worth about this much work per lock round-trip
_MAX_BATCH = 64


def _mark_dropped(rec: FrameResult, now: float) -> FrameResult:
    rec.status = _DROPPED
    rec.output = None
    rec.finished = now
    return rec


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
        self._queues = [StageQueue(max_queue)]
        self._queues += [StageQueue(s.max_queue or s.workers) for s in self._stages[1:]]
        self._entry = self._queues[0]
        capacity = max_output if max_output is not None else max(8, max_queue, self._stages[-1].workers)
        self._output = OutputBuffer(
            ordered, capacity, drop != "block", monitor, on_result, self._callback_failed
        )
        self._next_id = 0  # ids are 0, 1, 2...: the next id is also the submitted count
        self._state_lock = threading.Lock()
        self._closing = False
        self._error: Optional[BaseException] = None
        self._error_surfaced = False
        self._alive = [s.workers for s in self._stages]
        self._alive_total = sum(self._alive)
        # per worker: [frames processed, late, errors, busy seconds]; each worker writes its own row
        self._counters = [[[0, 0, 0, 0.0] for _ in range(s.workers)] for s in self._stages]
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
        q = self._entry
        refused = False
        evicted = None
        with q.lock:
            if q.closed:
                raise self._closed_error()
            items = q.items
            if len(items) >= q.capacity:
                if self._drop == "oldest":
                    evicted = items.popleft()
                elif self._drop == "newest":
                    refused = True
                else:
                    refused = not self._wait_for_room(q, timeout)
            fid = self._next_id
            self._next_id = fid + 1
            rec = FrameResult(fid, frame, meta, time.perf_counter())
            if not refused:
                items.append(rec)
                if q.idle:
                    q.wake_workers(1)
                if evicted is None:
                    return Ticket(fid)
            # Handed over under the entry lock, so close() cannot end the stream before it arrives.
            # deliver=False: submit never runs on_result; the next worker hand-over (the queue is
            # full, so one is coming) or close() delivers it.
            self._output.put([_mark_dropped(rec if refused else evicted, rec.queued)], deliver=False)
        return Ticket(fid, not refused, None if evicted is None else evicted.id)

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
        with self._entry.lock:
            submitted = self._next_id
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
                self._output.put([_mark_dropped(rec, now) for rec in batch])
                batch = q.take(1, _MAX_BATCH)
        finally:
            self._worker_left(k)

    def _work_loop(self, k: int, w: int) -> None:
        stage = self._stages[k]
        fn, name, workers = stage.fn, stage.name, stage.workers
        with_state = stage.init is not None
        state = stage.init() if with_state else None
        q = self._queues[k]
        first, last = k == 0, k == len(self._stages) - 1
        nxt = None if last else self._queues[k + 1]
        put_out = self._output.put
        deadline, monitor = self._deadline, self._monitor
        counters = self._counters[k][w]
        adapt_capacity = k > 0 and stage.max_queue is None
        perf = time.perf_counter
        limit = 1
        while True:
            batch = q.take(workers, limit)
            if batch is None:
                return
            forward: List[FrameResult] = []
            resolved: List[FrameResult] = []
            busy = 0.0
            now = perf()
            for rec in batch:
                if q.cancelled:
                    resolved.append(_mark_dropped(rec, now))
                    continue
                if deadline is not None and now - rec.queued > deadline:
                    rec.status, rec.stage, rec.finished, rec.output = _LATE, name, now, None
                    resolved.append(rec)
                    counters[1] += 1
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
                    self._frame_failed(rec, exc, name, end)
                    resolved.append(rec)
                    counters[2] += 1
                    now = end
                    continue
                busy += end - now
                if last:
                    rec.finished = end
                forward.append(rec)
                now = end
            if forward:
                counters[0] += len(forward)
                counters[3] += busy
                limit = _batch_limit(busy / len(forward))
                if adapt_capacity:
                    q.capacity = workers if limit == 1 else 2 * limit * workers
            if last:
                forward.extend(resolved)
                put_out(forward, True)
                continue
            if forward and not nxt.put_many(forward):
                now = perf()
                resolved.extend(_mark_dropped(rec, now) for rec in forward)
            if resolved:
                put_out(resolved)

    def _frame_failed(self, rec: FrameResult, exc: BaseException, stage_name: str, now: float) -> None:
        rec.status, rec.stage, rec.finished, rec.output = _ERROR, stage_name, now, None
        rec.error = exc
        rec.traceback = traceback.format_exc()
        if self._on_error == "raise" or not isinstance(exc, Exception):
            self._fatal(exc)

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
        now = time.perf_counter()
        self._output.put([_mark_dropped(rec, now) for rec in recs], deliver=False)

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

    def _wait_for_room(self, q: StageQueue, timeout: Optional[float]) -> bool:
        """Block-mode submit: wait (lock held) until the entry has room; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        while len(q.items) >= q.capacity:
            if q.closed:
                raise self._closed_error()
            remaining = None if end is None else end - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            q.putters += 1
            try:
                q.not_full.wait(remaining)
            finally:
                q.putters -= 1
        if q.closed:
            raise self._closed_error()
        return True

    def _stage_stats(self, k: int) -> Dict[str, Any]:
        rows = self._counters[k]
        processed = sum(r[0] for r in rows)
        busy = sum(r[3] for r in rows)
        q = self._queues[k]
        return {
            "name": self._stages[k].name,
            "workers": self._stages[k].workers,
            "queued": len(q.items),
            "capacity": q.capacity,
            "processed": processed,
            "late": sum(r[1] for r in rows),
            "errors": sum(r[2] for r in rows),
            "busy_seconds": busy,
            "mean_ms": busy / processed * 1e3 if processed else None,
        }
