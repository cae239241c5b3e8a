"""The reference face-swap workload, run two ways on the same frames and models.

- ``BaselineRunner`` (``baseline.py``): what DeepFaceLive does today. Sessions built exactly like DFL's
  ``InferenceSession_with_device`` (ORT defaults: spinning thread pools), one sequential loop,
  fresh arrays for every step, and DFL's merge (the whole frame as float32).
- ``OptimizedRunner`` (``optimized.py``): dfl_perf. Tuned sessions from a ``ModelCache`` (spinning off, one intra-op
  thread each), IOBinding runners with pooled buffers (``BoundSession``, ``DFMRunner``), and a
  ``Pipeline`` of three stages (detect+align, swap, merge) so the detection of frame N+1 overlaps
  the swap of frame N, with several swap workers on a CPU.

Both produce the same output frames (within a couple of uint8 levels: the merge quantises the
swapped face in crop space, DFL in frame space). ``Workload`` names the models: YuNet for
detection and a real DFM or the DFM-shaped stand-in (``standin.py``) for the swap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR
from dfl_perf.facepipe.frames import BadFrameError, FrameItem, check_frame

__all__ = ["Workload", "RunStats", "FrameItem", "paced_frames", "standin_model_path", "BadFrameError", "check_frame"]

# The two runners live in their own modules (they import this one); these names stay importable here.
_RUNNERS = {"BaselineRunner": "baseline", "merge_face_dfl_style": "baseline", "run_live_latest": "baseline",
            "OptimizedRunner": "optimized", "swap_workers_for": "optimized"}


def __getattr__(name: str) -> Any:
    module = _RUNNERS.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    import importlib

    return getattr(importlib.import_module("dfl_perf.facepipe." + module), name)

FrameSink = Callable[[int, np.ndarray], None]
log = logging.getLogger("dfl_perf.facepipe")
_ERRORS_KEPT = 20


# ------------------------------------------------------------------------------------- models

def standin_model_path(resolution: int = 224, cost: str = "20ms", morph: bool = False, dense_mb: float = 0.0) -> Path:
    """The DFM stand-in saved as a file in the user cache (built once, written atomically).

    ``dense_mb``: that many MB of weights read on every run, like a real DFM's (see ``standin``).
    """
    from dfl_perf.facepipe.standin import build_dfm_standin
    from dfl_perf.paths import ensure_private_dir, user_cache_dir

    folder = ensure_private_dir(user_cache_dir() / "standins")
    weights = "_w%g" % dense_mb if dense_mb > 0 else ""
    path = folder / ("dfm_standin_%d_%s%s%s.onnx" % (resolution, cost, "_amp" if morph else "", weights))
    if not path.is_file():
        data = build_dfm_standin(resolution=resolution, cost=cost, morph=morph, dense_mb=dense_mb).SerializeToString()
        tmp = path.with_name("%s.%d.tmp" % (path.name, os.getpid()))
        tmp.write_bytes(data)
        os.replace(str(tmp), str(path))
    return path


@dataclass(frozen=True)
class Workload:
    """Which models the workload runs. ``dfm=None`` uses the stand-in of ``dfm_cost``/``dfm_resolution``
    with ``dfm_weights_mb`` MB of weights read every run (0: the stand-in's own 0.3 MB)."""

    detector: str = "yunet_n_320_320"
    dfm: Optional[str] = None
    dfm_cost: str = "20ms"
    dfm_resolution: int = 224
    dfm_weights_mb: float = 0.0
    coverage: float = 2.2
    max_faces: int = 1
    morph_factor: float = DEFAULT_MORPH_FACTOR

    def __post_init__(self) -> None:
        if not self.dfm_weights_mb >= 0:
            raise ValueError("Workload.dfm_weights_mb must be >= 0 (MB of stand-in weights), got %r"
                             % (self.dfm_weights_mb,))

    def detector_path(self) -> Path:
        """The detector model file: a path, or a registry name (mirror, user cache, then download)."""
        if Path(self.detector).is_file():
            return Path(self.detector)
        from dfl_perf.facepipe.models import model_path

        return model_path(self.detector)

    def dfm_path(self) -> Path:
        """The DFM model file: the one given, or the stand-in built into the user cache."""
        if self.dfm is None:
            return standin_model_path(self.dfm_resolution, self.dfm_cost, dense_mb=self.dfm_weights_mb)
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
            if sel.any() and (width > 0.2 * window or lo == 0.0):  # a run shorter than that: its one row
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
