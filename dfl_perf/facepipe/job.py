"""What both runners of the reference workload share: the ``Workload`` they run (which models), the
``FrameSink`` they hand outputs to, the ``RunStats`` they return, and ``paced_frames`` (a camera's pace).

The runners (``baseline.py``, ``optimized.py``) import this module; ``workload.py`` sits above all
three and names them together.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR
from dfl_perf.monitor.stats import describe, percentile

__all__ = ["Workload", "RunStats", "FrameSink", "paced_frames", "standin_model_path"]

FrameSink = Callable[[int, np.ndarray], None]


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
    adaptive: Dict[str, Any] = field(default_factory=dict)  # live runs with a target FPS: QualityControl.report()

    @property
    def seconds(self) -> float:
        return max(self.finished - self.started, 1e-9)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    def latency_percentiles(self) -> Dict[str, float]:
        """``{p50, p95, p99, max}`` of the frames' latencies (seconds; NaN when no frame was done)."""
        stats = describe(self.latencies)
        return {key: float("nan") if stats[key] is None else stats[key] for key in ("p50", "p95", "p99", "max")}

    def timeline(self, window: float = 0.5) -> List[Dict[str, float]]:
        """Per-window rows ``{t, fps, latency_p50}`` (t from the start of the run), for plots.

        The last window is only as long as the run and left out when under a fifth of ``window``,
        unless it is the only one (a run shorter than that still gets its row)."""
        if not self.completions:
            return []
        done = np.asarray(self.completions) - self.started
        lat = np.asarray(self.latencies)
        rows = []
        end = float(done.max())
        for lo in np.arange(0.0, end + window, window):
            sel = (done >= lo) & (done < lo + window)
            width = min(window, end - lo)
            if sel.any() and width > 0 and (width > 0.2 * window or lo == 0.0):
                rows.append({"t": float(lo + width), "fps": float(sel.sum() / width),
                             "latency_p50": float(percentile(np.sort(lat[sel]), 50.0))})
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
