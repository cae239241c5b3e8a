"""AsyncFrameProcessor: one callable on worker threads, live (a one-stage Pipeline)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from ._pipeline import Pipeline
from ._types import FrameResult, Stage

__all__ = ["AsyncFrameProcessor"]


class AsyncFrameProcessor(Pipeline):
    """Run ``fn(frame) -> output`` on ``workers`` threads: a one-stage Pipeline (see its doc).

    ``init``: optional per-worker-thread state factory; ``fn`` is then called as ``fn(frame, state)``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        workers: int = 1,
        max_queue: int = 4,
        drop: str = "oldest",
        ordered: bool = True,
        deadline: Optional[float] = None,
        on_error: str = "skip",
        on_result: Optional[Callable[[FrameResult], Any]] = None,
        monitor: Any = None,
        init: Optional[Callable[[], Any]] = None,
        max_output: Optional[int] = None,
        name: str = "process",
    ) -> None:
        stage = Stage(fn, workers=workers, name=name, init=init)
        super().__init__(
            [stage],
            drop=drop,
            max_queue=max_queue,
            deadline=deadline,
            ordered=ordered,
            on_error=on_error,
            on_result=on_result,
            monitor=monitor,
            max_output=max_output,
            name=name,
        )
