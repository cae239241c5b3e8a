"""The reference face-swap workload, run two ways on the same frames and models.

- ``BaselineRunner``: what DeepFaceLive does today. Sessions built exactly like DFL's
  ``InferenceSession_with_device`` (ORT defaults: spinning thread pools), one sequential loop,
  fresh arrays for every step, and DFL's merge (the whole frame as float32).
- ``OptimizedRunner``: dfl_perf. Tuned sessions from a ``ModelCache`` (spinning off, one intra-op
  thread each), IOBinding runners with pooled buffers (``BoundSession``, ``DFMRunner``), and a
  ``Pipeline`` of three stages (detect+align, swap, merge) so the detection of frame N+1 overlaps
  the swap of frame N, with several swap workers on a CPU.

Both produce the same output frames (within a couple of uint8 levels: the merge quantises the
swapped face in crop space, DFL in frame space). ``Workload`` names the models: YuNet for
detection and a real DFM or the DFM-shaped stand-in (``standin.py``) for the swap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from dfl_perf.facepipe.frames import BadFrameError, FrameItem, InFlight, check_frame

__all__ = ["Workload", "BaselineRunner", "OptimizedRunner", "RunStats", "FrameItem", "merge_face_dfl_style",
           "paced_frames", "run_live_latest",
           "standin_model_path", "BadFrameError", "check_frame"]

FrameSink = Callable[[int, np.ndarray], None]
log = logging.getLogger("dfl_perf.facepipe")
_ERRORS_KEPT = 20


# ------------------------------------------------------------------------------------- models

def standin_model_path(resolution: int = 224, cost: str = "20ms", morph: bool = False) -> Path:
    """The DFM stand-in saved as a file in the user cache (built once, written atomically)."""
    from dfl_perf.facepipe.standin import build_dfm_standin
    from dfl_perf.paths import ensure_private_dir, user_cache_dir

    folder = ensure_private_dir(user_cache_dir() / "standins")
    path = folder / ("dfm_standin_%d_%s%s.onnx" % (resolution, cost, "_amp" if morph else ""))
    if not path.is_file():
        data = build_dfm_standin(resolution=resolution, cost=cost, morph=morph).SerializeToString()
        tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
        tmp.write_bytes(data)
        os.replace(str(tmp), str(path))
    return path


@dataclass(frozen=True)
class Workload:
    """Which models the workload runs. ``dfm=None`` uses the stand-in of ``dfm_cost``/``dfm_resolution``."""

    detector: str = "yunet_n_320_320"
    dfm: Optional[str] = None
    dfm_cost: str = "20ms"
    dfm_resolution: int = 224
    coverage: float = 2.2
    max_faces: int = 1
    morph_factor: float = 0.75

    def detector_path(self) -> Path:
        """The detector model file: a path, or a registry name (mirror, user cache, then download)."""
        if Path(self.detector).is_file():
            return Path(self.detector)
        from dfl_perf.facepipe.models import model_path

        return model_path(self.detector)

    def dfm_path(self) -> Path:
        """The DFM model file: the one given, or the stand-in built into the user cache."""
        if self.dfm is None:
            return standin_model_path(self.dfm_resolution, self.dfm_cost)
        path = Path(self.dfm)
        if not path.is_file():
            raise FileNotFoundError("DFM model not found: %s" % path)
        return path


# ---------------------------------------------------------------------------------- results

@dataclass
class RunStats:
    """Timings of one run: per-frame latency and completion time (seconds, perf_counter clock)."""

    frames: int = 0
    faces: int = 0
    started: float = 0.0
    finished: float = 0.0
    latencies: List[float] = field(default_factory=list)
    completions: List[float] = field(default_factory=list)
    not_done: int = 0
    accounting: Dict[str, Any] = field(default_factory=dict)  # the pipeline's stats() once closed
    errors: List[str] = field(default_factory=list)  # live runs: the first failed frames, what and where

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def latency_percentiles(self) -> Dict[str, float]:
        if not self.latencies:
            return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
        values = np.asarray(self.latencies)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max())}

    def timeline(self, window: float = 0.5) -> List[Dict[str, float]]:
        """Per-window rows ``{t, fps, latency_p50}`` (t from the start of the run), for plots."""
        if not self.completions:
            return []
        done = np.asarray(self.completions) - self.started
        lat = np.asarray(self.latencies)
        rows = []
        end = float(done.max())
        for lo in np.arange(0.0, end + window, window):
            sel = (done >= lo) & (done < lo + window)
            width = min(window, end - lo)  # the last window is only as long as the run
            if sel.any() and width > 0.2 * window:
                rows.append({"t": float(lo + width), "fps": float(sel.sum() / width),
                             "latency_p50": float(np.median(lat[sel]))})
        return rows


# ------------------------------------------------------------------------------- live sources

def paced_frames(frames: Sequence[np.ndarray], fps: float, duration: float,
                 stop: Optional[threading.Event] = None) -> Iterator[np.ndarray]:
    """Loop over ``frames`` at ``fps`` for ``duration`` seconds, like a camera that never waits."""
    stop = stop if stop is not None else threading.Event()
    period = 1.0 / fps
    start = time.perf_counter()
    i = 0
    while not stop.is_set():
        due = start + i * period
        if due - start >= duration:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            stop.wait(delay)
        yield frames[i % len(frames)]
        i += 1


def run_live_latest(process: Callable[[np.ndarray], Any], frames: Sequence[np.ndarray], fps: float,
                    duration: float) -> RunStats:
    """DFL's live loop: a camera thread keeps only the newest frame; a sequential loop takes it when ready.

    Latency is capture (the camera handing the frame over) to the end of ``process``; frames the loop
    never took count in ``not_done``.
    """
    cond = threading.Condition()
    slot: Dict[str, Any] = {"seq": -1, "frame": None, "ts": 0.0, "end": False}
    stop = threading.Event()

    def camera() -> None:
        for seq, frame in enumerate(paced_frames(frames, fps, duration, stop)):
            with cond:
                slot.update(seq=seq, frame=frame, ts=time.perf_counter())
                cond.notify()
        with cond:
            slot["end"] = True
            cond.notify()

    thread = threading.Thread(target=camera, name="live-camera", daemon=True)
    stats = RunStats(started=time.perf_counter())
    thread.start()
    taken = -1
    try:
        while True:
            with cond:
                cond.wait_for(lambda last=taken: slot["seq"] != last or slot["end"])
                if slot["seq"] == taken:
                    break
                frame, captured, taken = slot["frame"], slot["ts"], slot["seq"]
            process(frame)
            now = time.perf_counter()
            stats.latencies.append(now - captured)
            stats.completions.append(now)
            stats.frames += 1
    finally:
        stop.set()
        thread.join()
    stats.finished = time.perf_counter()
    stats.not_done = taken + 1 - stats.frames
    return stats


# ------------------------------------------------------------------------------- DFL's merge

def merge_face_dfl_style(frame: np.ndarray, celeb: np.ndarray, mask: np.ndarray, M: np.ndarray,
                         erode: int = 5, blur: int = 25) -> np.ndarray:
    """The merge as DFL's FaceMerger does it: the whole frame, face and mask as float32 frames.

    Same feathering and blend as ``merge.merge_face`` (so results agree within a level or two), but
    with DFL's footprint: about four full-frame float32 arrays per face.
    """
    import cv2

    from dfl_perf.facepipe.merge import feather_mask

    h, w = frame.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    frame_f = frame.astype(np.float32) * (1.0 / 255.0)
    alpha = cv2.warpAffine(feather_mask(mask, erode, blur), M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    face = cv2.warpAffine(celeb.astype(np.float32), M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    alpha = alpha[:, :, None]
    out = frame_f * (1.0 - alpha) + face * alpha
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- baseline

class BaselineRunner:
    """DFL's way: DFL-built sessions, a sequential loop, fresh arrays per step, full-frame float merge."""

    def __init__(self, workload: Workload, provider: str = "CPUExecutionProvider", device_id: int = 0) -> None:
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.facepipe.swapper import DFMSwapper
        from dfl_perf.sessions import SessionConfig, create_session

        self.workload = workload
        config = SessionConfig.dfl_default(provider, device_id)
        t0 = time.perf_counter()
        self.detector = FaceDetector(create_session(workload.detector_path(), config))
        self.swapper = DFMSwapper(create_session(workload.dfm_path(), config))
        self.session_seconds = time.perf_counter() - t0
        self.resolution = self.swapper.resolution

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One frame through detect → align → swap (one face at a time, as DFL) → merge."""
        from dfl_perf.facepipe.align import align_matrix, warp_face

        w = self.workload
        out = frame
        for face in self.detector.detect(frame)[: w.max_faces]:
            M = align_matrix(face.keypoints, self.resolution, w.coverage)
            crop = warp_face(frame, M, self.resolution)
            celeb, celeb_mask, face_mask = self.swapper.swap(crop, w.morph_factor if self.swapper.has_morph else None)
            out = merge_face_dfl_style(out, celeb[0], celeb_mask[0] * face_mask[0], M)
        if out is frame:
            out = frame.copy()  # DFL's merger always hands on a new frame
        return out

    def run(self, frames: Iterable[np.ndarray], sink: Optional[FrameSink] = None) -> RunStats:
        """Process every frame in order; ``sink(index, frame)`` receives each output frame."""
        stats = RunStats(started=time.perf_counter())
        for index, frame in enumerate(frames):
            check_frame(index, frame)
            t0 = time.perf_counter()
            out = self.process(frame)
            t1 = time.perf_counter()
            stats.latencies.append(t1 - t0)
            stats.completions.append(t1)
            stats.frames += 1
            if sink is not None:
                sink(index, out)
        stats.finished = time.perf_counter()
        return stats

    def close(self) -> None:
        self.detector = self.swapper = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------- optimized

def swap_workers_for(provider: str, budget: int) -> int:
    """Swap workers: on a CPU, one per usable core (each session thread single); on a GPU, one."""
    from dfl_perf.sessions import GPU_PROVIDERS

    return 1 if provider in GPU_PROVIDERS else max(1, budget)


class OptimizedRunner:
    """dfl_perf's way: tuned cached sessions, IOBinding with pools, a three-stage Pipeline.

    ``live=False`` (files, benchmarks) processes every frame in order with back-pressure;
    ``live=True`` (cameras) drops the oldest waiting frame and frames older than ``deadline``.
    """

    def __init__(self, workload: Workload, provider: Optional[str] = None, device_id: int = 0,
                 cache: Any = None, monitor: Any = None, swap_workers: Optional[int] = None,
                 live: bool = False, deadline: Optional[float] = None, max_queue: int = 2,
                 disk_cache: bool = False) -> None:
        from dfl_perf.buffers import BoundSession, BufferPool, DFMRunner
        from dfl_perf.devices import cpu_budget, select_providers
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.sessions import ModelCache, SessionConfig

        self.workload = workload
        providers = select_providers(provider, device_id) if provider else select_providers(device_id=device_id)
        self.provider = providers[0][0]
        config = SessionConfig.tuned(threads=1, providers=providers).replace(disk_cache=disk_cache)
        self.cache = cache if cache is not None else ModelCache(max_models=4)
        self._owns_cache = cache is None
        t0 = time.perf_counter()
        det_session = self.cache.get(workload.detector_path(), config)
        dfm_session = self.cache.get(workload.dfm_path(), config)
        self.session_seconds = time.perf_counter() - t0
        device = "cpu" if self.provider == "CPUExecutionProvider" else "cuda"
        self.pool = BufferPool(max_bytes=256 << 20)
        self.detector = FaceDetector(det_session)
        self.det_bound = BoundSession(det_session, host_pool=self.pool)
        self.dfm = DFMRunner(dfm_session, device=device if device == "cpu" else "cpu", host_pool=self.pool)
        self.resolution = self.dfm.resolution
        self.swap_workers = swap_workers or swap_workers_for(self.provider, cpu_budget())
        self.monitor = monitor
        self.live = live
        self.deadline = deadline
        self.max_queue = max_queue
        self._runs: List[Any] = []  # (thread, pipeline, stop event) of each run in progress
        self._runs_changed = threading.Condition()
        self._closed = self._released = False

    # -- stages: each takes an FrameItem and returns it
    def _detect_state(self) -> np.ndarray:
        return np.zeros(self.detector.input_shape, np.float32)

    def detect(self, item: FrameItem, blob_buffer: np.ndarray) -> FrameItem:
        from dfl_perf.facepipe.align import align_matrix, warp_face

        check_frame(item.index, item.frame)
        det, w, res = self.detector, self.workload, self.resolution
        blob, scale = det.preprocess(item.frame, out=blob_buffer)
        faces = det.decode(self.det_bound.run({det.input_name: blob}), scale)[: w.max_faces]
        item.mats = [align_matrix(f.keypoints, res, w.coverage) for f in faces]
        if faces:
            item.crops = self.pool.acquire((len(faces), res, res, 3), np.uint8)
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

        out = self.pool.acquire(item.frame.shape, np.uint8)
        if item.celebs is None:
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
        return [
            Stage(self.detect, workers=1, name="detect", init=self._detect_state),
            Stage(self.swap, workers=self.swap_workers, name="swap", max_queue=1),
            Stage(self.merge, workers=1, name="merge", max_queue=1),
        ]

    def pipeline(self) -> Any:
        from dfl_perf.processor import Pipeline

        return Pipeline(self.stages(), drop="oldest" if self.live else "block", max_queue=self.max_queue,
                        deadline=self.deadline, ordered=True, monitor=self.monitor, name="facepipe")

    def release(self, output: np.ndarray) -> None:
        """Give an output frame back to the pool once the caller is done with it."""
        self.pool.release(output)

    def _drop_buffers(self, item: Any) -> None:
        for name in ("crops", "celebs", "masks", "output"):
            buf = getattr(item, name, None)
            if buf is not None:
                self.pool.release(buf)
                setattr(item, name, None)

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
        inflight = InFlight()
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
                except BaseException:
                    stop.set()
                    pipe.close(drain=False)  # frees a feeder waiting for room; it stops at its next frame
                    raise
                finally:
                    feeder.join()
        finally:
            for item in inflight.take_all():  # left unread when the run stopped early
                self._drop_buffers(item)
            self._end_run(pipe)
        stats.finished = time.perf_counter()
        stats.accounting = pipe.stats()
        if errors:
            raise errors[0]
        return stats

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
            for index, frame in enumerate(frames):
                if stop.is_set():
                    break
                item = FrameItem(index, frame)
                inflight.add(item)
                pipe.submit(item)
        except BaseException as exc:  # surfaced by run() in the caller's thread
            if not stop.is_set():
                errors.append(exc)
        finally:
            pipe.close(drain=True)

    def _account(self, result: Any, stats: RunStats, sink: Optional[FrameSink],
                 inflight: InFlight) -> None:
        item, missed = inflight.take(result.id)
        for lost in missed:  # dropped unread from a full output (live): no result will come
            self._drop_buffers(lost)
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
        self.dfm.close()
        self.det_bound.close()
        if self._owns_cache:
            self.cache.clear()

    def __enter__(self) -> OptimizedRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def frames_digest(frames: Sequence[np.ndarray]) -> str:
    """A short hash of a frame list, to prove two runs saw the same frames."""
    h = hashlib.sha256()
    for f in frames:
        h.update(np.ascontiguousarray(f).data)
    return h.hexdigest()[:16]
