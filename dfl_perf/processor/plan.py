"""Workers per stage, from what each stage costs: enough that no stage holds back the rate the cores allow.

``measure_stages`` times stages one after another on this thread (wall and CPU seconds per item);
``plan_workers`` turns those costs into a ``PipelinePlan``. The optimized face-swap runner plans its
detect, swap and merge workers this way on its first frame.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from ._types import Stage

__all__ = ["PipelinePlan", "plan_workers", "measure_stages"]

#: Workers beyond the exact need: a stage sized exactly to the rate idles the stages after it
#: whenever one frame runs long (a page fault, the GIL, another process).
SLACK = 0.25
MAX_WORKERS = 64


@dataclass(frozen=True)
class PipelinePlan:
    """What ``plan_workers`` chose, and why.

    ``workers``: per stage name. ``rate``: the frames per second the plan is sized for; ``bottleneck``:
    what sets it ("cpu" when the cores do, else a device stage's name). ``cpu_seconds`` and
    ``device_seconds``: the costs per frame it was given.
    """

    workers: Dict[str, int]
    rate: float
    bottleneck: str
    cpu_seconds: Dict[str, float]
    device_seconds: Dict[str, float]
    cpu_budget: int

    def apply(self, stages: Sequence[Stage]) -> List[Stage]:
        """Copies of ``stages`` with the planned worker counts."""
        return [s.replace(workers=self.workers.get(s.name, s.workers)) for s in stages]

    def describe(self) -> str:
        lines = ["plan for %d cores: about %.1f frames/s (bound: %s)" % (self.cpu_budget, self.rate, self.bottleneck)]
        for name, seconds in self.cpu_seconds.items():
            device = self.device_seconds.get(name)
            where = "" if device is None else ", %.2f ms on its device" % (device * 1e3)
            lines.append("  %-12s %7.2f ms CPU a frame%s  workers=%d" % (name, seconds * 1e3, where, self.workers[name]))
        return "\n".join(lines)


def plan_workers(cpu_seconds: Mapping[str, float], cpu_budget: Optional[int] = None,
                 device_seconds: Optional[Mapping[str, float]] = None, slack: float = SLACK) -> PipelinePlan:
    """Workers per stage for a pipeline whose stages cost ``cpu_seconds`` of CPU a frame each.

    CPU seconds, not wall time: a stage measured on a busy machine took longer than its work, and
    workers sized to that time would only add to the crowd. The stages share ``cpu_budget`` cores
    (default ``dfl_perf.devices.cpu_budget()``), less one core kept to feed each device stage.
    ``device_seconds``: the stages that run on an accelerator (an onnxruntime GPU session), with
    their time a frame there: one worker each, and each bounds the rate by itself. The rate is the
    lower of cores / the other stages' CPU seconds and each device stage's 1 / seconds; every other
    stage gets the workers that keep up with it: ceil(rate x CPU seconds x (1 + slack)), 1 to 64.
    """
    if not cpu_seconds:
        raise ValueError("plan_workers needs the cost of at least one stage")
    device = dict(device_seconds or {})
    unknown = sorted(set(device) - set(cpu_seconds))
    if unknown:
        raise ValueError("plan_workers: device_seconds names no stage: %s (stages: %s)" % (unknown, list(cpu_seconds)))
    for name, value in list(cpu_seconds.items()) + list(device.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise ValueError("plan_workers: the cost of stage %r must be seconds >= 0, got %r" % (name, value))
    if cpu_budget is None:
        from ..devices import cpu_budget as detect_cpu_budget

        cpu_budget = detect_cpu_budget()
    if isinstance(cpu_budget, bool) or not isinstance(cpu_budget, int) or cpu_budget < 1:
        raise ValueError("cpu_budget must be an int >= 1, got %r" % (cpu_budget,))
    cores = max(1, cpu_budget - len(device))
    host = sum(seconds for name, seconds in cpu_seconds.items() if name not in device)
    bounds = {"cpu": cores / host if host > 0 else math.inf}
    bounds.update((name, 1.0 / seconds if seconds > 0 else math.inf) for name, seconds in device.items())
    bottleneck = min(bounds, key=lambda key: bounds[key])
    rate = bounds[bottleneck]
    workers = {}
    for name, seconds in cpu_seconds.items():
        need = 1 if name in device or math.isinf(rate) else math.ceil(rate * seconds * (1.0 + slack) - 1e-9)
        workers[name] = min(MAX_WORKERS, max(1, need))
    return PipelinePlan(workers=workers, rate=rate, bottleneck=bottleneck, cpu_seconds=dict(cpu_seconds),
                        device_seconds=device, cpu_budget=cpu_budget)


def measure_stages(stages: Sequence[Tuple[str, Callable[[Any], Any]]], items: Iterable[Any],
                   finish: Optional[Callable[[Any], Any]] = None, warmup: int = 0
                   ) -> Tuple[Dict[str, float], Dict[str, float]]:
    """(median wall seconds, median CPU seconds) per item of each stage, run in turn on this thread.

    ``stages`` are ``(name, fn)`` pairs; each stage's output is the next one's input, and ``finish``
    (untimed) gets the last one's. The first ``warmup`` items are run but not counted. CPU time is
    this thread's (``time.thread_time``): what a core spends whatever else the machine does, as long
    as ``fn`` does its work on the calling thread (a session with one intra-op thread does).
    """
    names = [name for name, _ in stages]
    wall: Dict[str, List[float]] = {name: [] for name in names}
    cpu: Dict[str, List[float]] = {name: [] for name in names}
    for i, item in enumerate(items):
        for name, fn in stages:
            w0, c0 = time.perf_counter(), time.thread_time()
            item = fn(item)
            c1, w1 = time.thread_time(), time.perf_counter()
            if i >= warmup:
                wall[name].append(w1 - w0)
                cpu[name].append(c1 - c0)
        if finish is not None:
            finish(item)
    if not names or not wall[names[0]]:
        raise ValueError("measure_stages: no item measured (%s stages, warmup %d)" % (len(names), warmup))
    return ({name: statistics.median(wall[name]) for name in names},
            {name: statistics.median(cpu[name]) for name in names})
