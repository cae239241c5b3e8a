"""``Listeners``: callbacks an object calls when something happens to it, e.g. a buffer pool or a
session cache telling its ``MemoryManager`` that it grew. Standard library only."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, List

__all__ = ["Listeners"]

log = logging.getLogger("dfl_perf")


class Listeners:
    """A thread-safe list of callbacks. ``notify(*args)`` calls each one in the order added; a
    callback that raises is logged and does not stop the others. Call ``notify`` without holding
    your own locks: a callback may call back into you (a manager trimming the pool that grew)."""

    def __init__(self, what: str = "listener", logger: logging.Logger = log) -> None:
        self._what = what  # for the log line of a callback that fails
        self._log = logger
        self._lock = threading.Lock()
        self._callbacks: List[Callable[..., Any]] = []

    def add(self, callback: Callable[..., Any]) -> None:
        if not callable(callback):
            raise TypeError("%s must be callable, got %r" % (self._what, callback))
        with self._lock:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback``; one that was never added is ignored."""
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def notify(self, *args: Any) -> None:
        if not self._callbacks:  # nobody listens: the common case costs one attribute read
            return
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                self._log.exception("%s %r failed", self._what, callback)

    def __len__(self) -> int:
        with self._lock:
            return len(self._callbacks)
