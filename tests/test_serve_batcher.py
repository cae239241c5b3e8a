"""dfl_perf.serve.batcher.FaceBatcher: an idle model runs at once; requests that arrive while it is busy
share its next run (no Ray; both Pythons)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dfl_perf.serve.batcher import FaceBatcher


class _Model:
    """Records each run's requests; each run takes ``seconds``."""

    def __init__(self, seconds=0.05, fail_on=None):
        self.seconds = seconds
        self.fail_on = fail_on
        self.runs = []
        self.threads = set()

    def swap_groups(self, groups):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)
        names = [faces for faces, _ in groups]
        self.runs.append(names)
        if self.fail_on in names:
            raise RuntimeError("model failed on %s" % self.fail_on)
        return ["out-" + name for name in names]


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(1, thread_name_prefix="dfm-test")
    yield pool
    pool.shutdown(wait=True)


def test_an_idle_model_runs_a_lone_request_at_once(executor):
    model = _Model(seconds=0.01)
    batcher = FaceBatcher(model.swap_groups, executor, max_batch=8)

    async def main():
        start = time.perf_counter()
        reply, seconds = await batcher.swap("a", None)
        return reply, seconds, time.perf_counter() - start

    reply, seconds, elapsed = _run(main())
    assert reply == "out-a" and 0.01 <= seconds < 0.2
    assert elapsed < 0.2 and model.runs == [["a"]]


def test_requests_that_come_while_the_model_is_busy_share_the_next_run(executor):
    model = _Model(seconds=0.1)
    batcher = FaceBatcher(model.swap_groups, executor, max_batch=3)

    async def main():
        first = asyncio.ensure_future(batcher.swap("a", None))
        await asyncio.sleep(0.03)  # "a" is running now
        rest = [asyncio.ensure_future(batcher.swap(name, 0.5)) for name in "bcde"]
        return await asyncio.gather(first, *rest)

    replies = _run(main())
    assert [r for r, _ in replies] == ["out-a", "out-b", "out-c", "out-d", "out-e"]
    assert model.runs == [["a"], ["b", "c", "d"], ["e"]]  # max_batch 3
    assert model.threads == {"dfm-test_0"}
    assert (batcher.runs, batcher.requests) == (3, 5)


def test_a_failed_run_fails_its_requests_only(executor):
    model = _Model(seconds=0.05, fail_on="b")
    batcher = FaceBatcher(model.swap_groups, executor, max_batch=2)

    async def main():
        first = asyncio.ensure_future(batcher.swap("a", None))
        await asyncio.sleep(0.02)
        rest = [asyncio.ensure_future(batcher.swap(name, None)) for name in "bcd"]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    a, b, c, d = _run(main())
    assert a[0] == "out-a" and d[0] == "out-d"
    assert isinstance(b, RuntimeError) and isinstance(c, RuntimeError) and "model failed on b" in str(b)


def test_wait_holds_a_run_for_company(executor):
    model = _Model(seconds=0.01)
    batcher = FaceBatcher(model.swap_groups, executor, max_batch=4, wait_s=0.2)

    async def main():
        first = asyncio.ensure_future(batcher.swap("a", None))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(batcher.swap("b", None))
        return await asyncio.gather(first, second)

    _run(main())
    assert model.runs == [["a", "b"]]


def test_bad_max_batch():
    with pytest.raises(ValueError, match="max_batch"):
        FaceBatcher(lambda groups: [], None, max_batch=0)
