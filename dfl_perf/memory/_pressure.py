"""Pressure signals from a SystemSampler sample, and the soft/hard level logic with hysteresis."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

__all__ = ["PressureEvent", "LEVELS"]

LEVELS = ("normal", "soft", "hard")
Signal = Tuple[str, int, int, str, Optional[int]]  # name, used, limit, memory kind, GPU index


@dataclass(frozen=True)
class PressureEvent:
    """A pressure level change for one signal ('process_rss', 'system_memory', 'gpu:N')."""

    signal: str
    level: str  # 'normal' | 'soft' | 'hard'
    previous: str
    used: int
    limit: int
    soft_bytes: int
    hard_bytes: int
    freed: int = 0  # bytes freed by the manager's reaction to this reading
    time: float = field(default_factory=time.time)


def next_level(previous: int, used: int, soft_b: int, hard_b: int, hyst_b: int) -> int:
    """Level 0/1/2 for a reading: rising is immediate, falling needs ``hyst_b`` below the threshold."""
    rising = 2 if used >= hard_b else 1 if used >= soft_b else 0
    if rising >= previous:
        return rising
    if previous == 2 and used >= hard_b - hyst_b:
        return 2
    return 1 if used >= soft_b - hyst_b else 0


def read_signals(sample: Dict[str, Any], rss_limit: Optional[int],
                 gpu_limit: Union[int, float, None]) -> List[Signal]:
    """The signals one sample yields; readings that are None (unsupported, no GPU) are skipped."""
    out: List[Signal] = []
    rss = sample.get("process_rss")
    if rss_limit and rss is not None:
        out.append(("process_rss", int(rss), rss_limit, "host", None))
    total, available = sample.get("system_total"), sample.get("system_available")
    if total and available is not None:
        out.append(("system_memory", int(total) - int(available), int(total), "host", None))
    for gpu in sample.get("gpus") or []:
        used, limit = gpu.get("memory_used"), _gpu_limit_bytes(gpu_limit, gpu.get("memory_total"))
        if used is not None and limit:
            index = int(gpu.get("index", 0))
            out.append(("gpu:%d" % index, int(used), limit, "device", index))
    return out


def _gpu_limit_bytes(gpu_limit: Union[int, float, None], gpu_total: Optional[int]) -> Optional[int]:
    if gpu_limit is None:
        return int(gpu_total) if gpu_total else None
    if isinstance(gpu_limit, float):
        return int(gpu_limit * gpu_total) if gpu_total else None
    return int(gpu_limit)
