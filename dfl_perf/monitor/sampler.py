"""SystemSampler: a background thread reading process, system and GPU state at a fixed interval."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional

from ..lazy import optional_import

__all__ = ["SystemSampler"]

log = logging.getLogger(__name__)

Sample = Dict[str, Any]
Listener = Callable[[Sample], None]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _query(read: Callable[[], Any]) -> Optional[Any]:
    """``read()``, or None when this GPU does not support the query (NVML raises NVMLError)."""
    try:
        return read()
    except Exception:
        return None


class _Nvml:
    """NVML handles opened once and read per sample; absent NVML or driver means no GPUs."""

    def __init__(self) -> None:
        from dfl_perf.devices import NvmlUnavailable, open_nvml

        self.module: Any = None
        self.handles: List[Any] = []
        self.names: List[str] = []
        self.reason: Optional[str] = None
        try:
            self.module = open_nvml()
        except NvmlUnavailable as exc:  # no pynvml or no NVIDIA driver: not an error for a monitor
            self.reason = str(exc)
            return
        try:
            for index in range(int(self.module.nvmlDeviceGetCount())):
                handle = self.module.nvmlDeviceGetHandleByIndex(index)
                self.handles.append(handle)
                self.names.append(_text(_query(lambda h=handle: self.module.nvmlDeviceGetName(h)) or "GPU"))
        except Exception as exc:
            self.reason = "NVML device query failed: %s" % (exc,)

    def read(self) -> List[Dict[str, Any]]:
        nvml = self.module
        if nvml is None:
            return []
        gpus = []
        for index, handle in enumerate(self.handles):
            memory = _query(lambda h=handle: nvml.nvmlDeviceGetMemoryInfo(h))
            rates = _query(lambda h=handle: nvml.nvmlDeviceGetUtilizationRates(h))
            temperature = _query(lambda h=handle: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
            gpus.append({
                "index": index,
                "name": self.names[index],
                "memory_used": int(memory.used) if memory is not None else None,
                "memory_total": int(memory.total) if memory is not None else None,
                "utilization": float(rates.gpu) if rates is not None else None,
                "temperature": float(temperature) if temperature is not None else None,
            })
        return gpus

    def close(self) -> None:
        if self.module is not None:
            from dfl_perf.devices import close_nvml

            close_nvml(self.module)
            self.module = None


class SystemSampler:
    """Samples process CPU % and RSS, system memory (psutil) and per-GPU state (NVML, if present).

    A sample is a plain dict: ``time`` (epoch seconds), ``process_rss`` and ``system_total`` /
    ``system_available`` (bytes), ``process_cpu_percent`` (percent of one core, so up to 100 x
    cores), and ``gpus``: a list of ``{index, name, memory_used, memory_total (bytes),
    utilization (%), temperature (deg C)}`` (empty without NVML). Unreadable values are None.
    ``start()`` samples every ``interval`` seconds on a daemon thread; the last ``history`` samples
    are kept; listeners added with ``add_listener(fn)`` get every sample on that thread.
    """

    def __init__(self, interval: float = 1.0, history: int = 3600, gpus: bool = True) -> None:
        if interval <= 0:
            raise ValueError("sampler interval must be > 0 seconds, got %r" % (interval,))
        if history < 1:
            raise ValueError("sampler history must be >= 1 sample, got %r" % (history,))
        self.interval = float(interval)
        self._history: Deque[Sample] = collections.deque(maxlen=int(history))
        self._listeners: List[Listener] = []
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._psutil = optional_import("psutil")
        self._process = self._psutil.Process() if self._psutil is not None else None
        if self._process is not None:
            self._process.cpu_percent(None)  # the first reading is a baseline (always 0.0)
        self._nvml = _Nvml() if gpus else None

    @property
    def gpu_reason(self) -> Optional[str]:
        """Why no GPU is sampled (NVML missing or failing), or None when NVML works."""
        return self._nvml.reason if self._nvml is not None else "GPU sampling disabled"

    def sample_once(self) -> Sample:
        """Take one sample now: store it in the history, tell the listeners, and return it."""
        with self._read_lock:  # one reading at a time keeps the history in time order
            sample = self._read()
            with self._lock:
                self._history.append(sample)
                listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(sample)
            except Exception:
                log.exception("system sampler listener %r failed", listener)
        return sample

    def _read(self) -> Sample:
        sample: Sample = {"time": time.time(), "process_rss": None, "process_cpu_percent": None,
                          "system_total": None, "system_available": None, "gpus": []}
        if self._process is not None:
            try:
                sample["process_rss"] = int(self._process.memory_info().rss)
                sample["process_cpu_percent"] = float(self._process.cpu_percent(None))
                memory = self._psutil.virtual_memory()
                sample["system_total"] = int(memory.total)
                sample["system_available"] = int(memory.available)
            except Exception as exc:  # psutil.Error on odd platforms: keep sampling the rest
                log.debug("psutil sample failed: %s", exc)
        if self._nvml is not None:
            sample["gpus"] = self._nvml.read()
        return sample

    def latest(self) -> Optional[Sample]:
        """The newest sample, or None before the first."""
        with self._lock:
            return self._history[-1] if self._history else None

    def history(self) -> List[Sample]:
        """The kept samples, oldest first."""
        with self._lock:
            return list(self._history)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(sample)`` for every new sample (on the sampling thread; exceptions are logged)."""
        if not callable(listener):
            raise TypeError("listener must be callable, got %r" % (listener,))
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``; unknown listeners are ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def start(self) -> SystemSampler:
        """Start the sampling thread (takes a first sample at once). Idempotent."""
        with self._lock:
            if self._closed:
                raise RuntimeError("SystemSampler is closed")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="dfl_perf-system-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:
                log.exception("system sample failed")
            self._stop.wait(self.interval)

    @property
    def running(self) -> bool:
        """True while the sampling thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def close(self) -> None:
        """Stop the thread, wait for it, and release NVML. Idempotent."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._nvml is not None:
            self._nvml.close()

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<SystemSampler interval=%gs running=%s samples=%d>" % (
            self.interval, self.running, len(self._history))
