"""The Ray Serve deployment of a DFM: one ``SwapModel`` per replica, requests batched across clients
(``FaceBatcher``: requests that arrive while the model is busy share its next run).

Imported only by ``dfl-perf serve`` (``dfl_perf.serve.command``) and the tests and benchmarks that
run a server: it imports Ray. The HTTP behaviour lives in ``service``, the model in ``model``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Tuple

from ray import serve
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from dfl_perf.remote.wire import CODECS, SwapReply, SwapRequest
from dfl_perf.serve.batcher import FaceBatcher
from dfl_perf.serve.model import SwapModel
from dfl_perf.serve.service import BodyTooLarge, SwapService
from dfl_perf.serve.settings import ServeSettings, deployment_options

__all__ = ["DFMSwapDeployment", "build_app"]


def _codecs() -> List[str]:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return ["raw"]
    return list(CODECS)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


async def _read_body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            chunks.append(chunk)
    except ClientDisconnect:
        pass  # what came is what there is: the size checks call it truncated
    return b"".join(chunks)


@serve.deployment(name="DFMSwap", graceful_shutdown_timeout_s=2.0, graceful_shutdown_wait_loop_s=0.5,
                  health_check_period_s=2.0, health_check_timeout_s=10.0)
class DFMSwapDeployment:
    """HTTP ingress and model in one replica: token, checks, batched model runs on one thread."""

    def __init__(self, settings: ServeSettings, threads: int) -> None:
        self.model = SwapModel(settings.model_path, settings.provider, threads=threads)
        self._runner = ThreadPoolExecutor(1, thread_name_prefix="dfl-perf-dfm")
        max_batch = settings.max_batch if self.model.can_batch else 1
        self.batcher = FaceBatcher(self.model.swap_groups, self._runner, max_batch, settings.batch_wait_ms / 1000.0)
        context = serve.get_replica_context()
        self.replica = str(getattr(context, "replica_tag", None) or context.replica_id.unique_id)
        info: Dict[str, Any] = dict(self.model.describe(), batching=max_batch > 1, max_batch=max_batch,
                                    batch_wait_ms=settings.batch_wait_ms, codecs=_codecs(),
                                    replica=self.replica, node=_node_id(), pid=os.getpid())
        self.service = SwapService(info, settings.token, self._swap, self._counters)

    def _counters(self) -> Dict[str, Any]:
        model = self.model
        return {"runs": model.runs, "faces": model.faces, "run_seconds": round(model.run_seconds, 6)}

    async def __call__(self, request: Request) -> Response:
        reply = await self.service.handle(request.method, request.url.path, request.headers,
                                          lambda limit: _read_body(request, limit))
        headers = dict(reply.headers, **{"X-Replica": self.replica})
        return Response(reply.body, status_code=reply.status, headers=headers)

    async def _swap(self, request: SwapRequest) -> Tuple[SwapReply, float]:
        return await self.batcher.swap(request.faces, request.morph)


def build_app(settings: ServeSettings, gpus: float, cpus: float) -> Any:
    """The bound Serve application for ``settings`` on a cluster with ``gpus`` GPUs and ``cpus`` CPUs."""
    from dfl_perf.devices import cpu_budget

    options, threads = deployment_options(settings, gpus, cpus, cpu_budget())
    return DFMSwapDeployment.options(**options).bind(settings, threads)
