"""``ServeSettings``: what ``dfl-perf serve`` deploys, checked before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from dfl_perf.serve.auth import ServeSetupError, check_bind

__all__ = ["ServeSettings", "APP_NAME", "MAX_BATCH_LIMIT", "deployment_options"]

APP_NAME = "dfl_perf_swap"
MAX_BATCH_LIMIT = 64


@dataclass(frozen=True)
class ServeSettings:
    """Everything a replica and the command need (picklable: Ray ships it to every replica).

    ``replicas``: a count, or 'auto' (Serve's autoscaling between 1 and what the cluster holds).
    ``max_batch``: requests whose faces share one model run (1: batching off); requests that arrive
    while the model is busy share its next run. ``batch_wait_ms``: also hold a run that is not full
    that long for more company (0: an idle model runs a request at once).
    ``threads``: intra-op threads per CPU replica (default: the cores split between the replicas).
    """

    model_path: str
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: Union[int, str] = 1
    max_batch: int = 8
    batch_wait_ms: float = 0.0
    provider: Optional[str] = None
    token: Optional[str] = None
    address: Optional[str] = None
    threads: Optional[int] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    object_store_mb: int = 256

    def __post_init__(self) -> None:
        if not Path(self.model_path).is_file():
            raise ServeSetupError("model not found: %s" % self.model_path)
        if self.replicas != "auto" and (not isinstance(self.replicas, int) or self.replicas < 1):
            raise ServeSetupError("--replicas must be a count >= 1 or 'auto', got %r" % (self.replicas,))
        if not 1 <= self.max_batch <= MAX_BATCH_LIMIT:
            raise ServeSetupError("--max-batch must be within 1..%d, got %r" % (MAX_BATCH_LIMIT, self.max_batch))
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ServeSetupError("--batch-wait-ms must be within 0..1000, got %r" % (self.batch_wait_ms,))
        if not 0 < self.port < 65536:
            raise ServeSetupError("--port must be within 1..65535, got %r" % (self.port,))
        if self.threads is not None and self.threads < 1:
            raise ServeSetupError("--threads must be >= 1, got %r" % (self.threads,))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ServeSetupError("TLS needs both --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not Path(path).is_file():
                raise ServeSetupError("TLS file not found: %s" % path)
        check_bind(self.host, self.token)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


def deployment_options(settings: ServeSettings, gpus: float, cpus: float, cores: int) -> Tuple[Dict[str, Any], int]:
    """(Serve's deployment options, intra-op threads per replica) on a cluster of ``gpus`` GPUs and
    ``cpus`` CPUs, ``cores`` of them on this machine.

    One GPU per replica when the cluster has GPUs (unless the provider is the CPU); on CPUs a replica
    reserves as many CPUs as its intra-op threads (default: this machine's cores split between the
    replicas, all of them with 'auto'). 'auto' scales between 1 and what the cluster holds.
    """
    use_gpu = gpus > 0 and (settings.provider or "").lower() not in ("cpu", "cpuexecutionprovider")
    replicas = 1 if settings.replicas == "auto" else int(settings.replicas)
    threads = settings.threads or max(1, cores // replicas)
    actor: Dict[str, Any] = {"num_gpus": 1} if use_gpu else {"num_cpus": threads}
    most = max(1, int(gpus if use_gpu else cpus // threads))
    options: Dict[str, Any] = {"ray_actor_options": actor, "max_ongoing_requests": max(16, 4 * settings.max_batch)}
    if settings.replicas == "auto":
        options["autoscaling_config"] = {"min_replicas": 1, "max_replicas": most,
                                         "target_ongoing_requests": max(2, settings.max_batch)}
    else:
        options["num_replicas"] = replicas
    return options, threads
