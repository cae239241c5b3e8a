"""Run frames through callables on worker threads, live: bounded queues, drop policies, deadlines,
ordered output, exact accounting.

``AsyncFrameProcessor(fn, workers=...)`` runs one callable; ``Pipeline([Stage(...), ...])`` links
stages by bounded queues so that stage k of frame N+1 overlaps stage k+1 of frame N;
``auto_configure`` picks workers and intra-op threads per stage from a short measurement. Knows
nothing of ONNX: a stage is any callable. A monitor is duck-typed (see ``Pipeline``).
"""

from __future__ import annotations

from ._pipeline import Pipeline
from ._processor import AsyncFrameProcessor
from ._types import FrameResult, FrameStatus, ProcessorClosed, Stage, Ticket
from .autoconfig import PipelinePlan, auto_configure

__all__ = [
    "AsyncFrameProcessor",
    "Pipeline",
    "Stage",
    "FrameResult",
    "FrameStatus",
    "Ticket",
    "ProcessorClosed",
    "auto_configure",
    "PipelinePlan",
]
