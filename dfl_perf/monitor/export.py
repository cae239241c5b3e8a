"""Exports of a PerformanceMonitor: JSON, CSV, Prometheus text, and an HTTP endpoint."""

from __future__ import annotations

import csv
import json
import math
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from ..lazy import optional_import

__all__ = ["export_json", "export_csv", "prometheus_text", "metric_families", "MetricsServer"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PathLike = Union[str, Path]


# -- JSON and CSV --------------------------------------------------------------------------

def export_json(monitor: Any, path: PathLike) -> None:
    """Write ``{"summary", "timeline", "system_history"}`` to ``path`` (UTF-8 JSON)."""
    sampler = getattr(monitor, "sampler", None)
    document = {
        "summary": monitor.summary(),
        "timeline": monitor.timeline(),
        "system_history": sampler.history() if sampler is not None else [],
    }
    with open(str(path), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # a numpy scalar passed in by a caller
        return value.item()
    raise TypeError("cannot write %s to JSON" % type(value).__name__)


def timeline_rows(monitor: Any) -> List[Dict[str, Any]]:
    """The timeline flattened to CSV-ready rows (``stage_<name>_p95``, ``gpu<i>_memory_used``, ...)."""
    rows = []
    for entry in monitor.timeline():
        row = {key: entry[key] for key in ("time", "frames", "fps", "dropped", "late", "failed")}
        for key in ("p50", "p95", "p99", "max"):
            row["latency_" + key] = entry[key]
        for name, stats in entry["stages"].items():
            for key, value in stats.items():
                row["stage_%s_%s" % (name, key)] = value
        system = entry.get("system") or {}
        for key in ("process_rss", "process_cpu_percent", "system_available"):
            row[key] = system.get(key)
        for gpu in system.get("gpus") or []:
            for key in ("memory_used", "memory_total", "utilization", "temperature"):
                row["gpu%d_%s" % (gpu["index"], key)] = gpu.get(key)
        rows.append(row)
    return rows


def export_csv(monitor: Any, path: PathLike) -> None:
    """Write the monitor's timeline to ``path`` as CSV, one row per interval (empty cell = no value)."""
    rows = timeline_rows(monitor)
    columns: List[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if not columns:
        columns = ["time", "frames", "fps", "dropped", "late", "failed",
                   "latency_p50", "latency_p95", "latency_p99", "latency_max"]
    with open(str(path), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})


# -- Prometheus ----------------------------------------------------------------------------

class _Family:
    """One metric family: name, type, help, and samples ``(name, labels, value)``."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_text
        self.samples: List[Tuple[str, Dict[str, str], Union[int, float]]] = []

    def add(self, value: Optional[float], suffix: str = "", **labels: str) -> None:
        if value is not None:
            self.samples.append((self.name + suffix, labels, value))


def _summary_family(family: _Family, stats: Dict[str, Any], **labels: str) -> None:
    for key, quantile in (("p50", "0.5"), ("p95", "0.95"), ("p99", "0.99")):
        family.add(stats.get(key), **labels, quantile=quantile)
    family.add(stats.get("sum", 0.0), "_sum", **labels)
    family.add(stats.get("count", 0), "_count", **labels)


def metric_families(summary: Dict[str, Any]) -> List[_Family]:
    """The ``dfl_perf_*`` metric families for one ``PerformanceMonitor.summary()``."""
    families = []

    def family(name: str, kind: str, help_text: str) -> _Family:
        families.append(_Family("dfl_perf_" + name, kind, help_text))
        return families[-1]

    family("fps", "gauge", "Frames completed per second over the sliding window.").add(summary["fps"])
    family("uptime_seconds", "gauge", "Seconds since the monitor started.").add(summary["uptime"])
    for key, what in (("frames", "completed"), ("dropped", "dropped"), ("late", "late"), ("failed", "failed")):
        name = "frames_total" if key == "frames" else "%s_frames_total" % key
        family(name, "counter", "Frames %s." % what).add(summary[key])
    latency = family("frame_latency_seconds", "summary", "End-to-end frame latency over the last samples.")
    _summary_family(latency, summary["latency"])
    stages = family("stage_latency_seconds", "summary", "Per-stage latency over the last samples.")
    stage_max = family("stage_latency_max_seconds", "gauge", "Per-stage maximum latency over the last samples.")
    for name, stats in summary["stages"].items():
        _summary_family(stages, stats, stage=name)
        stage_max.add(stats.get("max"), stage=name)
    marks = family("mark_seconds", "gauge", "Seconds from monitor start to each start-up mark.")
    for name, seconds in summary["marks"].items():
        marks.add(seconds, mark=name)
    _system_families(summary.get("system"), family)
    return [item for item in families if item.samples]


def _system_families(system: Optional[Dict[str, Any]], family: Any) -> None:
    if not system:
        return
    for key, name, help_text in (
        ("process_rss", "process_resident_memory_bytes", "Resident memory of this process."),
        ("process_cpu_percent", "process_cpu_percent", "CPU use of this process, percent of one core."),
        ("system_total", "system_memory_total_bytes", "Total system memory."),
        ("system_available", "system_memory_available_bytes", "Available system memory."),
    ):
        family(name, "gauge", help_text).add(system.get(key))
    gpus = system.get("gpus") or []
    for key, name, help_text in (
        ("memory_used", "gpu_memory_used_bytes", "GPU memory in use."),
        ("memory_total", "gpu_memory_total_bytes", "GPU memory in total."),
        ("utilization", "gpu_utilization_percent", "GPU utilisation."),
        ("temperature", "gpu_temperature_celsius", "GPU temperature."),
    ):
        gpu_family = family(name, "gauge", help_text)
        for gpu in gpus:
            gpu_family.add(gpu.get(key), gpu=str(gpu["index"]), name=str(gpu.get("name", "")))


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Union[int, float]) -> str:
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _render(families: List[_Family]) -> Iterator[str]:
    for family in families:
        yield "# HELP %s %s" % (family.name, family.help.replace("\\", "\\\\").replace("\n", "\\n"))
        yield "# TYPE %s %s" % (family.name, family.kind)
        for name, labels, value in family.samples:
            if labels:
                text = ",".join('%s="%s"' % (key, _label_value(val)) for key, val in labels.items())
                yield "%s{%s} %s" % (name, text, _number(value))
            else:
                yield "%s %s" % (name, _number(value))


def prometheus_text(monitor: Any) -> str:
    """The monitor's metrics in the Prometheus text exposition format 0.0.4 (ends with a newline)."""
    return "\n".join(_render(metric_families(monitor.summary()))) + "\n"


# -- HTTP endpoint -------------------------------------------------------------------------

def _summary_json(monitor: Any) -> bytes:
    return json.dumps(monitor.summary(), allow_nan=False, default=_json_default).encode("utf-8")


def _stdlib_app(monitor: Any) -> Any:
    """A WSGI app serving ``/metrics`` (and ``/``) from ``prometheus_text`` and ``/summary`` as JSON."""

    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/", "/metrics"):
            body, kind = prometheus_text(monitor).encode("utf-8"), PROMETHEUS_CONTENT_TYPE
        elif path in ("/summary", "/summary.json"):
            body, kind = _summary_json(monitor), "application/json"
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; try /metrics or /summary\n"]
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return app


def _prometheus_client_app(monitor: Any, client: Any) -> Any:
    """prometheus_client's WSGI app over a private registry holding this monitor's metrics."""
    from prometheus_client.core import Metric  # type: ignore[import-not-found]

    class _Collector:
        def collect(self) -> Iterator[Any]:
            for family in metric_families(monitor.summary()):
                base = family.name[:-len("_total")] if family.kind == "counter" else family.name
                metric = Metric(base, family.help, family.kind)
                for name, labels, value in family.samples:
                    metric.add_sample(name, labels, value)
                yield metric

    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    metrics_app = client.make_wsgi_app(registry)
    fallback = _stdlib_app(monitor)

    def app(environ: Dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "/") in ("/", "/metrics"):
            return metrics_app(environ, start_response)
        return fallback(environ, start_response)

    return app


class MetricsServer:
    """An HTTP endpoint for one monitor on a daemon thread; ``close()`` stops it."""

    def __init__(self, monitor: Any, host: str = "127.0.0.1", port: int = 0, backend: str = "auto") -> None:
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        client = None
        if backend in ("auto", "prometheus_client"):
            client = optional_import("prometheus_client")
            if client is None and backend == "prometheus_client":
                raise ImportError("backend='prometheus_client' asked for, but prometheus_client is not installed")
        elif backend != "stdlib":
            raise ValueError("backend must be 'auto', 'prometheus_client' or 'stdlib', got %r" % (backend,))
        self.backend = "prometheus_client" if client is not None else "stdlib"
        app = _prometheus_client_app(monitor, client) if client is not None else _stdlib_app(monitor)

        class _QuietHandler(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:  # no stderr line per scrape
                pass

        try:
            self._server = make_server(host, port, app, server_class=WSGIServer,
                                       handler_class=_QuietHandler)
        except OSError as exc:
            raise OSError("cannot serve metrics on %s:%s: %s" % (host, port, exc)) from exc
        self.address: Tuple[str, int] = (host, int(self._server.server_port))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="dfl_perf-metrics-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The ``/metrics`` URL."""
        return "http://%s:%d/metrics" % self.address

    def close(self) -> None:
        """Stop serving and wait for the thread. Idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
