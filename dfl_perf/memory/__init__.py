"""MemoryManager: one byte budget over registered pools and caches, plus memory-pressure reactions.

Pools (``dfl_perf.buffers.BufferPool`` / ``OrtValuePool``) and caches (``dfl_perf.sessions.ModelCache``)
register with a manager, which keeps the bytes they hold under a host and a device budget by
trimming idle pool buffers first, then evicting least-recently-used sessions no caller holds.
Readings from ``dfl_perf.monitor.SystemSampler`` (process RSS, system memory, GPU memory) warn once
per crossing of a soft threshold and free memory past a hard one; hosts can subscribe to the events.
"""

from __future__ import annotations

from ._budget import Trimmable
from ._manager import MemoryManager

__all__ = ["MemoryManager", "Trimmable"]
