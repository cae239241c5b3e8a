"""Run frames through callables on worker threads, live: bounded queues, drop policies, deadlines,
ordered output, exact accounting.

``AsyncFrameProcessor(fn, workers=...)`` runs one callable; ``Pipeline([Stage(...), ...])`` links
stages by bounded queues so that stage k of frame N+1 overlaps stage k+1 of frame N;
``plan_workers`` sizes each stage's workers from costs that ``measure_stages`` measured. Knows
nothing of ONNX: a stage is any callable. A monitor is duck-typed (see ``Pipeline``). Every
submitted frame yields exactly one ``FrameResult``: processed (DONE), DROPPED, LATE or ERROR.

A live loop::

    stages = [Stage(detect, name="detect"), Stage(swap, workers=2, name="swap"), Stage(merge, name="merge")]
    with Pipeline(stages, drop="oldest", max_queue=2, deadline=0.1) as pipe:
        for frame in camera:
            pipe.submit(frame, meta=frame_time)
            result = pipe.get(timeout=0)          # None when nothing is ready yet
            while result is not None:
                if result.ok:
                    show(result.output)
                result = pipe.get(timeout=0)
"""

from __future__ import annotations

from ._pipeline import Pipeline
from ._processor import AsyncFrameProcessor
from ._types import FrameResult, FrameStatus, ProcessorClosed, Stage
from .plan import measure_stages, plan_workers

__all__ = [
    "AsyncFrameProcessor",
    "Pipeline",
    "Stage",
    "FrameResult",
    "FrameStatus",
    "ProcessorClosed",
    "plan_workers",
    "measure_stages",
]
