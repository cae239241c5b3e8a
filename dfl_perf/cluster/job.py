"""The Ray side of ``dfl-perf run --ray``: workers (actors), scheduling, progress, retries, cancel.

Imported only by that command (``command.py``), after Ray was found. A job's way:

1. The driver reads the two model files once and puts them in Ray's object store; every worker
   (``RangeWorker``, an actor holding its sessions for the whole job) gets them from there, so no
   shared disk is needed for models.
2. Ranges are handed to workers, at most ``DEPTH`` per worker and at most ``window`` not yet
   written (back-pressure: a slow range holds the next ones back instead of piling up segments).
3. A worker decodes, swaps and encodes its range and returns (metadata, segment bytes) as two
   objects; the driver fetches a segment's bytes only when it is next in order and joins it into
   the output (``assemble.SegmentJoiner``: packets copied, nothing decoded).
4. Workers report frames done to a small ``ProgressBoard`` actor, which the driver polls for the
   cluster-wide progress bar; cancelling the job flips the board, and workers stop at their next report.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import ray

from dfl_perf.cluster.plan import ClusterJobError, FrameRange, VideoPlan
from dfl_perf.cluster.worker import FrameSwapper, RangeCancelled, encode_range, remove_stale_segments

__all__ = ["RangeWorker", "ProgressBoard", "JobStatus", "run_ranges", "start_workers"]

#: ranges queued per worker: one running, one waiting, so a worker never idles between ranges
DEPTH = 2
#: seconds between two polls of the progress board
POLL_EVERY = 0.25
#: seconds workers get to stop by themselves after a cancel before they are killed
CANCEL_GRACE = 5.0


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Frames done per range (the latest report wins, so a retried range counts again from 0), and the
    attempts at each range (Ray's retries included)."""

    def __init__(self) -> None:
        self.done: Dict[int, int] = {}
        self.tries: Dict[int, int] = {}
        self.cancelled = False

    def attempt(self, order: int) -> bool:
        self.tries[order] = self.tries.get(order, 0) + 1
        self.done[order] = 0
        return not self.cancelled

    def attempts(self, order: int) -> int:
        return self.tries.get(order, 0)

    def retried(self) -> int:
        return sum(n - 1 for n in self.tries.values() if n > 1)

    def report(self, order: int, frames: int) -> bool:
        self.done[order] = frames
        return not self.cancelled

    def total(self) -> int:
        return sum(self.done.values())

    def cancel(self) -> None:
        self.cancelled = True


@ray.remote
class RangeWorker:
    """Sessions loaded once; ``process`` turns one frame range into an encoded segment."""

    def __init__(self, models: List[Any], provider: Optional[str], max_faces: int, threads: int) -> None:
        import cv2

        cv2.setNumThreads(max(1, threads))  # the actor's share of the node's cores, not all of them
        remove_stale_segments()  # left by a worker killed mid-range (this one's predecessor, say)
        detector, dfm = ray.get(models)  # [detector ref, DFM ref]: the driver holds both for the job
        self.swapper = FrameSwapper(detector, dfm, provider=provider, max_faces=max_faces)
        context = ray.get_runtime_context()
        self.node = "%s (%s)" % (ray.util.get_node_ip_address(), context.get_node_id()[:8])

    def ready(self) -> Dict[str, Any]:
        return {"pid": os.getpid(), "node": self.node, "provider": self.swapper.provider}

    @ray.method(num_returns=2, retry_exceptions=True)
    def process(self, rng: FrameRange, fps: float, size: Tuple[int, int], suffix: str,
                board: Any) -> Tuple[Dict[str, Any], bytes]:
        def report(frames: int) -> bool:
            return ray.get(board.report.remote(rng.order, frames))

        if not ray.get(board.attempt.remote(rng.order)):
            return {"order": rng.order, "cancelled": True}, b""
        try:
            result = encode_range(rng, fps, size, suffix, self.swapper, report, self.node)
        except RangeCancelled:
            return {"order": rng.order, "cancelled": True}, b""
        meta = {"order": result.order, "frames": result.frames, "seconds": result.seconds, "node": result.node,
                "cancelled": False}
        return meta, result.data


@dataclass
class JobStatus:
    """What the driver knows, passed to ``on_status`` at every poll (tests, tools)."""

    frames_done: int
    frames_total: int
    seconds: float
    workers: List[Dict[str, Any]] = field(default_factory=list)  # each worker's pid and node

    @property
    def fps(self) -> float:
        return self.frames_done / self.seconds if self.seconds > 0 else 0.0


def start_workers(count: int, model_refs: List[Any], provider: Optional[str], max_faces: int,
                  cpus: float, gpus: float, retries: int, timeout: float) -> Tuple[List[Any], List[Dict[str, Any]]]:
    """``count`` workers with their sessions loaded; (actors, [{pid, node, provider}]).

    ``model_refs``: [detector, DFM] bytes put in the object store by the caller, who keeps them for
    the whole job: a worker that dies is restarted (``retries`` times), reads them again, and its
    range is retried.
    """
    options: Dict[str, Any] = {"num_cpus": cpus, "max_restarts": retries, "max_task_retries": retries}
    if gpus:
        options["num_gpus"] = gpus
    actors = [RangeWorker.options(**options).remote(model_refs, provider, max_faces, max(1, int(cpus)))
              for _ in range(count)]
    refs = [actor.ready.remote() for actor in actors]
    ready, waiting = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    if waiting:
        for actor in actors:
            ray.kill(actor)
        raise ClusterJobError("only %d of %d workers started within %.0f s (the cluster lacks %s CPU%s per worker, "
                              "or the workers cannot import dfl_perf)"
                              % (len(ready), count, timeout, cpus, " and %s GPU" % gpus if gpus else ""))
    try:
        info = ray.get(refs)
    except ray.exceptions.RayError as exc:
        for actor in actors:
            ray.kill(actor)
        raise ClusterJobError("the workers cannot load the models: %s" % _cause(exc)) from None
    return actors, info


def _cause(exc: BaseException) -> str:
    """The user's part of a Ray error: the worker's exception, or the first line of Ray's message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, ray.exceptions.RayError):
        return "%s: %s" % (type(cause).__name__, cause)
    text = str(exc).strip().splitlines()
    return text[-1] if isinstance(exc, ray.exceptions.RayTaskError) and text else (text[0] if text else repr(exc))


class _Scheduler:
    """Hands ranges to workers and collects their results; see the module docstring."""

    def __init__(self, actors: Sequence[Any], ranges: Sequence[FrameRange], videos: Sequence[VideoPlan],
                 board: Any, window: int) -> None:
        self.actors, self.videos, self.board, self.window = list(actors), videos, board, window
        self.queue: Deque[FrameRange] = deque(ranges)
        self.load = [0] * len(self.actors)
        self.pending: Dict[Any, Tuple[FrameRange, int, Any]] = {}  # meta ref -> (range, worker, data ref)
        self.done: Dict[int, Tuple[Dict[str, Any], Any, FrameRange]] = {}  # order -> (meta, data ref, range)
        self.submitted = 0
        self.written = 0
        self.peak_held = 0  # most ranges submitted and not yet written at once (<= window)

    def submit(self) -> None:
        while self.queue and self.submitted - self.written < self.window:
            worker = min(range(len(self.actors)), key=lambda i: self.load[i])
            if self.load[worker] >= DEPTH:
                return
            rng = self.queue.popleft()
            video = self.videos[rng.video]
            suffix = os.path.splitext(video.output)[1].lower()
            meta, data = self.actors[worker].process.remote(rng, video.fps, video.size, suffix, self.board)
            self.pending[meta] = (rng, worker, data)
            self.load[worker] += 1
            self.submitted += 1
            self.peak_held = max(self.peak_held, self.submitted - self.written)

    def collect(self, timeout: float) -> None:
        """Wait up to ``timeout`` for finished ranges; a range that failed after its retries fails the job."""
        if not self.pending:
            return
        ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=timeout,
                            fetch_local=False)
        for ref in ready:
            rng, worker, data = self.pending.pop(ref)
            self.load[worker] -= 1
            try:
                meta = ray.get(ref)
            except ray.exceptions.RayError as exc:
                tries = ray.get(self.board.attempts.remote(rng.order))
                raise ClusterJobError("%s failed %s, the job is stopped: %s"
                                      % (rng.describe(), "once" if tries <= 1 else "%d times" % tries,
                                         _cause(exc))) from None
            self.done[rng.order] = (meta, data, rng)

    def next_segment(self) -> Optional[Tuple[Dict[str, Any], Any, FrameRange]]:
        """The next range in order, when it is done (its segment still in the object store)."""
        item = self.done.pop(self.written, None)
        if item is not None:
            self.written += 1
        return item

    def refs(self) -> List[Any]:
        return list(self.pending)


class _Outputs:
    """The outputs being joined: one ``SegmentJoiner`` per video, opened at its first segment."""

    def __init__(self, videos: Sequence[VideoPlan], open_joiner: Callable[[VideoPlan], Any]) -> None:
        self.videos, self.open_joiner = videos, open_joiner
        self.joiners: Dict[int, Any] = {}
        self.finished: List[Dict[str, Any]] = []
        self.range_seconds: List[float] = []
        self.frames = 0

    def write(self, meta: Dict[str, Any], data: Any, rng: FrameRange) -> None:
        """Join one range's segment (fetched from the object store now); close the video after its last."""
        video = self.videos[rng.video]
        if rng.video not in self.joiners:
            self.joiners[rng.video] = self.open_joiner(video)
        joiner = self.joiners[rng.video]
        joiner.add(ray.get(data), meta["frames"])
        self.frames += meta["frames"]
        self.range_seconds.append(meta["seconds"])
        if rng.to_end or rng.stop >= video.frames:
            joiner.close()
            self.finished.append({"source": video.source, "output": video.output, "frames": joiner.frames,
                                  "audio": joiner.audio_note})

    def abort(self) -> None:
        """Remove every output not finished."""
        for joiner in self.joiners.values():
            if not joiner.closed:
                joiner.abort()


def run_ranges(actors: Sequence[Any], videos: Sequence[VideoPlan], ranges: Sequence[FrameRange],
               open_joiner: Callable[[VideoPlan], Any], window: int,
               on_status: Optional[Callable[[JobStatus], None]] = None,
               workers_info: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Process every range on ``actors`` and join the segments in order into one output per video.

    ``open_joiner(video)`` returns the video's ``SegmentJoiner``. On any error or KeyboardInterrupt
    the workers are told to stop, queued ranges are cancelled, and every output not finished is
    removed; the exception is raised again.
    """
    board = ProgressBoard.remote()
    scheduler = _Scheduler(actors, ranges, videos, board, window)
    outputs = _Outputs(videos, open_joiner)
    total = sum(v.frames for v in videos)
    started, cpu_started, last_poll = time.perf_counter(), time.process_time(), 0.0
    ok = False
    try:
        while scheduler.written < len(ranges):
            scheduler.submit()
            scheduler.collect(POLL_EVERY)
            item = scheduler.next_segment()
            while item is not None:
                outputs.write(*item)
                item = scheduler.next_segment()
            now = time.perf_counter()
            if on_status is not None and now - last_poll >= POLL_EVERY:
                last_poll = now
                done = max(outputs.frames, ray.get(board.total.remote()))
                on_status(JobStatus(min(done, total), total, now - started, workers_info or []))
        retried = ray.get(board.retried.remote())
        ok = True
    finally:
        if not ok:
            _cancel(board, scheduler)
            outputs.abort()
        ray.kill(board)
    seconds = time.perf_counter() - started
    return {"videos": outputs.finished, "frames": outputs.frames, "seconds": seconds,
            "fps": outputs.frames / seconds if seconds > 0 else 0.0, "range_seconds": outputs.range_seconds,
            "retried": retried, "peak_ranges_held": scheduler.peak_held,
            "driver_cpu_seconds": time.process_time() - cpu_started}


def _cancel(board: Any, scheduler: _Scheduler) -> None:
    """Tell the workers to stop, drop queued ranges, and give running ones a moment to end."""
    try:
        ray.get(board.cancel.remote(), timeout=CANCEL_GRACE)
        refs = scheduler.refs()
        for ref in refs:
            ray.cancel(ref)
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE)
    except Exception:  # the job is failing already; the workers are killed next either way
        pass
