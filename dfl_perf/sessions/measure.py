"""How many bytes a new session holds: process RSS (host) or NVML (device) before and after creation."""

from __future__ import annotations

import os
from typing import Callable, Optional, Tuple

__all__ = ["FILE_SIZE_FACTOR", "MAX_FACTOR", "estimate_bytes", "clamp_measured", "measured_create"]

#: Without a measurement a session is taken to hold its file size times this (weights plus the
#: pre-packed copies and arena onnxruntime adds; measured about 1.15x for a 60 MB model on CPU).
FILE_SIZE_FACTOR = 1.5
#: A measured delta is clamped to [file size, file size * MAX_FACTOR + 32 MiB], because other threads
#: allocate at the same time and the delta is only an approximation.
MAX_FACTOR = 3.0


def estimate_bytes(file_size: int) -> int:
    """The documented estimate: ``file_size * FILE_SIZE_FACTOR``."""
    return int(file_size * FILE_SIZE_FACTOR)


def _host_rss() -> Optional[int]:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # psutil missing or the platform refuses
        return None


def _device_used(device_id: int) -> Optional[int]:
    """Device memory this process uses on GPU ``device_id`` according to NVML; None when unknown."""
    from dfl_perf.devices import nvml_session

    try:
        with nvml_session() as nvml:
            handle = nvml.nvmlDeviceGetHandleByIndex(device_id)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == os.getpid():
                    return int(proc.usedGpuMemory or 0)
            return 0
    except Exception:  # NvmlUnavailable, or an NVML error: not measurable
        return None


def clamp_measured(delta: Optional[int], file_size: int) -> int:
    """A measured delta clamped to [file size, file size * MAX_FACTOR + 32 MiB]; the estimate when None."""
    if delta is None:
        return estimate_bytes(file_size)
    return int(min(max(delta, file_size), file_size * MAX_FACTOR + (32 << 20)))


def measured_create(create: Callable[[], object], device_id: Optional[int] = None,
                    measure: bool = True) -> Tuple[object, Optional[int], Optional[int]]:
    """Call ``create()``; return (its result, host RSS delta, device delta on ``device_id``).

    A delta is None when it cannot be measured (no psutil, no NVML, ``measure`` False, no device).
    """
    host_before = _host_rss() if measure else None
    device_before = _device_used(device_id) if (measure and device_id is not None) else None
    result = create()
    host_after = _host_rss() if host_before is not None else None
    device_after = _device_used(device_id) if device_before is not None else None
    host = host_after - host_before if host_after is not None and host_before is not None else None
    device = device_after - device_before if device_after is not None and device_before is not None else None
    return result, host, device
