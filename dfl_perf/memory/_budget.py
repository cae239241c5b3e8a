"""Budgets and the registry's building blocks: the Trimmable protocol, byte budgets, object kinds."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Protocol, Union, runtime_checkable

__all__ = ["Trimmable", "resolve_budget", "parse_budget", "POOL_PRIORITY", "CACHE_PRIORITY", "Budget"]

POOL_PRIORITY = 0  # trimmed first: idle buffers are cheap to make again
CACHE_PRIORITY = 100  # trimmed after pools: a session costs a model load
Budget = Union[int, float, None]


@runtime_checkable
class Trimmable(Protocol):
    """What a manager needs from a pool or cache.

    ``trim(n)`` frees idle memory (least recently used first) until at least ``n`` bytes are freed
    or nothing idle is left, and returns the bytes freed; ``trim(None)`` frees everything idle.
    Memory in use (a leased buffer, a session a caller holds) is never freed. An object that also
    has ``on_grow`` (a ``dfl_perf.listeners.Listeners``; BufferPool, OrtValuePool and ModelCache do)
    calls it after it grows, and the manager keeps its budget then, without a call to ``enforce``.
    """

    def bytes_held(self) -> int: ...

    def trim(self, max_bytes_to_free: Optional[int] = None) -> int: ...


@dataclass
class Entry:
    name: str
    obj: Any
    kind: str  # 'host' | 'device'
    role: str  # 'pool' | 'cache'
    priority: int
    gpu_index: Optional[int]  # the GPU a device entry lives on, when known
    on_grow: Optional[Callable[[], None]] = None  # the manager's callback in the object's on_grow, if any


def resolve_budget(budget: Budget, kind: str, device_index: int = 0) -> Optional[int]:
    """A budget in bytes: an int is bytes; a float in (0, 1] is a fraction of total RAM ('host')
    or of GPU ``device_index``'s memory ('device', read through NVML); None is unlimited."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, float)):
        raise TypeError("%s budget must be bytes (int), a fraction (float) or None, got %r" % (kind, budget))
    if isinstance(budget, int):
        if budget < 0:
            raise ValueError("%s budget must be >= 0 bytes, got %d" % (kind, budget))
        return budget
    if not 0.0 < budget <= 1.0:
        raise ValueError("%s budget %r: a float is a fraction of memory in (0, 1]; pass an int for bytes"
                         % (kind, budget))
    return int(budget * _total_memory(kind, device_index))


_UNITS = {"": 1, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9, "t": 10 ** 12,
          "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_budget(text: Union[str, int, float]) -> Budget:
    """A budget written by a user: '512M', '1.5GB', '2GiB', '800000000' (bytes; k/M/G/T are powers of
    1000, Ki/Mi/Gi/Ti of 1024), '25%' or '0.25' (a fraction of the memory, for ``resolve_budget``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    value = str(text).strip()
    if value.endswith("%"):
        try:
            return float(value[:-1]) / 100.0
        except ValueError:
            pass
    match = _SIZE.match(value)
    if match is None:
        raise ValueError("memory budget %r: give bytes with an optional unit (512M, 1.5G, 2GiB) or a fraction "
                         "of the memory (25%%, 0.25)" % (text,))
    number, unit = match.group(1), (match.group(2) or "").lower()
    if not unit and "." in number:
        if float(number) > 1.0:
            raise ValueError("memory budget %r: a number with a point is a fraction of the memory (at most 1); "
                             "give bytes as a whole number or with a unit (512M)" % (text,))
        return float(number)
    return int(float(number) * _UNITS[unit])


def _total_memory(kind: str, device_index: int) -> int:
    if kind == "host":
        import psutil

        return int(psutil.virtual_memory().total)
    from dfl_perf.devices import detect_gpus

    gpus = detect_gpus()
    for gpu in gpus:
        if gpu.index == device_index:
            return int(gpu.memory_total)
    raise ValueError("device budget as a fraction needs GPU %d's memory size, but no such GPU was found%s" % (
        device_index, (": " + gpus.reason) if getattr(gpus, "reason", "") else ""))


def kind_of(obj: Any) -> str:
    kind = getattr(obj, "memory_kind", None)
    if callable(kind):
        kind = kind()
    if kind in ("host", "device"):
        return kind
    device = getattr(obj, "device", None)
    if isinstance(device, str):
        return "host" if device.lower().startswith("cpu") else "device"
    return "host"


def gpu_index_of(obj: Any) -> Optional[int]:
    device = getattr(obj, "device", None)
    if isinstance(device, str) and ":" in device:
        try:
            return int(device.rsplit(":", 1)[1])
        except ValueError:
            return None
    return None


def check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError("%s must be a fraction in (0, 1], got %r" % (name, value))
    return float(value)


def format_bytes(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(nbytes) >= scale:
            return "%.2f %s" % (nbytes / scale, unit)
    return "%d B" % nbytes


def unique_name(base: str, taken: Dict[str, Any]) -> str:
    index = len(taken)
    while "%s%d" % (base, index) in taken:
        index += 1
    return "%s%d" % (base, index)


def bytes_free_of(obj: Any) -> Optional[int]:
    method = getattr(obj, "bytes_free", None)
    return int(method()) if callable(method) else None
