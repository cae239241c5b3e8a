"""Choose workers per stage and intra-op threads per session from a short measurement."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ._types import Stage

__all__ = ["PipelinePlan", "auto_configure"]

_CPU_PROVIDER = "CPUExecutionProvider"


@dataclass
class PipelinePlan:
    """What ``auto_configure`` chose, and why (the measured cost of each stage).

    ``workers`` and ``intra_op_threads`` are keyed by stage name. The threads are for the host to
    apply when it creates the stage's session (the processor does not build sessions);
    ``apply(stages)`` returns the stages with the chosen worker counts.
    """

    workers: Dict[str, int]
    intra_op_threads: Dict[str, int]
    seconds_per_frame: Dict[str, float]
    cpu_budget: int
    gpu_stages: List[str] = field(default_factory=list)
    bottleneck: str = ""
    estimated_fps: float = 0.0

    def apply(self, stages: Sequence[Stage]) -> List[Stage]:
        """Copies of ``stages`` with the planned worker counts."""
        return [s.replace(workers=self.workers.get(s.name, s.workers)) for s in stages]

    def describe(self) -> str:
        lines = [
            "plan for %d cores (bottleneck %s, about %.1f frames/s):"
            % (self.cpu_budget, self.bottleneck, self.estimated_fps)
        ]
        for name, seconds in self.seconds_per_frame.items():
            where = " (GPU)" if name in self.gpu_stages else ""
            lines.append(
                "  %-12s %8.2f ms/frame  workers=%d  intra_op_threads=%d%s"
                % (name, seconds * 1e3, self.workers[name], self.intra_op_threads[name], where)
            )
        return "\n".join(lines)


def auto_configure(
    stages: Sequence[Stage],
    sample: Any,
    cpu_budget: Optional[int] = None,
    measure_seconds: float = 1.0,
    sessions: Optional[Mapping[str, Any]] = None,
    heavy_share: float = 0.5,
) -> PipelinePlan:
    """Measure each stage on ``sample`` and split ``cpu_budget`` cores between the stages.

    Each stage runs alone on this thread, on the output of the stage before it (so ``fn`` is called
    several times on the same input: it must not consume it), for about ``measure_seconds`` in all
    (at least 3 timed calls after one warm-up); create sessions with one intra-op thread for it.
    The rule: GPU stages (a session in ``sessions`` whose first provider is not the CPU one) get one
    worker and one thread and keep one core each for feeding; every CPU stage starts at one worker and
    each remaining core goes to the stage that limits the frame rate (largest cost / workers). A
    stage that can use intra-op threads (``Stage.multithreaded`` or a CPU session in ``sessions``)
    and costs more than ``heavy_share`` of the CPU total then takes its cores as intra-op threads of
    one worker (a heavy model gains more from threads than from copies); other stages keep one
    intra-op thread per worker. ``cpu_budget`` defaults to ``dfl_perf.devices.cpu_budget()``.
    """
    stages = list(stages)
    if not stages:
        raise ValueError("auto_configure needs at least one Stage")
    if cpu_budget is None:
        from ..devices import cpu_budget as detect_cpu_budget

        cpu_budget = detect_cpu_budget()
    if isinstance(cpu_budget, bool) or not isinstance(cpu_budget, int) or cpu_budget < 1:
        raise ValueError("cpu_budget must be an int >= 1, got %r" % (cpu_budget,))
    if not measure_seconds > 0:
        raise ValueError("measure_seconds must be > 0, got %r" % (measure_seconds,))
    sessions = dict(sessions or {})
    unknown = sorted(set(sessions) - {s.name for s in stages})
    if unknown:
        raise ValueError("sessions names no stage: %s (stages: %s)" % (unknown, [s.name for s in stages]))
    costs = _measure(stages, sample, measure_seconds / len(stages))
    gpu = [s.name for s in stages if s.name in sessions and _on_gpu(sessions[s.name])]
    threaded = {s.name for s in stages if s.multithreaded or (s.name in sessions and s.name not in gpu)}
    return _plan(stages, costs, cpu_budget, gpu, threaded, heavy_share)


def _measure(stages: Sequence[Stage], sample: Any, seconds_each: float) -> Dict[str, float]:
    costs: Dict[str, float] = {}
    item = sample
    for stage in stages:
        state = stage.init() if stage.init is not None else None

        def call(x: Any, stage: Stage = stage, state: Any = state) -> Any:
            return stage.fn(x, state) if stage.init is not None else stage.fn(x)

        try:
            output = call(item)  # warm-up; its output feeds the next stage
        except Exception as exc:
            raise RuntimeError(
                "auto_configure: stage %r failed on the sample: %r" % (stage.name, exc)
            ) from exc
        times: List[float] = []
        end = time.perf_counter() + seconds_each
        while len(times) < 3 or time.perf_counter() < end:
            t0 = time.perf_counter()
            call(item)
            times.append(time.perf_counter() - t0)
        costs[stage.name] = statistics.median(times)
        item = output
    return costs


def _on_gpu(session: Any) -> bool:
    providers = session.get_providers() if hasattr(session, "get_providers") else [_CPU_PROVIDER]
    return bool(providers) and providers[0] != _CPU_PROVIDER


def _plan(
    stages: Sequence[Stage],
    costs: Dict[str, float],
    budget: int,
    gpu: List[str],
    threaded: set,
    heavy_share: float,
) -> PipelinePlan:
    cpu = [s.name for s in stages if s.name not in gpu]
    workers = {s.name: 1 for s in stages}
    threads = {s.name: 1 for s in stages}
    cores_left = max(0, budget - len(gpu) - len(cpu))
    for _ in range(cores_left if cpu else 0):
        bottleneck = max(cpu, key=lambda n: costs[n] / workers[n])
        workers[bottleneck] += 1
    cpu_total = sum(costs[n] for n in cpu)
    for name in cpu:
        if name in threaded and cpu_total > 0 and costs[name] > heavy_share * cpu_total:
            threads[name], workers[name] = workers[name], 1
    rates = {n: workers[n] * threads[n] / max(costs[n], 1e-9) for n in costs}
    bottleneck = min(rates, key=lambda n: rates[n])
    return PipelinePlan(
        workers=workers,
        intra_op_threads=threads,
        seconds_per_frame=dict(costs),
        cpu_budget=budget,
        gpu_stages=list(gpu),
        bottleneck=bottleneck,
        estimated_fps=rates[bottleneck],
    )
