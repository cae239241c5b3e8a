"""The live quality knobs of the optimized runner: how often faces are detected, and at what size.

``LiveQuality`` holds what the detect stage reads on every frame: ``detect_every`` (run the detector
on one frame in N; the frames between reuse the faces it last found) and the detector input size
(the model's own, then smaller ones, run on a copy of the model whose input size is left free).
``knobs()`` hands both to ``monitor.AdaptiveController``, which turns them to hold a target FPS:
the interval first (at 30 FPS a face moves little between frames), then the input size (a smaller
input misses small faces first). YuNet is fully convolutional, so the free-size copy computes the
same thing at any size that is a multiple of 32.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["LiveQuality", "QualityControl", "DETECT_EVERY", "DETECTOR_SIZES", "free_size_model"]

#: Detection intervals, best first: detect on every frame, one in 2, one in 3.
DETECT_EVERY = (1, 2, 3)
#: Detector input sizes below the model's own, best first.
DETECTOR_SIZES = (256, 192)


def free_size_model(path: Path) -> Path:
    """A copy of the YuNet model at ``path`` whose input height and width are free (built once into
    the user cache, next to nothing: the weights are the same). Needs the ``onnx`` package."""
    import onnx

    from dfl_perf.files import sha256_file, write_atomic
    from dfl_perf.paths import ensure_private_dir, user_cache_dir

    folder = ensure_private_dir(user_cache_dir() / "detectors")
    target = folder / ("%s_%s_free_size.onnx" % (path.stem, sha256_file(path)[:16]))
    if target.is_file():
        return target
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ValueError("detector %s: input must be [1,3,H,W], got %d dims" % (path, len(dims)))
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.ClearField("dim_value")
        dim.dim_param = name
    for output in model.graph.output:  # the cell counts follow the input size
        for dim in output.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value != 1:
                dim.ClearField("dim_value")
                dim.dim_param = "cells_" + output.name
    del model.graph.value_info[:]
    write_atomic(target, model.SerializeToString())
    return target


class _Detector:
    """One input size: the FaceDetector that pre- and post-processes, and the runner that runs it."""

    __slots__ = ("size", "detector", "run")

    def __init__(self, size: int, detector: Any, run: Callable[[Dict[str, np.ndarray]], Any]) -> None:
        self.size = size
        self.detector = detector
        self.run = run


class LiveQuality:
    """What the detect stage reads per frame: the detector to use, and whether to detect at all.

    ``detectors``: ``{input size: (FaceDetector, run)}``, the model's own size first, where ``run``
    maps the inputs to the outputs (an IOBinding runner). Thread-safe: several detect workers may
    share it while a controller turns the knobs.
    """

    def __init__(self, detectors: Dict[int, Tuple[Any, Callable[..., Any]]]) -> None:
        if not detectors:
            raise ValueError("LiveQuality needs at least one detector")
        self._detectors = {size: _Detector(size, det, run) for size, (det, run) in detectors.items()}
        self.sizes: Tuple[int, ...] = tuple(detectors)
        self._current = self._detectors[self.sizes[0]]
        self.detect_every = 1
        self._lock = threading.Lock()
        self._frames = 0  # frames seen since the interval was set
        self._last: List[np.ndarray] = []  # the keypoints of the last detection

    @property
    def detector_size(self) -> int:
        return self._current.size

    def set_detector_size(self, size: int) -> None:
        """Use the detector at ``size`` from the next frame on."""
        if size not in self._detectors:
            raise ValueError("detector size %r not one of %s" % (size, self.sizes))
        self._current = self._detectors[size]

    def set_detect_every(self, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError("detect_every must be an int >= 1, got %r" % (every,))
        with self._lock:
            self.detect_every = every
            self._frames = 0

    def detector(self) -> _Detector:
        """The detector for this frame (read once per frame: a knob may turn meanwhile)."""
        return self._current

    def detection_due(self) -> bool:
        """True for the frames the detector runs on: one in ``detect_every``, counted as they come."""
        if self.detect_every == 1:
            return True
        with self._lock:
            due = self._frames % self.detect_every == 0
            self._frames += 1
            return due

    def remember(self, keypoints: List[np.ndarray]) -> None:
        """The faces just found, for the frames that skip detection."""
        self._last = keypoints

    def last_faces(self) -> List[np.ndarray]:
        return self._last

    def knobs(self) -> List[Any]:
        """The two knobs, best quality first, for ``monitor.AdaptiveController``."""
        from dfl_perf.monitor import Knob

        knobs = [Knob("detect_every", DETECT_EVERY, self.set_detect_every)]
        if len(self.sizes) > 1:
            knobs.append(Knob("detector_size", self.sizes, self.set_detector_size))
        return knobs


class QualityControl:
    """Holds ``target_fps`` on a live source by turning a ``LiveQuality``'s knobs with
    ``monitor.AdaptiveController``, from the results the runner reads: every ``window`` seconds, the
    frames done per second, and whether every frame of the source was done (nothing dropped or
    late: the FPS is then the source's own, see ``AdaptiveController``)."""

    def __init__(self, quality: LiveQuality, target_fps: float, window: float = 0.5,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        from dfl_perf.monitor import AdaptiveController

        self.controller = AdaptiveController(target_fps, quality.knobs(), cooldown=1, improve_after=3)
        self.window = window
        self._clock = clock
        self._start: Optional[float] = None
        self._done = self._lost = 0

    def frame(self, done: bool, lost: bool) -> None:
        """One result: ``done`` (processed) or ``lost`` (dropped or late: the pipeline fell behind)."""
        now = self._clock()
        if self._start is None:  # the window opens at the first result, which it does not count
            self._start = now
            return
        self._done += done
        self._lost += lost
        elapsed = now - self._start
        if elapsed >= self.window:
            self.controller.update(self._done / elapsed, source_bound=self._lost == 0)
            self._start, self._done, self._lost = now, 0, 0

    def report(self) -> Dict[str, Any]:
        """The target, the settings now and every change with its reason (JSON-ready)."""
        controller = self.controller
        return {"target_fps": controller.target_fps, "settings": controller.settings(),
                "changes": [change._asdict() for change in controller.changes]}
