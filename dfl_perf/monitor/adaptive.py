"""AdaptiveController: hold a target FPS by moving quality knobs, with hysteresis and a cool-down."""

from __future__ import annotations

import collections
import time
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence

__all__ = ["Knob", "AdaptiveController", "KnobChange"]


class Knob:
    """A quality setting: ``values`` ordered from highest quality (index 0) to cheapest.

    ``apply(value)`` is called by ``set_index`` with the new value (the host changes its pipeline
    there); ``index`` is the current position (the host's present setting).
    """

    def __init__(self, name: str, values: Sequence[Any], apply: Optional[Callable[[Any], None]] = None,
                 index: int = 0) -> None:
        values = tuple(values)
        if not values:
            raise ValueError("knob %r needs at least one value" % (name,))
        if not 0 <= index < len(values):
            raise ValueError("knob %r index %r outside 0..%d" % (name, index, len(values) - 1))
        if apply is not None and not callable(apply):
            raise TypeError("knob %r apply must be callable, got %r" % (name, apply))
        self.name = name
        self.values = values
        self.index = index
        self.apply = apply

    @property
    def value(self) -> Any:
        """The current value."""
        return self.values[self.index]

    @property
    def at_cheapest(self) -> bool:
        """True when no cheaper value is left."""
        return self.index == len(self.values) - 1

    def set_index(self, index: int) -> None:
        """Move to ``values[index]`` and call ``apply`` (the index changes only if apply succeeds)."""
        if not 0 <= index < len(self.values):
            raise ValueError("knob %r index %r outside 0..%d" % (self.name, index, len(self.values) - 1))
        if self.apply is not None:
            self.apply(self.values[index])
        self.index = index

    def __repr__(self) -> str:
        return "Knob(%r, %r, index=%d)" % (self.name, list(self.values), self.index)


class KnobChange(NamedTuple):
    """One move of the controller, with the measurements behind it."""

    window: int  # number of the update() call that made the change (1-based)
    time: float  # controller clock at the change
    knob: str
    old: Any
    new: Any
    direction: str  # "degrade" (cheaper) or "improve" (better quality)
    fps: float  # FPS measured in that window
    target_fps: float
    predicted_fps: Optional[float]  # for "improve": the FPS expected after the change (None: on trial)
    p95: Optional[float]  # end-to-end p95 latency (seconds) when read from a monitor
    reason: str


class _Step:
    """One degrade on the stack: how to undo it and what it bought."""

    __slots__ = ("knob", "old_index", "fps_before", "fps_after", "after_source_bound", "patience")

    def __init__(self, knob: Knob, old_index: int, fps_before: float, patience: int) -> None:
        self.knob = knob
        self.old_index = old_index
        self.fps_before = fps_before
        self.fps_after: Optional[float] = None
        self.after_source_bound = False  # fps_after was the source's rate, not what the step bought
        self.patience = patience


class AdaptiveController:
    """Moves ``knobs`` one step at a time to keep FPS at ``target_fps``.

    Call ``update()`` once per measurement window (it reads ``monitor.summary()["fps"]``) or
    ``update(fps)``. Below ``target * (1 - tolerance)`` the first knob (in list order) that is not
    at its cheapest value goes one step cheaper. Quality comes back last-degraded-first, only when
    the FPS predicted after undoing the step (the current FPS scaled by what that step bought,
    measured after it) stays above ``target * (1 + headroom)`` for ``improve_after`` windows in a
    row. ``update(fps, source_bound=True)`` says that the pipeline did every frame its source gave
    in the window (a live camera): the FPS is then the source's, so a low one is no reason to
    degrade, and when it was so after a step, what the step bought cannot be seen: the step is
    undone on trial after ``improve_after`` such windows. After any change ``cooldown`` windows are
    skipped, so a window still holding frames from before the change never drives a decision. An
    improvement that has to be undone soon after doubles that step's patience (up to 8x), so a
    borderline load cannot make it oscillate. Every change is logged in ``changes`` (a bounded
    list of ``KnobChange``).
    """

    def __init__(
        self,
        target_fps: float,
        knobs: Sequence[Knob],
        monitor: Optional[Any] = None,
        tolerance: float = 0.05,
        headroom: float = 0.10,
        cooldown: int = 1,
        improve_after: int = 3,
        max_log: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if target_fps <= 0:
            raise ValueError("target_fps must be > 0, got %r" % (target_fps,))
        knobs = list(knobs)
        names = [knob.name for knob in knobs]
        if len(set(names)) != len(names):
            raise ValueError("knob names must be unique, got %r" % (names,))
        if not 0 <= tolerance < 1 or headroom < 0 or cooldown < 0 or improve_after < 1:
            raise ValueError("need 0 <= tolerance < 1, headroom >= 0, cooldown >= 0, improve_after >= 1")
        self.target_fps = float(target_fps)
        self.knobs = knobs
        self.monitor = monitor
        self.tolerance = tolerance
        self.headroom = headroom
        self.cooldown = cooldown
        self.improve_after = improve_after
        self._clock = clock
        self._log: Deque[KnobChange] = collections.deque(maxlen=max_log)
        self._steps: List[_Step] = []
        self._window = 0
        self._last_change_window = -(10 ** 9)
        self._last_improve: Optional[Dict[str, Any]] = None
        self._good_windows = 0
        self.saturated = False

    @property
    def changes(self) -> List[KnobChange]:
        """Every change made so far (oldest first, bounded by ``max_log``)."""
        return list(self._log)

    def settings(self) -> Dict[str, Any]:
        """``{knob name: current value}``."""
        return {knob.name: knob.value for knob in self.knobs}

    def update(self, fps: Optional[float] = None, source_bound: bool = False) -> Optional[KnobChange]:
        """Take one window's measurement and move at most one knob; returns the change or None.

        ``source_bound``: every frame the source gave in the window was done (see the class doc).
        """
        self._window += 1
        p95 = None
        if fps is None:
            if self.monitor is None:
                raise ValueError("update() needs an fps value when the controller has no monitor")
            summary = self.monitor.summary()
            if not summary.get("frames"):
                return None  # nothing measured yet
            fps, p95 = float(summary["fps"]), (summary.get("latency") or {}).get("p95")
        fps = float(fps)
        since_change = self._window - self._last_change_window
        if since_change <= self.cooldown:
            return None
        if self._steps and self._steps[-1].fps_after is None:
            self._steps[-1].fps_after = fps  # first clean window after the last degrade
            self._steps[-1].after_source_bound = source_bound
        if fps < self.target_fps * (1.0 - self.tolerance) and not source_bound:
            self._good_windows = 0
            return self._degrade(fps, p95)
        self.saturated = False
        return self._maybe_improve(fps, p95)

    def _degrade(self, fps: float, p95: Optional[float]) -> Optional[KnobChange]:
        knob = next((item for item in self.knobs if not item.at_cheapest), None)
        if knob is None:
            self.saturated = True
            return None
        patience = self.improve_after
        recent = self._last_improve
        if (recent is not None and recent["knob"] is knob and recent["index"] == knob.index
                and self._window - recent["window"] <= self.cooldown + 2 * recent["patience"]):
            patience = min(recent["patience"] * 2, self.improve_after * 8)  # that improve did not hold
        step = _Step(knob, knob.index, fps, patience)
        reason = "fps %.2f below %.2f (target %.2f - %d%%)" % (
            fps, self.target_fps * (1.0 - self.tolerance), self.target_fps, round(self.tolerance * 100))
        change = self._move(knob, knob.index + 1, "degrade", fps, None, p95, reason)
        self._steps.append(step)
        return change

    def _maybe_improve(self, fps: float, p95: Optional[float]) -> Optional[KnobChange]:
        if not self._steps:
            return None
        step = self._steps[-1]
        if step.fps_after is None or step.fps_after <= 0:
            return None
        needed = self.target_fps * (1.0 + self.headroom)
        predicted: Optional[float] = None
        if not step.after_source_bound:
            predicted = fps * step.fps_before / step.fps_after
            if predicted < needed:
                self._good_windows = 0
                return None
        self._good_windows += 1
        if self._good_windows < step.patience:
            return None
        self._steps.pop()
        if predicted is None:
            reason = "every frame of the source done for %d windows (fps %.2f; what the step bought is not seen): on trial" % (
                step.patience, fps)
        else:
            reason = "predicted fps %.2f after undoing (measured %.2f x %.2f/%.2f) >= %.2f for %d windows" % (
                predicted, fps, step.fps_before, step.fps_after, needed, step.patience)
        change = self._move(step.knob, step.old_index, "improve", fps, predicted, p95, reason)
        self._last_improve = {"knob": step.knob, "index": step.old_index, "window": self._window,
                              "patience": step.patience}
        return change

    def _move(self, knob: Knob, index: int, direction: str, fps: float, predicted: Optional[float],
              p95: Optional[float], reason: str) -> KnobChange:
        old = knob.value
        knob.set_index(index)
        change = KnobChange(self._window, self._clock(), knob.name, old, knob.value, direction, fps,
                            self.target_fps, predicted, p95, reason)
        self._log.append(change)
        self._last_change_window = self._window
        self._good_windows = 0
        return change

    def __repr__(self) -> str:
        return "<AdaptiveController target=%.1f fps settings=%r changes=%d>" % (
            self.target_fps, self.settings(), len(self._log))
