"""An honest meter for DeepFaceLive's modules, through DFL's own timing hooks.

DFL's ``BackendWorker.start_profile_timing()`` is called before a module waits (up to 5 ms) for
input and ``stop_profile_timing()`` after it processed a frame; DFL then shows ``1 / mean`` of a
zero-filled 120-sample history as the module's "FPS". The replacement hooks feed a
``dfl_perf.monitor.PerformanceMonitor`` per module and process instead:

- stage ``process``: wall time from the moment ``bc_in.read()`` returned the frame to ``stop`` (the
  wait for input is stage ``input_wait``, not busy time); stage ``cpu``: the process's CPU time over
  the same span (all its threads: onnxruntime's too);
- one completed frame per ``stop``, so FPS is the module's measured throughput over a sliding
  window: in a running pipeline, the delivered rate;
- ``utilisation``: busy time per frame x throughput, the share of the time the module is busy. The
  module near 100 % is the one that holds the pipeline back.

DFL's UI gets its ``_profile_timing`` message as before, now a ``MeterTiming``: a float equal to the
mean busy seconds per frame (so DFL's own label, ``int(1 / timing)``, shows the FPS the module could
do alone, and a slow module still stands out), carrying the delivered rate, the CPU time and the
utilisation. ``patch_backend_panel`` makes DFL's module panel show both numbers.

With ``meter_dir`` every process writes ``<module>-<pid>.json`` there (atomically, every
``meter_interval_s`` and at exit); ``collect_meter`` merges them and ``write_meter_view`` writes one
JSON, CSV or Prometheus view of all modules.
"""

from __future__ import annotations

import atexit
import csv
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

__all__ = ["ModuleMeter", "MeterTiming", "patch_backend_module", "patch_backend_panel", "panel_text",
           "collect_meter", "write_meter_view", "meter_for", "forget_meters"]

_METER_ATTR = "_dfl_perf_meter"
_UI_REFRESH_S = 0.25
_RECENT = 60  # frames in the busy/CPU means sent to DFL's UI
_read_done = [0.0, 0.0]  # wall and CPU clock when the last BackendConnection.read() in this process returned data
_meters: List[ModuleMeter] = []
PathLike = Union[str, Path]


class MeterTiming(float):
    """DFL's ``_profile_timing`` value: mean busy seconds per frame, with the delivered rate and more.

    A float, so DFL's host and UI take it as they take DFL's own number; the attributes are for
    ``panel_text``.
    """

    def __new__(cls, busy_s: float, delivered_fps: float = 0.0, cpu_s: float = 0.0):
        value = super().__new__(cls, busy_s)
        value.delivered_fps = float(delivered_fps)
        value.cpu_s = float(cpu_s)
        return value

    def __reduce__(self):
        return MeterTiming, (float(self), self.delivered_fps, self.cpu_s)

    @property
    def alone_fps(self) -> float:
        """The frames per second the module could do on its own (1 / busy time)."""
        return 1.0 / float(self) if float(self) > 0 else 0.0

    @property
    def utilisation(self) -> float:
        """Busy share of the time, 0..1 (busy time per frame x delivered rate)."""
        return min(1.0, float(self) * self.delivered_fps)


def panel_text(timing: float) -> str:
    """What DFL's module panel shows for a ``_profile_timing`` value (DFL's own float: its ``N FPS``)."""
    if not isinstance(timing, MeterTiming):
        return "%d FPS" % int(1.0 / timing if timing else 0)
    return "%d FPS alone | %d out | %d%% busy" % (int(timing.alone_fps), int(round(timing.delivered_fps)),
                                                   int(round(100 * timing.utilisation)))


class ModuleMeter:
    """Throughput and latency percentiles of one DFL module in this process (no threads)."""

    def __init__(self, name: str, meter_dir: Optional[PathLike] = None, interval: float = 2.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        from dfl_perf.monitor import PerformanceMonitor

        self.name = name
        self.monitor = PerformanceMonitor(window=2.0, clock=clock)
        self.meter_dir = Path(meter_dir) if meter_dir else None
        self.interval = float(interval)
        self._clock = clock
        self._tick_start: Optional[float] = None
        self._next_flush = clock() + self.interval
        self._next_ui = 0.0
        self._ui_value: float = MeterTiming(0.0)
        self._recent_busy: List[float] = []
        self._recent_cpu: List[float] = []

    def begin(self) -> None:
        """DFL's ``start_profile_timing``: a tick starts (the module is about to wait for input)."""
        self._tick_start = self._clock()

    def end(self, read_done: Optional[float] = None, cpu_seconds: Optional[float] = None) -> float:
        """DFL's ``stop_profile_timing``: one frame done. Returns the ``MeterTiming`` for DFL's UI.

        ``read_done``: when the frame's read returned (this meter's clock); ``cpu_seconds``: the process
        CPU time spent on the frame since then.
        """
        now = self._clock()
        start = self._tick_start if self._tick_start is not None else now
        got_input = read_done if read_done is not None and start <= read_done <= now else start
        busy = now - got_input
        self.monitor.record("input_wait", got_input - start)
        self.monitor.record("process", busy)
        if cpu_seconds is not None:
            self.monitor.record("cpu", cpu_seconds)
            _keep_recent(self._recent_cpu, cpu_seconds)
        _keep_recent(self._recent_busy, busy)
        self.monitor.frame_done(busy)
        self._tick_start = None
        if now >= self._next_ui:
            mean_busy = max(sum(self._recent_busy) / len(self._recent_busy), 1e-6)  # DFL's UI divides by it
            mean_cpu = sum(self._recent_cpu) / len(self._recent_cpu) if self._recent_cpu else 0.0
            self._ui_value = MeterTiming(mean_busy, self.monitor.fps(), mean_cpu)
            self._next_ui = now + _UI_REFRESH_S
        if self.meter_dir is not None and now >= self._next_flush:
            self.flush()
        return self._ui_value

    def document(self) -> Dict[str, Any]:
        """This module's numbers: ``{"module", "pid", "time", "summary"}``."""
        return {"module": self.name, "pid": os.getpid(), "time": time.time(), "summary": self.monitor.summary()}

    def flush(self) -> Optional[Path]:
        """Write ``<module>-<pid>.json`` into ``meter_dir`` (atomic rename); None without a folder."""
        if self.meter_dir is None:
            return None
        self._next_flush = self._clock() + self.interval
        path = self.meter_dir / ("%s-%d.json" % (self.name, os.getpid()))
        partial = path.with_name(path.name + ".partial")
        try:
            self.meter_dir.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.document(), default=_plain), encoding="utf-8")
            os.replace(str(partial), str(path))
        except OSError:
            return None
        return path

    def close(self) -> None:
        """Write the last numbers (with a folder) and close the monitor."""
        self.flush()
        self.monitor.close()


def _keep_recent(values: List[float], value: float) -> None:
    values.append(value)
    if len(values) > _RECENT:
        del values[0]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError("cannot write %s to JSON" % type(value).__name__)


def meter_for(worker: Any, meter_dir: Optional[PathLike] = None, interval: float = 2.0) -> ModuleMeter:
    """The ModuleMeter of a DFL worker object (made on first use, named after its class)."""
    meter = worker.__dict__.get(_METER_ATTR)
    if meter is None:
        meter = ModuleMeter(type(worker).__name__, meter_dir, interval)
        worker.__dict__[_METER_ATTR] = meter
        if not _meters:
            atexit.register(_flush_all)
        _meters.append(meter)
    return meter


def _flush_all() -> None:
    for meter in list(_meters):
        meter.flush()


def forget_meters() -> None:
    """Write and drop every meter of this process (``uninstall`` calls it)."""
    meters = list(_meters)
    del _meters[:]
    for meter in meters:
        meter.close()


def patch_backend_module(module: Any, patcher: Any, config: Any) -> None:
    """Replace ``BackendWorker.start/stop_profile_timing`` and time ``BackendConnection.read`` (undone by ``patcher``)."""
    worker_cls = getattr(module, "BackendWorker", None)
    if worker_cls is None or not hasattr(worker_cls, "stop_profile_timing"):
        return
    meter_dir, interval = config.meter_dir, config.meter_interval_s
    connection_cls = getattr(module, "BackendConnection", None)
    if connection_cls is not None and callable(getattr(connection_cls, "read", None)):
        original_read = connection_cls.read

        def read(self, *args, **kwargs):
            data = original_read(self, *args, **kwargs)
            if data is not None:
                _read_done[0] = time.perf_counter()
                _read_done[1] = time.process_time()
            return data

        patcher.replace(connection_cls, "read", read)

    def start_profile_timing(self):
        meter_for(self, meter_dir, interval).begin()

    def stop_profile_timing(self):
        cpu = time.process_time() - _read_done[1] if _read_done[1] else None
        value = meter_for(self, meter_dir, interval).end(_read_done[0], cpu)
        send = getattr(self, "send_msg", None)
        if send is not None:
            send("_profile_timing", value)

    patcher.replace(worker_cls, "start_profile_timing", start_profile_timing)
    patcher.replace(worker_cls, "stop_profile_timing", stop_profile_timing)


def patch_backend_panel(module: Any, patcher: Any, config: Any) -> None:
    """DFL's module panel (``QBackendPanel``) shows ``panel_text``: FPS alone, delivered, busy share."""
    panel_cls = getattr(module, "QBackendPanel", None)
    original = getattr(panel_cls, "_on_backend_profile_timing", None)
    if panel_cls is None or not callable(original):
        return

    def _on_backend_profile_timing(self, timing):
        if not isinstance(timing, MeterTiming):
            return original(self, timing)
        label = self._fps_label
        busy = timing.utilisation >= 0.9 or timing.alone_fps < 10
        label.set_color("red" if busy else None)
        label.setText(panel_text(timing))

    patcher.replace(panel_cls, "_on_backend_profile_timing", _on_backend_profile_timing)


# --------------------------------------------------------------------------- one view of all modules

def collect_meter(meter_dir: PathLike) -> Dict[str, Any]:
    """Merge the per-process files in ``meter_dir``.

    Returns ``{"modules": {name: newest document}, "processes": [...], "bottleneck": name}``; each module's
    document gets ``load``: busy and CPU ms per frame, FPS alone, utilisation (the bottleneck's is the highest).
    """
    folder = Path(meter_dir)
    if not folder.is_dir():
        raise FileNotFoundError("meter folder not found: %s" % folder)
    processes = []
    for path in sorted(folder.glob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a file being replaced right now, or not ours
        if isinstance(document, dict) and "module" in document and "summary" in document:
            processes.append(document)
    modules: Dict[str, Any] = {}
    for document in sorted(processes, key=lambda d: d.get("time", 0)):
        modules[document["module"]] = document
    for document in modules.values():
        document["load"] = _load(document["summary"])
    return {"modules": modules, "processes": processes, "bottleneck": _bottleneck(modules)}


def _load(summary: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """busy and CPU ms per frame, the FPS the module could do alone, and its busy share of the time."""
    stages = summary.get("stages", {})
    busy = stages.get("process", {}).get("mean")
    cpu = stages.get("cpu", {}).get("mean")
    fps = summary.get("fps") or 0.0
    return {"busy_ms": None if busy is None else 1000.0 * busy, "cpu_ms": None if cpu is None else 1000.0 * cpu,
            "fps_alone": 1.0 / busy if busy else None, "utilisation": min(1.0, busy * fps) if busy else None}


def _bottleneck(modules: Dict[str, Any]) -> Optional[str]:
    """The module busy the largest share of the time (None without numbers)."""
    shares = {name: _load(doc["summary"])["utilisation"] for name, doc in modules.items()}
    shares = {name: share for name, share in shares.items() if share is not None}
    return max(shares, key=lambda name: shares[name]) if shares else None


def _rows(view: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for name, document in sorted(view["modules"].items()):
        summary = document["summary"]
        stages = summary.get("stages", {})
        row: Dict[str, Any] = {"module": name, "pid": document.get("pid"), "fps": summary.get("fps"),
                               "fps_mean": summary.get("fps_mean"), "frames": summary.get("frames")}
        row.update(_load(summary))
        row["bottleneck"] = name == view.get("bottleneck")
        for stage in ("process", "input_wait", "cpu"):
            for key in ("p50", "p95", "p99", "max"):
                value = stages.get(stage, {}).get(key)
                row["%s_%s_ms" % (stage, key)] = None if value is None else 1000.0 * value
        rows.append(row)
    return rows


def _prometheus(view: Dict[str, Any]) -> str:
    from dfl_perf.monitor.export import metric_families

    merged: Dict[str, Any] = {}
    for name, document in sorted(view["modules"].items()):
        for family in metric_families(document["summary"]):
            entry = merged.setdefault(family.name, (family.kind, family.help, []))
            for sample, labels, value in family.samples:
                entry[2].append((sample, dict(labels, module=name), value))
    lines = []
    for family_name, (kind, help_text, samples) in merged.items():
        lines.append("# HELP %s %s" % (family_name, help_text.replace("\\", "\\\\").replace("\n", "\\n")))
        lines.append("# TYPE %s %s" % (family_name, kind))
        for sample, labels, value in samples:
            text = ",".join('%s="%s"' % (k, str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
                            for k, v in labels.items())
            lines.append("%s{%s} %s" % (sample, text, repr(float(value)) if isinstance(value, float) else value))
    return "\n".join(lines) + "\n"


def write_meter_view(meter_dir: PathLike, out: Optional[PathLike] = None, fmt: str = "json") -> str:
    """All modules' numbers from ``meter_dir`` as one ``json``, ``csv`` or ``prometheus`` text; also written to ``out``."""
    view = collect_meter(meter_dir)
    if fmt == "json":
        text = json.dumps(view, indent=1, default=_plain) + "\n"
    elif fmt == "csv":
        rows = _rows(view)
        columns = list(rows[0]) if rows else ["module", "pid", "fps", "fps_mean", "frames"]
        text = _csv_text(columns, rows)
    elif fmt == "prometheus":
        text = _prometheus(view)
    else:
        raise ValueError("unknown meter view format %r; use json, csv or prometheus" % (fmt,))
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text


def _csv_text(columns: List[str], rows: List[Dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()
