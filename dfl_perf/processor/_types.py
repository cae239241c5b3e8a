"""Value types of the processor: frame status, per-frame result, submit ticket, stage description."""

from __future__ import annotations

import traceback
from enum import Enum
from typing import Any, Callable, List, Optional, Sequence

__all__ = ["FrameStatus", "FrameResult", "Ticket", "Stage", "ProcessorClosed", "resolve"]


class ProcessorClosed(RuntimeError):
    """Raised by ``submit()`` once the processor is closed (or stopped by a failure)."""


class FrameStatus(str, Enum):
    """What happened to a frame. The values are plain strings, handy for JSON and logs."""

    DONE = "done"  # every stage ran; ``output`` holds the last stage's return value
    DROPPED = "dropped"  # discarded by the drop policy, by close(drain=False), or its output unread in a full output
    LATE = "late"  # older than the deadline when a worker would have started it
    ERROR = "error"  # a stage raised; ``error`` and ``traceback`` say what and where


_DONE, _DROPPED, _LATE, _ERROR = FrameStatus.DONE, FrameStatus.DROPPED, FrameStatus.LATE, FrameStatus.ERROR


class FrameResult:
    """The outcome of one submitted frame.

    Attributes: ``id`` (the submit ticket's id), ``output`` (the last stage's return value when DONE,
    else None), ``meta`` (what was passed to submit), ``status`` (a FrameStatus), ``queued``,
    ``started``, ``finished``, ``ready`` (``time.perf_counter()`` when submitted, when the first stage
    started it or None if none did, when its status was decided, and when it was handed to the
    output in order: later than ``finished`` when it waited for an earlier frame), ``stage`` (name
    of the stage that failed or found it late), ``error`` and ``traceback`` (the exception and its
    formatted traceback, for ERROR). Treat it as read-only.
    """

    __slots__ = (
        "id",
        "output",
        "meta",
        "status",
        "queued",
        "started",
        "finished",
        "ready",
        "stage",
        "error",
        "traceback",
    )

    def __init__(self, frame_id: int, item: Any, meta: Any, queued: float) -> None:
        self.id = frame_id
        self.output = item  # carries the frame between stages; the last stage's output at the end
        self.meta = meta
        self.status: Optional[FrameStatus] = None  # set once, by ``resolve``
        self.queued = queued
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.ready: Optional[float] = None
        self.stage: Optional[str] = None
        self.error: Optional[BaseException] = None
        self.traceback: Optional[str] = None

    @property
    def ok(self) -> bool:
        """True when the frame was processed by every stage."""
        return self.status is _DONE

    @property
    def latency(self) -> Optional[float]:
        """Seconds from submit to the result being ready for you (in order): end-to-end latency.

        With ordered output this includes the wait behind an earlier, slower frame; before the
        result reaches the output it is the time to the decision on the frame.
        """
        end = self.ready if self.ready is not None else self.finished
        return None if end is None else end - self.queued

    def __repr__(self) -> str:
        latency = self.latency
        where = "" if self.stage is None else " stage=%r" % self.stage
        error = "" if self.error is None else " error=%r" % self.error
        return "FrameResult(id=%d status=%s latency=%s%s%s)" % (
            self.id,
            "pending" if self.status is None else self.status.value,
            "-" if latency is None else "%.2fms" % (latency * 1e3),
            where,
            error,
        )


def resolve(rec: FrameResult, status: FrameStatus, at: float, stage: Optional[str] = None,
            error: Optional[BaseException] = None) -> FrameResult:
    """Decide a frame's outcome: the one place a FrameResult gets its status.

    ``at`` is the ``perf_counter`` time of the decision; ``stage`` names the stage that found the frame
    late or failed; ``error`` is what it raised. Only DONE keeps the output. A processed frame whose
    output is dropped unread is decided again, as DROPPED.
    """
    rec.status = status
    rec.finished = at
    if status is not _DONE:
        rec.output = None
    if stage is not None:
        rec.stage = stage
    if error is not None:
        rec.error = error
        rec.traceback = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return rec


class Ticket:
    """What ``submit()`` returns: the frame ``id`` and whether the frame was ``accepted``.

    ``bool(ticket)`` is ``ticket.accepted``, so ``if not proc.submit(frame): ...`` reacts to a refusal
    at once. ``evicted`` is the id of an older queued frame that this submit pushed out
    (``drop='oldest'``), else None. Every id, accepted or not, still gets exactly one FrameResult.
    """

    __slots__ = ("id", "accepted", "evicted")

    def __init__(self, frame_id: int, *, accepted: bool = True, evicted: Optional[int] = None) -> None:
        self.id = frame_id
        self.accepted = accepted
        self.evicted = evicted

    def __bool__(self) -> bool:
        return self.accepted

    def __index__(self) -> int:
        return self.id

    def __int__(self) -> int:
        return self.id

    def __repr__(self) -> str:
        extra = "" if self.evicted is None else " evicted=%d" % self.evicted
        return "Ticket(id=%d accepted=%s%s)" % (self.id, self.accepted, extra)


class Stage:
    """One step of a Pipeline: ``fn(item) -> item`` run by ``workers`` threads.

    ``init``: optional callable run once in each worker thread; its return value is per-thread
    state (an IOBinding, a scratch buffer) and ``fn`` is then called as ``fn(item, state)``.
    ``max_queue``: capacity of the queue feeding this stage (not the first stage: the Pipeline's
    ``max_queue`` bounds the entry). None adapts it: a few frames for a slow stage, more for a cheap
    one (so cheap stages move frames in batches). ``plan_workers`` chooses ``workers`` from measured costs.
    """

    __slots__ = ("fn", "workers", "name", "init", "max_queue")

    def __init__(
        self,
        fn: Callable[..., Any],
        workers: int = 1,
        name: Optional[str] = None,
        init: Optional[Callable[[], Any]] = None,
        max_queue: Optional[int] = None,
    ) -> None:
        if not callable(fn):
            raise TypeError("Stage fn must be callable, got %r" % (fn,))
        if init is not None and not callable(init):
            raise TypeError("Stage init must be callable or None, got %r" % (init,))
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError("Stage workers must be an int >= 1, got %r" % (workers,))
        if max_queue is not None and (not isinstance(max_queue, int) or max_queue < 1):
            raise ValueError("Stage max_queue must be an int >= 1 or None, got %r" % (max_queue,))
        self.fn = fn
        self.workers = workers
        self.name = name if name is not None else getattr(fn, "__name__", "stage")
        self.init = init
        self.max_queue = max_queue

    def replace(self, **changes: Any) -> Stage:
        """A copy with some fields changed, e.g. ``stage.replace(workers=3)``."""
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Stage(**fields)

    def __repr__(self) -> str:
        return "Stage(name=%r, workers=%d)" % (self.name, self.workers)


_DROP_POLICIES = ("oldest", "newest", "block")
_ON_ERROR = ("skip", "raise")


def check_stages(stages: Sequence[Stage]) -> List[Stage]:
    stages = list(stages)
    if not stages:
        raise ValueError("Pipeline needs at least one Stage")
    for i, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise TypeError("Pipeline stage %d must be a Stage, got %r" % (i, stage))
    names = [s.name for s in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            "Pipeline stage names must be unique (they key stats and the monitor): %s" % duplicates
        )
    return stages


def check_options(
    drop: str,
    max_queue: int,
    deadline: Optional[float],
    on_error: str,
    on_result: Any,
    max_output: Optional[int],
) -> None:
    if drop not in _DROP_POLICIES:
        raise ValueError("drop must be one of %s, got %r" % (_DROP_POLICIES, drop))
    if on_error not in _ON_ERROR:
        raise ValueError("on_error must be one of %s, got %r" % (_ON_ERROR, on_error))
    for label, value in (("max_queue", max_queue), ("max_output", max_output)):
        if value is None and label == "max_output":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("%s must be an int >= 1, got %r" % (label, value))
    if deadline is not None and (isinstance(deadline, bool) or not deadline > 0):
        raise ValueError("deadline must be None or seconds > 0, got %r" % (deadline,))
    if on_result is not None and not callable(on_result):
        raise TypeError("on_result must be callable or None, got %r" % (on_result,))
