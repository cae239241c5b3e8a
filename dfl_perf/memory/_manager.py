"""MemoryManager: one budget over registered pools and caches, with pressure reactions."""

from __future__ import annotations

import gc
import logging
import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from dfl_perf.listeners import Listeners

from ._budget import (
    CACHE_PRIORITY,
    POOL_PRIORITY,
    Budget,
    Entry,
    bytes_free_of,
    check_fraction,
    format_bytes,
    gpu_index_of,
    kind_of,
    resolve_budget,
    unique_name,
)
from ._pressure import LEVELS, PressureEvent, next_level, read_signals

__all__ = ["MemoryManager"]

log = logging.getLogger("dfl_perf.memory")


class MemoryManager:
    """Keeps registered pools and caches under a host and a device byte budget; reacts to pressure.

    ``host_budget`` / ``device_budget``: bytes (int), a fraction of total RAM / of GPU
    ``device_index``'s memory (float), or None (no cap). ``soft`` / ``hard``: fractions of each
    pressure signal's limit: at ``soft`` a warning is logged once per crossing, at ``hard`` idle
    pool buffers and unheld sessions are freed until the reading would be back under ``soft``.
    Signals: process RSS against ``rss_limit`` (bytes or fraction of RAM; None: not watched),
    system memory in use against total RAM, and each GPU's used memory against ``gpu_limit``
    (bytes or fraction of that GPU; None: its total). ``hysteresis`` (fraction of the limit) is
    how far a reading must fall back before the same crossing can warn again.
    Thread-safe. No thread of its own unless ``start_sampling()`` is called; ``close()`` stops it.
    """

    def __init__(self, host_budget: Budget = None, device_budget: Budget = None, *, device_index: int = 0,
                 soft: float = 0.85, hard: float = 0.95, hysteresis: float = 0.02,
                 rss_limit: Budget = None, gpu_limit: Budget = None, sampler: Any = None,
                 on_pressure: Optional[Callable[[PressureEvent], None]] = None, max_warnings: int = 100) -> None:
        self._soft, self._hard = check_fraction("soft", soft), check_fraction("hard", hard)
        if self._soft > self._hard:
            raise ValueError("soft threshold %r must not be above hard threshold %r" % (soft, hard))
        self._hysteresis = float(hysteresis)
        if not 0.0 <= self._hysteresis < self._soft:
            raise ValueError("hysteresis must be in [0, soft), got %r" % (hysteresis,))
        self._device_index = int(device_index)
        self._budgets = {"host": resolve_budget(host_budget, "host"),
                         "device": resolve_budget(device_budget, "device", self._device_index)}
        self._rss_limit = resolve_budget(rss_limit, "host")
        if isinstance(gpu_limit, float):
            check_fraction("gpu_limit", gpu_limit)
        elif gpu_limit is not None:
            resolve_budget(gpu_limit, "device")
        self._gpu_limit = gpu_limit
        self._lock = threading.RLock()  # registry, levels, counters
        self._enforce_lock = threading.Lock()  # one trimming pass at a time
        self._entries: Dict[str, Entry] = {}
        self._levels: Dict[str, int] = {}
        self._readings: Dict[str, Tuple[int, int]] = {}
        self._warnings: Deque[Dict[str, Any]] = deque(maxlen=max(1, int(max_warnings)))
        self._warning_count = 0
        self._freed = {"budget": 0, "pressure": 0, "cleanup": 0}
        self._over_budget = {"host": False, "device": False}
        self._callbacks = Listeners("memory pressure callback", log)
        if on_pressure is not None:
            self._callbacks.add(on_pressure)
        self._sampler = sampler
        self._owns_sampler = False
        self._closed = False
        if sampler is not None:
            sampler.add_listener(self.on_sample)

    # ------------------------------------------------------------------ registry
    def register(self, obj: Any, name: Optional[str] = None, kind: Optional[str] = None,
                 priority: Optional[int] = None, role: Optional[str] = None) -> str:
        """Put a pool or cache under this manager's budget; returns its name.

        ``kind`` 'host' or 'device' (default: the object's ``memory_kind``, or 'device' when its
        ``device`` is not 'cpu'). ``role`` 'pool' (has ``acquire``) or 'cache'; lower ``priority``
        is trimmed first (pools 0, caches 100). Enforces the budget at once, and again each time the
        object grows when it has ``on_grow`` listeners (see ``Trimmable``).
        """
        for method in ("bytes_held", "trim"):
            if not callable(getattr(obj, method, None)):
                raise TypeError("cannot register %r: it has no %s() method (see dfl_perf.memory.Trimmable)"
                                % (obj, method))
        kind = kind or kind_of(obj)
        if kind not in ("host", "device"):
            raise ValueError("kind must be 'host' or 'device', got %r" % (kind,))
        role = role or ("pool" if callable(getattr(obj, "acquire", None)) else "cache")
        if role not in ("pool", "cache"):
            raise ValueError("role must be 'pool' or 'cache', got %r" % (role,))
        if priority is None:
            priority = POOL_PRIORITY if role == "pool" else CACHE_PRIORITY
        with self._lock:
            if any(e.obj is obj for e in self._entries.values()):
                raise ValueError("%r is already registered" % (obj,))
            if name is None:
                name = unique_name(type(obj).__name__, self._entries)
            if name in self._entries:
                raise ValueError("a pool or cache named %r is already registered" % name)
            entry = self._entries[name] = Entry(name, obj, kind, role, int(priority), gpu_index_of(obj))
        self._watch(entry)
        self.enforce()
        return name

    def _watch(self, entry: Entry) -> None:
        listeners = getattr(entry.obj, "on_grow", None)
        if callable(getattr(listeners, "add", None)):
            kind = entry.kind
            entry.on_grow = lambda: self._enforce_kind(kind)
            listeners.add(entry.on_grow)

    @staticmethod
    def _unwatch(entry: Entry) -> None:
        if entry.on_grow is not None:
            entry.obj.on_grow.remove(entry.on_grow)
            entry.on_grow = None

    def unregister(self, obj_or_name: Any) -> None:
        """Take a pool or cache (or its name) off the budget; its memory is not touched."""
        with self._lock:
            for name, entry in list(self._entries.items()):
                if entry.obj is obj_or_name or (isinstance(obj_or_name, str) and name == obj_or_name):
                    del self._entries[name]
                    self._unwatch(entry)
                    return
        raise KeyError("not registered: %r" % (obj_or_name,))

    def budget(self, kind: str = "host") -> Optional[int]:
        """The budget in bytes for 'host' or 'device' (None: no cap)."""
        return self._budgets[kind]

    def set_budget(self, kind: str, budget: Budget) -> None:
        """Change the 'host' or 'device' budget (bytes, fraction or None) and enforce it."""
        if kind not in self._budgets:
            raise ValueError("kind must be 'host' or 'device', got %r" % (kind,))
        value = resolve_budget(budget, kind, self._device_index)
        with self._lock:
            self._budgets[kind] = value
        self.enforce()

    def bytes_held(self, kind: Optional[str] = None) -> int:
        """Bytes held by the registered objects of ``kind`` ('host', 'device'; None: all)."""
        return sum(e.obj.bytes_held() for e in self._select(kind))

    def _select(self, kind: Optional[str] = None, gpu_index: Optional[int] = None) -> List[Entry]:
        with self._lock:
            entries = [e for e in self._entries.values() if kind is None or e.kind == kind]
        if gpu_index is not None:
            entries = [e for e in entries if e.gpu_index in (None, gpu_index)]
        return sorted(entries, key=lambda e: e.priority)  # stable: registration order within a priority

    # ------------------------------------------------------------------ freeing
    def enforce(self) -> int:
        """Trim until each budget holds (or nothing idle is left); returns the bytes freed."""
        return self._enforce_kind("host") + self._enforce_kind("device")

    def _enforce_kind(self, kind: str) -> int:
        budget = self._budgets[kind]
        if budget is None:
            return 0
        entries = self._select(kind)
        with self._enforce_lock:
            excess = sum(e.obj.bytes_held() for e in entries) - budget
            freed = sum(self._free_locked(entries, excess).values()) if excess > 0 else 0
            self._warn_if_over(kind, budget, excess - freed)
        with self._lock:
            self._freed["budget"] += freed
        return freed

    def _warn_if_over(self, kind: str, budget: int, excess: int) -> None:
        """Say once per crossing when the budget cannot hold: what is left is all in use."""
        over = excess > 0
        if over and not self._over_budget[kind]:
            log.warning("the %s memory budget of %s cannot hold: registered pools and caches need %s more, all of "
                        "it in use (leased buffers, sessions being used); nothing idle is left to free",
                        kind, format_bytes(budget), format_bytes(excess))
        self._over_budget[kind] = over

    def _free_locked(self, entries: List[Entry], need: int) -> Dict[str, int]:
        """Free at least ``need`` bytes from ``entries`` in order; returns bytes freed per name.
        The caller holds ``_enforce_lock``."""
        freed: Dict[str, int] = {}
        for entry in entries:
            if need <= 0:
                break
            got = int(entry.obj.trim(need) or 0)
            if entry.role == "pool" and got < need and bytes_free_of(entry.obj):
                got += int(entry.obj.trim(None) or 0)  # a pool whose trim(n) stops short of n
            if got:
                freed[entry.name] = freed.get(entry.name, 0) + got
            need -= got
        return freed

    def cleanup(self, level: str = "trim") -> Dict[str, Any]:
        """Free memory now, e.g. when switching models or going idle.

        'trim': idle pool buffers; 'evict': also every session no caller holds; 'all': also
        ``clear()`` every cache that has it, then ``gc.collect()``. Returns ``{level, freed: {name:
        bytes}, total_freed, held_before, held_after}``.
        """
        if level not in ("trim", "evict", "all"):
            raise ValueError("cleanup level must be 'trim', 'evict' or 'all', got %r" % (level,))
        entries = self._select()
        before = {e.name: e.obj.bytes_held() for e in entries}
        freed: Dict[str, int] = {}
        with self._enforce_lock:
            for entry in entries:
                if entry.role == "pool" or level != "trim":
                    freed[entry.name] = int(entry.obj.trim(None) or 0)
                if level == "all" and entry.role == "cache" and callable(getattr(entry.obj, "clear", None)):
                    entry.obj.clear()
        if level == "all":
            gc.collect()
        after = {e.name: e.obj.bytes_held() for e in entries}
        for name in before:  # clear() returns nothing: count what it dropped from bytes_held
            freed[name] = max(freed.get(name, 0), before[name] - after[name])
        total = sum(freed.values())
        with self._lock:
            self._freed["cleanup"] += total
        return {"level": level, "freed": freed, "total_freed": total,
                "held_before": sum(before.values()), "held_after": sum(after.values())}

    # ------------------------------------------------------------------ pressure
    def add_callback(self, callback: Callable[[PressureEvent], None]) -> None:
        """Call ``callback(event)`` on every pressure level change (on the sampling thread)."""
        self._callbacks.add(callback)

    def remove_callback(self, callback: Callable[[PressureEvent], None]) -> None:
        """Stop calling ``callback``; unknown callbacks are ignored."""
        self._callbacks.remove(callback)

    def on_sample(self, sample: Dict[str, Any]) -> List[PressureEvent]:
        """Listener for SystemSampler: enforce the budgets, check every signal, react.

        Returns the pressure events this sample caused (level changes).
        """
        self.enforce()
        events = []
        for signal, used, limit, kind, gpu in read_signals(sample, self._rss_limit, self._gpu_limit):
            event = self._check(signal, used, limit, kind, gpu)
            if event is not None:
                events.append(event)
        for event in events:
            self._callbacks.notify(event)
        return events

    def _check(self, signal: str, used: int, limit: int, kind: str,
               gpu: Optional[int]) -> Optional[PressureEvent]:
        soft_b, hard_b = int(self._soft * limit), int(self._hard * limit)
        hyst_b = int(self._hysteresis * limit)
        with self._lock:
            previous = self._levels.get(signal, 0)
            level = next_level(previous, used, soft_b, hard_b, hyst_b)
            self._levels[signal] = level
            self._readings[signal] = (used, limit)
        freed = 0
        if level == 2:  # act on every hard reading: free enough to get back under soft
            entries = self._select(kind, gpu)
            with self._enforce_lock:
                freed = sum(self._free_locked(entries, used - soft_b + hyst_b).values())
            with self._lock:
                self._freed["pressure"] += freed
        if level == previous and not freed:
            return None
        event = PressureEvent(signal, LEVELS[level], LEVELS[previous], used, limit, soft_b, hard_b, freed)
        if level > previous:
            self._warn(event, kind)
        return event

    def _warn(self, event: PressureEvent, kind: str) -> None:
        budget = self._budgets[kind]
        message = "memory pressure (%s) on %s: %s used of a %s limit (%.0f%%; soft %.0f%%, hard %.0f%%); " \
                  "registered pools/caches hold %s of %s memory (budget %s)%s" % (
                      event.level, event.signal, format_bytes(event.used), format_bytes(event.limit),
                      100.0 * event.used / event.limit, 100.0 * self._soft, 100.0 * self._hard,
                      format_bytes(self.bytes_held(kind)), kind, "none" if budget is None else format_bytes(budget),
                      "; freed %s" % format_bytes(event.freed) if event.freed else "")
        log.warning(message)
        with self._lock:
            self._warning_count += 1
            self._warnings.append({"time": event.time, "signal": event.signal, "level": event.level,
                                   "used": event.used, "limit": event.limit, "freed": event.freed,
                                   "message": message})

    # ------------------------------------------------------------------ reporting
    def summary(self) -> Dict[str, Any]:
        """Per registered object: kind, role, bytes held; per budget: held, headroom; pressure
        levels with the last readings; warnings raised (count and the latest ones); bytes freed."""
        entries = self._select()
        held = {e.name: e.obj.bytes_held() for e in entries}
        budgets = {}
        for kind, budget in self._budgets.items():
            total = sum(held[e.name] for e in entries if e.kind == kind)
            budgets[kind] = {"budget": budget, "held": total,
                             "headroom": None if budget is None else budget - total}
        with self._lock:
            pressure = {s: {"level": LEVELS[self._levels.get(s, 0)], "used": u, "limit": lim}
                        for s, (u, lim) in self._readings.items()}
            return {
                "entries": [{"name": e.name, "kind": e.kind, "role": e.role, "priority": e.priority,
                             "bytes_held": held[e.name], "bytes_free": bytes_free_of(e.obj)} for e in entries],
                "budgets": budgets,
                "thresholds": {"soft": self._soft, "hard": self._hard, "hysteresis": self._hysteresis,
                               "rss_limit": self._rss_limit},
                "pressure": pressure,
                "warning_count": self._warning_count,
                "warnings": list(self._warnings),
                "freed": dict(self._freed),
            }

    # ------------------------------------------------------------------ sampling
    def start_sampling(self, interval: float = 1.0) -> MemoryManager:
        """Sample process, system and GPU memory every ``interval`` s on a thread of a new
        SystemSampler (dfl_perf.monitor) and react to it; ``close()`` stops it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("MemoryManager is closed")
            if self._sampler is not None:
                raise RuntimeError("this MemoryManager already listens to a sampler")
            sampler = _new_sampler(interval)
            self._sampler, self._owns_sampler = sampler, True
        sampler.add_listener(self.on_sample)
        sampler.start()
        return self

    def close(self) -> None:
        """Stop listening to the sampler (and stop it if this manager started it) and to the
        registered objects' growth; they stay registered and keep their memory. Idempotent."""
        with self._lock:
            self._closed = True
            sampler, owns = self._sampler, self._owns_sampler
            self._sampler, self._owns_sampler = None, False
            entries = list(self._entries.values())
        for entry in entries:
            self._unwatch(entry)
        if sampler is not None:
            sampler.remove_listener(self.on_sample)
            if owns:
                sampler.close()

    def __enter__(self) -> MemoryManager:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<MemoryManager entries=%d host=%s/%s device=%s/%s>" % (
            len(self._entries), self.bytes_held("host"), self._budgets["host"],
            self.bytes_held("device"), self._budgets["device"])


def _new_sampler(interval: float) -> Any:
    from dfl_perf.monitor.sampler import SystemSampler

    return SystemSampler(interval=interval)
