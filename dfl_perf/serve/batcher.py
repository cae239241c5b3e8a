"""``FaceBatcher``: requests that arrive while the model is busy run together in its next run.

An idle model runs a request at once (no wait for company: a lone stream pays nothing for
batching); requests that come while a run is in progress queue, and the next run takes all of them
(up to ``max_batch``). ``wait_s`` > 0 also holds a run that is not full for up to that long after
its oldest request arrived, for more company. Runs happen one at a time on one thread, off the
event loop. No Ray here: the Serve deployment (``app``) owns one per replica.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any, Callable, List, Optional, Sequence, Tuple

__all__ = ["FaceBatcher"]

RunGroups = Callable[[Sequence[Tuple[Any, Optional[float]]]], List[Any]]


def _timed(fn: RunGroups, groups: Sequence[Tuple[Any, Optional[float]]]) -> Tuple[List[Any], float]:
    started = time.perf_counter()
    result = fn(groups)
    return result, time.perf_counter() - started


class FaceBatcher:
    """``await swap(faces, morph) -> (reply, seconds of the run that served it)``; one per event loop.

    ``run_groups``: runs several requests' ``(faces, morph)`` in one model run, one reply each
    (``SwapModel.swap_groups``). ``executor``: where runs happen (one thread). ``max_batch``: requests
    per run (1: each request its own run).
    """

    def __init__(self, run_groups: RunGroups, executor: Executor, max_batch: int = 8, wait_s: float = 0.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1, got %r" % (max_batch,))
        self._run_groups = run_groups
        self._executor = executor
        self.max_batch = int(max_batch)
        self.wait_s = float(wait_s)
        self._waiting: List[Tuple[Any, Optional[float], float, Any]] = []  # faces, morph, arrival, future
        self._more: Optional[asyncio.Event] = None  # made on the loop that uses it (Python 3.8's Event binds one)
        self._draining = False
        self.runs = 0
        self.requests = 0

    async def swap(self, faces: Any, morph: Optional[float]) -> Tuple[Any, float]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((faces, morph, time.perf_counter(), future))
        if self._more is None:
            self._more = asyncio.Event()
        self._more.set()
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                await self._hold_for_company()
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                groups = [(faces, morph) for faces, morph, _, _ in batch]
                try:
                    replies, seconds = await loop.run_in_executor(self._executor, _timed, self._run_groups, groups)
                except Exception as exc:  # every request of the failed run gets the error
                    for _, _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.runs += 1
                self.requests += len(batch)
                for (_, _, _, future), reply in zip(batch, replies):
                    if not future.done():  # its client may have gone (cancelled)
                        future.set_result((reply, seconds))
        finally:
            self._draining = False

    async def _hold_for_company(self) -> None:
        if self.wait_s <= 0:
            return
        while len(self._waiting) < self.max_batch:
            left = self._waiting[0][2] + self.wait_s - time.perf_counter()
            if left <= 0:
                return
            more = self._more
            assert more is not None
            more.clear()
            try:
                await asyncio.wait_for(more.wait(), left)
            except asyncio.TimeoutError:
                return
