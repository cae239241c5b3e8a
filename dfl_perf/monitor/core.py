"""PerformanceMonitor: per-stage latency, sliding-window FPS, frame counters, start-up marks."""

from __future__ import annotations

import bisect
import threading
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ._timeline import Timeline
from .stats import SampleRing, copy_ring, describe_array

__all__ = ["PerformanceMonitor"]

MAX_STAGES = 64
MAX_MARKS = 256


class _StageTimer:
    """Context manager returned by ``PerformanceMonitor.stage``: records the time spent inside."""

    __slots__ = ("_ring", "_clock", "_start")

    def __init__(self, ring: SampleRing, clock: Callable[[], float]) -> None:
        self._ring = ring
        self._clock = clock
        self._start = 0.0

    def __enter__(self) -> _StageTimer:
        self._start = self._clock()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._ring.add(self._clock() - self._start)


class _FrameLog:
    """Completion time and latency of the last ``capacity`` frames, plus counters. Guarded by ``lock``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.times = array("d", bytes(8 * capacity))
        self.latencies = SampleRing(capacity)
        self.lock = threading.Lock()
        self.dropped = 0
        self.late = 0
        self.failed = 0
        self.origin: Optional[float] = None  # when the first frame began: the start of FPS time

    def count_since(self, threshold: float) -> Tuple[int, float]:
        """(frames completed after ``threshold``, completion time of the oldest kept frame).

        The kept times are two ascending runs of the ring (``[end:]`` then ``[:end]`` once it has
        wrapped), so two binary searches count them without copying.
        """
        count = self.latencies.count
        if count == 0:
            return 0, 0.0
        times, end = self.times, count % self.capacity
        if count < self.capacity:
            return end - bisect.bisect_right(times, threshold, 0, end), times[0]
        newer = end - bisect.bisect_right(times, threshold, 0, end)
        older = self.capacity - bisect.bisect_right(times, threshold, end, self.capacity)
        return newer + older, times[end]


class PerformanceMonitor:
    """Thread-safe, bounded performance meter for a frame pipeline.

    - ``record(stage, seconds)`` / ``with stage(name):`` time a step; ``frame_done(latency)`` counts a
      finished frame; ``frame_dropped/late/failed(n)`` count the others; ``mark(name)`` notes a
      start-up phase.
    - FPS = frames completed in the last ``window`` seconds / min(``window``, time since the first
      frame began), so it is right from the first frame (no zero-filled history).
    - Latency percentiles (numpy's linear method) cover the last ``samples`` values of each stage and
      of end-to-end frame latency; nothing grows per call.
    - ``timeline()`` keeps a row every ``interval`` seconds (FPS, latency, counters, system sample).
    - ``sample_system=True`` (or an interval in seconds) starts a ``SystemSampler`` owned by the
      monitor; ``close()`` stops it and any HTTP endpoint.
    """

    def __init__(
        self,
        window: float = 2.0,
        samples: int = 1024,
        interval: float = 1.0,
        timeline_length: int = 3600,
        clock: Callable[[], float] = time.perf_counter,
        sample_system: Union[bool, float] = False,
        sampler: Optional[Any] = None,
    ) -> None:
        if window <= 0 or interval <= 0:
            raise ValueError("window and interval must be > 0 seconds, got window=%r interval=%r"
                             % (window, interval))
        if samples < 1 or timeline_length < 1:
            raise ValueError("samples and timeline_length must be >= 1, got samples=%r timeline_length=%r"
                             % (samples, timeline_length))
        self.window = float(window)
        self.samples = int(samples)
        self.interval = float(interval)
        self._clock = clock
        self._stages: Dict[str, SampleRing] = {}
        self._stages_lock = threading.Lock()
        self._frames = _FrameLog(max(self.samples, 8192))
        self._marks: Dict[str, float] = {}
        self._timeline = Timeline(self.interval, int(timeline_length))
        self._start = clock()
        self._http = None
        self._closed = False
        self._owns_sampler = False
        self.sampler = sampler
        if sampler is None and sample_system:
            from .sampler import SystemSampler

            every = 1.0 if sample_system is True else float(sample_system)
            self.sampler = SystemSampler(interval=every)
            self._owns_sampler = True
            self.sampler.start()

    # -- recording (hot path) ---------------------------------------------------------------

    def record(self, stage_name: str, seconds: float) -> None:
        """Add one duration (seconds) for ``stage_name``."""
        ring = self._stages.get(stage_name)
        if ring is None:
            ring = self._add_stage(stage_name)
        try:
            ring.add(seconds)
        except TypeError:
            raise TypeError("record(%r, seconds): seconds must be a number, got %s"
                            % (stage_name, type(seconds).__name__)) from None

    def stage(self, name: str) -> _StageTimer:
        """Context manager timing its body as one sample of stage ``name`` (recorded even on error)."""
        ring = self._stages.get(name)
        if ring is None:
            ring = self._add_stage(name)
        return _StageTimer(ring, self._clock)

    def frame_done(self, latency_seconds: float) -> None:
        """Count one completed frame whose end-to-end latency was ``latency_seconds``."""
        frames = self._frames
        with frames.lock:
            now = self._clock()
            if now > self._timeline.next_roll:
                self._roll(now)
            if frames.origin is None:
                self._begin_fps(now, latency_seconds)
            try:  # the frame lock guards the latency ring: put, not add
                index = frames.latencies.put(latency_seconds)
            except TypeError:
                raise TypeError("frame_done(latency_seconds): must be a number, got %s"
                                % type(latency_seconds).__name__) from None
            frames.times[index] = now

    def frame_dropped(self, n: int = 1) -> None:
        """Count ``n`` frames dropped: discarded by a drop policy, or processed but never read."""
        with self._frames.lock:
            self._roll_if_due()
            self._frames.dropped += n

    def frame_late(self, n: int = 1) -> None:
        """Count ``n`` frames skipped as late: older than the deadline when a stage would have started them."""
        with self._frames.lock:
            self._roll_if_due()
            self._frames.late += n

    def frame_failed(self, n: int = 1) -> None:
        """Count ``n`` frames whose processing raised."""
        with self._frames.lock:
            self._roll_if_due()
            self._frames.failed += n

    def mark(self, name: str) -> float:
        """Note that start-up phase ``name`` happened now; returns seconds since the monitor started."""
        elapsed = self._clock() - self._start
        with self._stages_lock:
            if name not in self._marks and len(self._marks) >= MAX_MARKS:
                raise ValueError("too many marks (%d); mark names must be a fixed set" % MAX_MARKS)
            self._marks[name] = elapsed
        return elapsed

    def _add_stage(self, name: str) -> SampleRing:
        if not isinstance(name, str):
            raise TypeError("stage name must be a str, got %s" % type(name).__name__)
        with self._stages_lock:
            ring = self._stages.get(name)
            if ring is None:
                if len(self._stages) >= MAX_STAGES:
                    raise ValueError("too many stages (%d) when adding %r; stage names must be a fixed set"
                                     % (MAX_STAGES, name))
                ring = SampleRing(self.samples)
                self._stages[name] = ring
            return ring

    def _begin_fps(self, now: float, latency: float) -> None:
        started = now - latency if isinstance(latency, (int, float)) and latency > 0 else self._start
        self._frames.origin = max(self._start, min(started, now))
        self._timeline.begin(self._frames.origin, self._start)

    # -- reading ----------------------------------------------------------------------------

    def fps(self) -> float:
        """Frames per second over the sliding window (0.0 before the first frame)."""
        with self._frames.lock:
            return self._fps(self._clock())

    def _fps(self, now: float) -> float:
        frames = self._frames
        if frames.origin is None:
            return 0.0
        inside, oldest = frames.count_since(now - self.window)
        span = min(self.window, now - frames.origin)
        if inside == frames.capacity and frames.latencies.count > frames.capacity:
            span = min(span, now - oldest)  # every kept frame is inside: the window outgrew the log
        if span <= 0:
            return 0.0
        return inside / span

    def stage_names(self) -> List[str]:
        """Names of the stages seen so far, in first-seen order."""
        with self._stages_lock:
            return list(self._stages)

    def summary(self, stages: bool = True) -> Dict[str, Any]:
        """A plain dict of everything measured (layout in the package docstring); seconds as floats.

        ``stages=False`` leaves out the per-stage statistics (``"stages": {}``), for a cheap HUD.
        """
        frames = self._frames
        with frames.lock:
            now = self._clock()
            if now > self._timeline.next_roll:
                self._roll(now)
            fps = self._fps(now)
            latencies, frame_count, latency_total = copy_ring(frames.latencies, self.samples)
            counters = (frames.dropped, frames.late, frames.failed)
            origin = frames.origin
        uptime = now - self._start
        latency = describe_array(latencies)
        latency["sum"] = latency_total
        active = (now - origin) if origin is not None else 0.0
        return {
            "uptime": uptime,
            "window": self.window,
            "fps": fps,
            "fps_mean": frame_count / active if active > 0 else 0.0,
            "frames": frame_count,
            "dropped": counters[0],
            "late": counters[1],
            "failed": counters[2],
            "latency": latency,
            "stages": self._stage_stats() if stages else {},
            "marks": self.marks(),
            "system": self.sampler.latest() if self.sampler is not None else None,
        }

    def _stage_stats(self) -> Dict[str, Dict[str, Any]]:
        with self._stages_lock:
            rings = list(self._stages.items())
        stats = {}
        for name, ring in rings:
            values, count, total = copy_ring(ring)
            entry = describe_array(values)
            entry["window"] = entry["count"]
            entry["count"] = count
            entry["sum"] = total
            stats[name] = entry
        return stats

    def marks(self) -> Dict[str, float]:
        """``{name: seconds since the monitor started}`` for each ``mark``, in order."""
        with self._stages_lock:
            return dict(self._marks)

    def timeline(self) -> List[Dict[str, Any]]:
        """One row per finished ``interval`` since the first frame (oldest first).

        Row: ``time`` (seconds since start, end of the interval), ``frames``, ``fps``, ``p50``,
        ``p95``, ``p99``, ``max`` (end-to-end latency, None without frames), ``dropped``, ``late``,
        ``failed`` (counts within the interval), ``stages`` ({name: {count, p50, p95}}) and
        ``system`` (the latest system sample then, or None).
        """
        with self._frames.lock:
            self._roll_if_due()
            return self._timeline.snapshot()

    # -- timeline rows (called with the frame lock held) ------------------------------------

    def _roll_if_due(self) -> None:
        now = self._clock()
        if now > self._timeline.next_roll:
            self._roll(now)

    def _roll(self, now: float) -> None:
        frames = self._frames
        with self._stages_lock:
            stages = dict(self._stages)
        counts = {"frames": frames.latencies.count, "dropped": frames.dropped, "late": frames.late,
                  "failed": frames.failed, "stages": {name: ring.count for name, ring in stages.items()}}
        system = self.sampler.latest() if self.sampler is not None else None
        self._timeline.roll(now, counts, frames.latencies, self.samples, stages, system)

    # -- lifecycle and export ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget all samples, counters and timeline rows (marks stay); FPS restarts from the next frame."""
        frames = self._frames
        with frames.lock:
            frames.latencies.count = 0
            frames.latencies.total = 0.0
            frames.dropped = frames.late = frames.failed = 0
            frames.origin = None
            with self._stages_lock:
                for ring in self._stages.values():
                    ring.clear()
            self._timeline.clear()
            self._start = self._clock()

    def export_json(self, path: Any) -> None:
        """Write summary, timeline and system history to ``path`` as JSON."""
        from .export import export_json

        export_json(self, path)

    def export_csv(self, path: Any) -> None:
        """Write the timeline to ``path`` as CSV, one row per interval."""
        from .export import export_csv

        export_csv(self, path)

    def prometheus_text(self) -> str:
        """The current metrics in the Prometheus text exposition format (0.0.4)."""
        from .export import prometheus_text

        return prometheus_text(self)

    def serve_http(self, port: int = 0, host: str = "127.0.0.1", backend: str = "auto") -> Tuple[str, int]:
        """Serve ``/metrics`` (Prometheus) and ``/summary`` (JSON) on ``host:port``; returns the address.

        ``backend``: "prometheus_client" (when installed), "stdlib", or "auto" (the first available).
        The server runs in a daemon thread that ``close()`` (or ``stop_http()``) stops.
        """
        from .export import MetricsServer

        if self._closed:
            raise RuntimeError("PerformanceMonitor is closed; cannot serve metrics")
        if self._http is not None:
            raise RuntimeError("already serving metrics at http://%s:%d/metrics" % self._http.address)
        self._http = MetricsServer(self, host=host, port=port, backend=backend)
        return self._http.address

    def stop_http(self) -> None:
        """Stop the HTTP endpoint, if one runs."""
        server, self._http = self._http, None
        if server is not None:
            server.close()

    def close(self) -> None:
        """Stop the HTTP endpoint and the owned system sampler. Idempotent."""
        self.stop_http()
        if self._owns_sampler and self.sampler is not None:
            self.sampler.close()
        self._closed = True

    def __enter__(self) -> PerformanceMonitor:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<PerformanceMonitor fps=%.1f frames=%d stages=%s>" % (
            self.fps(), self._frames.latencies.count, self.stage_names())
