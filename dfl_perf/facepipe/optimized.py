"""dfl_perf's way of running the reference workload: tuned cached sessions, IOBinding with pooled
buffers, and a three-stage ``Pipeline`` (detect+align, swap, merge) so the detection of frame N+1
overlaps the swap of frame N, with several swap workers on a CPU.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from dfl_perf.facepipe.frames import BadFrameError, FrameItem, InFlight, check_frame
from dfl_perf.facepipe.job import FrameSink, RunStats, Workload
from dfl_perf.facepipe.quality import DETECTOR_SIZES, LiveQuality, free_size_model

__all__ = ["OptimizedRunner", "swap_workers_for"]

log = logging.getLogger("dfl_perf.facepipe")
_ERRORS_KEPT = 20
#: Frames alive beyond one per worker (files mode): one waiting, so no worker idles. More only adds
#: frame-sized buffers (memory); low_memory keeps none waiting.
IN_FLIGHT_SPARE = 1
#: Runs of the three stages on the first frame that the worker plan is measured on (after one warm-up).
PLAN_RUNS = 3
#: Results that say the pipeline fell behind its live source (an error does not).
_BEHIND = ("dropped", "late")


# ---------------------------------------------------------------------------------- optimized

def swap_workers_for(provider: str, budget: int) -> int:
    """Swap workers before any measurement: on a CPU, one per usable core (each session thread
    single); on a GPU, one."""
    from dfl_perf.sessions.config import GPU_PROVIDERS

    return 1 if provider in GPU_PROVIDERS else max(1, budget)


def _session_config(providers: Any, disk_cache: bool, low_memory: bool, mem_pattern: Optional[bool]) -> Any:
    """The runner's sessions' config: tuned, one thread each; see ``OptimizedRunner``."""
    from dfl_perf.sessions import SessionConfig

    config = SessionConfig.tuned(threads=1, providers=providers).replace(disk_cache=disk_cache)
    if mem_pattern is None and low_memory:
        mem_pattern = False
    if mem_pattern is not None:  # else tuned's choice: off on a CPU and DirectML
        config = config.replace(enable_mem_pattern=mem_pattern)
    if low_memory:
        if disk_cache:
            log.warning("low_memory=True loads lean weights, which the disk cache cannot hold: disk_cache is off")
        config = config.replace(lean_weights=True, disk_cache=False)
    return config


class OptimizedRunner:
    """dfl_perf's way: tuned cached sessions, IOBinding with pools, a three-stage Pipeline.

    ``live=False`` (files, benchmarks) processes every frame in order with back-pressure, with at
    most ``max_in_flight`` frames alive from the source to the end of the sink (default: one per
    worker + 1; no frame is read from the source before there is room for it);
    ``live=True`` (cameras) drops the oldest waiting frame and frames older than ``deadline``.
    Workers per stage: ``plan_workers`` on the stages' costs, measured on the first frame of the
    first run (``plan``); ``swap_workers`` (or ``low_memory``) fixes them instead: that many swap
    workers, one detect and one merge worker.
    ``target_fps`` (live): hold that frame rate when the machine cannot keep up at full quality, by
    turning the detection interval (1, 2, 3) and then the detector's input size (its own, 256, 192;
    from a free-size copy of the model, which needs the ``onnx`` package), through
    ``monitor.AdaptiveController`` every half second; ``RunStats.adaptive`` says what changed and why.
    ``dfm``: the swap step's model runner, when not a ``DFMRunner`` on the workload's DFM built here:
    any object with DFMRunner's ``resolution``, ``run(faces, morph_factor)`` and ``close()`` (the
    caller keeps it and closes it).
    On a CPU, onnxruntime's memory pattern is off: with it on, onnxruntime keeps a planned block
    beside the arena's chunks, about 0.5x the model's activations more, for no measurable speed
    (off for DirectML too, which needs it; ``mem_pattern=True``/``False`` overrides the choice).
    ``low_memory=True`` trades a little throughput for a smaller peak: one worker per stage (one set
    of the swap model's activations), one frame alive per worker, the memory pattern off on
    any device, and lean weights (``SessionConfig.lean_weights``: models loaded from a copy with
    their weights in a separate file, fewer copies of the weights in memory; no disk cache).
    ``merge_in_place=True`` merges the faces into the input frame itself and hands that to the sink
    (no output frame per frame in flight): only for sources that give a new array every frame (a
    video reader, a camera), never for one that repeats arrays (a list looped over). A read-only
    frame still gets a pooled output.
    """

    def __init__(self, workload: Workload, provider: Optional[str] = None, device_id: int = 0,
                 cache: Any = None, monitor: Any = None, swap_workers: Optional[int] = None,
                 live: bool = False, deadline: Optional[float] = None, max_queue: int = 2,
                 disk_cache: bool = False, max_in_flight: Optional[int] = None,
                 low_memory: bool = False, merge_in_place: bool = False,
                 mem_pattern: Optional[bool] = None, dfm: Any = None,
                 target_fps: Optional[float] = None) -> None:
        from dfl_perf.buffers import BoundSession, BufferPool, DFMRunner
        from dfl_perf.devices import select_providers
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.sessions import ModelCache

        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError("max_in_flight must be None or >= 1, got %r" % (max_in_flight,))
        if swap_workers is not None and swap_workers < 1:
            raise ValueError("swap_workers must be None or >= 1, got %r" % (swap_workers,))
        if target_fps is not None and not target_fps > 0:
            raise ValueError("target_fps must be None or > 0, got %r" % (target_fps,))
        self.workload = workload
        providers = select_providers(provider, device_id) if provider else select_providers(device_id=device_id)
        self.provider = providers[0][0]
        self.session_config = config = _session_config(providers, disk_cache, low_memory, mem_pattern)
        self.cache = cache if cache is not None else ModelCache(max_models=4)
        self._owns_cache = cache is None
        t0 = time.perf_counter()
        det_session = self.cache.get(workload.detector_path(), config)
        self.pool = BufferPool(max_bytes=256 << 20)
        self._owns_dfm = dfm is None
        if dfm is None:  # the outputs are read on the host: the runner binds them there on any device
            dfm = DFMRunner(self.cache.get(workload.dfm_path(), config), device="cpu", host_pool=self.pool)
        self.session_seconds = time.perf_counter() - t0
        self.detector = FaceDetector(det_session)
        self.det_bound = BoundSession(det_session, host_pool=self.pool)
        self._bound_sessions = [self.det_bound]
        detectors = {self.detector.input_shape[3]: (self.detector, self.det_bound.run)}
        if target_fps is not None:
            detectors.update(self._smaller_detectors(workload.detector_path(), config))
        self.quality = LiveQuality(detectors)
        self.target_fps = target_fps
        self.dfm = dfm
        self.resolution = self.dfm.resolution
        self.low_memory = low_memory
        self.merge_in_place = merge_in_place
        self.monitor = monitor
        self.live = live
        self.deadline = deadline
        self.max_queue = max_queue
        self.plan: Any = None  # the PipelinePlan measured on the first frame (None before it, or when fixed)
        self._fixed_swap_workers = swap_workers or (1 if low_memory else None)
        self._max_in_flight = max_in_flight
        self._plan_lock = threading.Lock()
        self._runs: List[Any] = []  # (thread, pipeline, stop event) of each run in progress
        self._runs_changed = threading.Condition()
        self._closed = self._released = False

    def _smaller_detectors(self, path: Any, config: Any) -> Dict[int, Tuple[Any, Any]]:
        """The detector at DETECTOR_SIZES below the model's own, from its free-size copy; none without
        the onnx package (which makes the copy) or for a model that cannot run at another size."""
        from dfl_perf.buffers import BoundSession
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.lazy import is_available

        native = self.detector.input_shape[3]
        sizes = [size for size in DETECTOR_SIZES if size < native]
        if not sizes or not is_available("onnx"):
            return {}
        try:
            session = self.cache.get(free_size_model(Path(path)), config)
            found = {size: FaceDetector(session, input_size=(size, size)) for size in sizes}
        except Exception as exc:  # not a YuNet we can resize: the interval knob alone
            log.warning("no smaller detector input for %s (%s): only the detection interval adapts", path, exc)
            return {}
        bound = BoundSession(session, host_pool=self.pool)
        self._bound_sessions.append(bound)
        return {size: (detector, bound.run) for size, detector in found.items()}

    # -- workers per stage
    @property
    def workers(self) -> Dict[str, int]:
        """Workers per stage for the next run: the plan's, else the fixed ones (or, before the first
        frame is measured, ``swap_workers_for``'s)."""
        if self.plan is not None:
            return dict(self.plan.workers)
        from dfl_perf.devices import cpu_budget

        swap = self._fixed_swap_workers or swap_workers_for(self.provider, cpu_budget())
        return {"detect": 1, "swap": swap, "merge": 1}

    @property
    def swap_workers(self) -> int:
        return self.workers["swap"]

    @property
    def max_in_flight(self) -> int:
        """Files mode: frames alive at most, from the source to the end of the sink."""
        if self._max_in_flight is not None:
            return self._max_in_flight
        return sum(self.workers.values()) + (0 if self.low_memory else IN_FLIGHT_SPARE)

    def _planned(self, frames: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        """``frames``, with the worker plan measured on the first one if there is none yet."""
        if self.plan is not None or self._fixed_swap_workers is not None:
            return frames
        source = iter(frames)
        try:
            first = next(source)
        except StopIteration:
            return ()
        with self._plan_lock:
            if self.plan is None:
                self.plan = self._measure_plan(first)
        return itertools.chain([first], source)

    def _measure_plan(self, frame: Any) -> Any:
        """``plan_workers`` on the three stages' costs on ``frame``; None when it cannot be measured
        there (not a frame, a stage fails): the run then keeps the default workers and meets the
        problem in the pipeline, where it is reported as usual."""
        from dfl_perf.devices import cpu_budget
        from dfl_perf.processor import plan_workers
        from dfl_perf.sessions.config import GPU_PROVIDERS

        try:
            seconds, cpu = self._stage_costs(frame)
        except Exception as exc:
            log.debug("no worker plan from the first frame (%s: %s)", type(exc).__name__, exc)
            return None
        on_device = ("detect", "swap") if self.provider in GPU_PROVIDERS and self._owns_dfm else ()
        plan = plan_workers(cpu, cpu_budget(), device_seconds={name: seconds[name] for name in on_device})
        log.debug("%s", plan.describe())
        return plan

    def _stage_costs(self, frame: np.ndarray) -> Tuple[Dict[str, float], Dict[str, float]]:
        """Wall and CPU seconds of each stage on ``frame`` (a copy: merge_in_place writes into it),
        median of PLAN_RUNS runs after a warm-up; with one face when the detector finds none."""
        from dfl_perf.processor import measure_stages

        check_frame(0, frame)
        probe = frame.copy()
        blob = self._detect_state()
        held: List[FrameItem] = []

        def detect(item: FrameItem) -> FrameItem:
            held[:] = [item]
            return self._with_a_face(self.detect(item, blob))

        stages = [("detect", detect), ("swap", self.swap), ("merge", self.merge)]
        items = (FrameItem(0, probe) for _ in range(PLAN_RUNS + 1))
        try:
            return measure_stages(stages, items, finish=self._drop_buffers, warmup=1)
        except BaseException:
            for item in held:
                self._drop_buffers(item)
            raise

    def _with_a_face(self, item: FrameItem) -> FrameItem:
        """A measured item without a face gets one: a square of the frame's centre, 0.6 of its height."""
        if item.crops is None:
            from dfl_perf.facepipe.align import warp_face

            h, w = item.frame.shape[:2]
            side, res = 0.6 * min(h, w), self.resolution
            k = res / side
            M = np.array([[k, 0.0, -k * (w - side) / 2], [0.0, k, -k * (h - side) / 2]])
            item.mats = [M]
            item.crops = self.pool.acquire((1, res, res, 3), np.uint8)
            warp_face(item.frame, M, res, out=item.crops[0])
        return item

    # -- stages: each takes an FrameItem and returns it
    def _detect_state(self) -> Dict[Tuple[int, ...], np.ndarray]:
        """A detect worker's input blobs, one per detector input shape."""
        return {self.detector.input_shape: np.zeros(self.detector.input_shape, np.float32)}

    def detect(self, item: FrameItem, blobs: Dict[Tuple[int, ...], np.ndarray]) -> FrameItem:
        from dfl_perf.facepipe.align import align_matrix, warp_face

        check_frame(item.index, item.frame)
        w, res, quality = self.workload, self.resolution, self.quality
        if quality.detection_due():
            chosen = quality.detector()
            det = chosen.detector
            blob = blobs.get(det.input_shape)
            if blob is None:
                blob = blobs[det.input_shape] = np.zeros(det.input_shape, np.float32)
            blob, scale = det.preprocess(item.frame, out=blob)
            keypoints = [f.keypoints for f in det.decode(chosen.run({det.input_name: blob}), scale)[: w.max_faces]]
            quality.remember(keypoints)
        else:  # between detections: the faces found last
            keypoints = quality.last_faces()
        item.mats = [align_matrix(k, res, w.coverage) for k in keypoints]
        if keypoints:
            item.crops = self.pool.acquire((len(keypoints), res, res, 3), np.uint8)
            for i, M in enumerate(item.mats):
                warp_face(item.frame, M, res, out=item.crops[i])
        return item

    def swap(self, item: FrameItem) -> FrameItem:
        import cv2

        if item.crops is None:
            return item
        n, res = len(item.mats), self.resolution
        out = self.dfm.run(item.crops, self.workload.morph_factor)
        self.pool.release(item.crops)
        item.crops = None
        item.masks = self.pool.acquire((n, res, res), np.float32)
        np.multiply(out.celeb_face_mask[..., 0], out.face_mask[..., 0], out=item.masks)
        item.celebs = self.pool.acquire((n, res, res, 3), np.uint8)
        for i in range(n):  # quantise in crop space: the merge warps uint8
            cv2.convertScaleAbs(out.celeb_face[i], dst=item.celebs[i], alpha=255.0)
        return item

    def merge(self, item: FrameItem) -> FrameItem:
        from dfl_perf.facepipe.merge import merge_faces

        if self.merge_in_place and item.frame.flags.writeable:
            out = item.frame
        else:
            out = self.pool.acquire(item.frame.shape, np.uint8)
        if item.celebs is None:
            if out is not item.frame:
                np.copyto(out, item.frame)
        else:
            merge_faces(item.frame, item.celebs, item.masks, item.mats, out=out)
            self.pool.release(item.celebs)
            self.pool.release(item.masks)
            item.celebs = item.masks = None
        item.output = out
        return item

    def stages(self) -> List[Any]:
        from dfl_perf.processor import Stage

        # one waiting frame between stages: enough to keep every worker busy, few enough that a
        # frame does not queue behind many others (latency = frames in flight / throughput)
        workers = self.workers
        return [
            Stage(self.detect, workers=workers["detect"], name="detect", init=self._detect_state),
            Stage(self.swap, workers=workers["swap"], name="swap", max_queue=1),
            Stage(self.merge, workers=workers["merge"], name="merge", max_queue=1),
        ]

    def pipeline(self) -> Any:
        from dfl_perf.processor import Pipeline

        return Pipeline(self.stages(), drop="oldest" if self.live else "block", max_queue=self.max_queue,
                        deadline=self.deadline, ordered=True, monitor=self.monitor, name="facepipe")

    def release(self, item: FrameItem) -> None:
        """Give an item's output frame back to the pool once the caller is done with it."""
        if item.output is not None and item.output is not item.frame:  # merged in place: not pooled
            self.pool.release(item.output)
        item.output = None

    def _drop_buffers(self, item: Any) -> None:
        for name in ("crops", "celebs", "masks"):
            buf = getattr(item, name, None)
            if buf is not None:
                self.pool.release(buf)
                setattr(item, name, None)
        self.release(item)

    def run(self, frames: Iterable[np.ndarray], sink: Optional[FrameSink] = None) -> RunStats:
        """Process ``frames`` through the pipeline; ``sink(index, frame)`` gets outputs in order.

        The output frame handed to ``sink`` is pooled: copy it if you keep it past the call. A frame
        that is not (H, W, 3) uint8 BGR is an ERROR result live and raises ``BadFrameError`` for
        files. An error in the source or the sink (KeyboardInterrupt included) stops the run at
        once and is raised here; ``close()`` from another thread stops it too (the frames left are
        counted as dropped) and run() returns. No thread is left running either way.
        """
        stats = RunStats()
        errors: List[BaseException] = []
        control = self._quality_control()
        frames = self._planned(frames)
        inflight = InFlight(None if self.live else self.max_in_flight)
        stop = threading.Event()
        pipe = self._start_run(stop)
        try:
            with pipe:
                feeder = threading.Thread(target=self._feed, args=(pipe, frames, errors, inflight, stop),
                                          name="facepipe-feeder", daemon=True)
                stats.started = time.perf_counter()
                feeder.start()
                try:
                    for result in pipe.results():
                        self._account(result, stats, sink, inflight)
                        if control is not None:
                            control.frame(result.ok, result.status in _BEHIND)
                except BaseException:
                    stop.set()
                    pipe.close(drain=False)  # frees a feeder waiting for room; it stops at its next frame
                    raise
                finally:
                    inflight.cancel()  # a feeder waiting for room stops (after a normal end it is gone)
                    feeder.join()
        finally:
            for item in inflight.take_all():  # left unread when the run stopped early
                self._drop_buffers(item)
            self._end_run(pipe)
        stats.finished = time.perf_counter()
        stats.accounting = pipe.stats()
        stats.adaptive = control.report() if control is not None else {}
        if errors:
            raise errors[0]
        return stats

    def _quality_control(self) -> Any:
        """Live with a target FPS: a QualityControl over the detect knobs, which start at their best."""
        if not (self.live and self.target_fps):
            return None
        from dfl_perf.facepipe.quality import QualityControl

        self.quality.set_detect_every(1)
        self.quality.set_detector_size(self.quality.sizes[0])
        return QualityControl(self.quality, self.target_fps)

    def _start_run(self, stop: threading.Event) -> Any:
        with self._runs_changed:
            if self._closed:
                raise RuntimeError("OptimizedRunner is closed")
            pipe = self.pipeline()
            self._runs.append((threading.current_thread(), pipe, stop))
            return pipe

    def _end_run(self, pipe: Any) -> None:
        with self._runs_changed:
            self._runs = [run for run in self._runs if run[1] is not pipe]
            self._runs_changed.notify_all()
        self._release_when_idle()

    def _feed(self, pipe: Any, frames: Iterable[np.ndarray], errors: List[BaseException],
              inflight: InFlight, stop: threading.Event) -> None:
        try:
            for index, frame in enumerate(inflight.admit(frames)):  # no frame read ahead of room for it
                if stop.is_set():
                    break
                item = FrameItem(index, frame)
                if not inflight.add(item):
                    break
                pipe.submit(item)
        except BaseException as exc:  # surfaced by run() in the caller's thread
            if not stop.is_set():
                errors.append(exc)
        finally:
            pipe.close(drain=True)

    def _account(self, result: Any, stats: RunStats, sink: Optional[FrameSink],
                 inflight: InFlight) -> None:
        item = inflight.take(result.id)  # every id yields one result, whatever became of the frame
        try:
            if not result.ok:
                stats.not_done += 1
                if result.error is not None:
                    self._frame_failed(result, stats)
                return
            stats.frames += 1
            stats.latencies.append(result.latency)
            stats.completions.append(result.finished)
            if sink is not None:
                sink(item.index, item.output)
        finally:
            if item is not None:
                self._drop_buffers(item)
                item.frame = None  # the result still holds the item until the next one arrives
                inflight.finish(result.id)

    def _frame_failed(self, result: Any, stats: RunStats) -> None:
        """Files: raise (a bad frame as itself). Live: keep the message, warn once per run, go on."""
        if not self.live:
            if isinstance(result.error, BadFrameError):
                raise result.error
            raise RuntimeError("frame %d failed in stage %s: %r\n%s"
                               % (result.id, result.stage, result.error, result.traceback))
        message = "frame %d failed in stage %s: %s: %s" % (result.id, result.stage, type(result.error).__name__,
                                                           result.error)
        if not stats.errors:
            log.warning("%s (later failures are counted; RunStats.errors keeps the first %d)", message,
                        _ERRORS_KEPT)
        if len(stats.errors) < _ERRORS_KEPT:
            stats.errors.append(message)

    def close(self) -> None:
        """Stop the runs in progress (frames left are dropped), wait for them, free the sessions' buffers.

        Safe from any thread, also from the sink; idempotent.
        """
        me = threading.current_thread()
        with self._runs_changed:
            self._closed = True
            runs = list(self._runs)
        for _, pipe, stop in runs:
            stop.set()
            pipe.close(drain=False)
        with self._runs_changed:  # a run on this thread (close from its sink) frees them when it ends
            while any(thread is not me for thread, _, _ in self._runs):
                self._runs_changed.wait()
        self._release_when_idle()

    def _release_when_idle(self) -> None:
        with self._runs_changed:
            if not self._closed or self._runs or self._released:
                return
            self._released = True
        if self._owns_dfm:
            self.dfm.close()
        for bound in self._bound_sessions:
            bound.close()
        if self._owns_cache:
            self.cache.clear()

    def __enter__(self) -> OptimizedRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
