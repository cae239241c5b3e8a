"""``PerThread``: one state per thread (an IOBinding and its pooled buffers, a batch buffer), made
on the thread's first call; the states of threads that have ended are released when another thread
first arrives, so worker threads that come and go leave no buffers behind."""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Generic, List, Tuple, TypeVar

__all__ = ["PerThread"]

S = TypeVar("S")


class PerThread(Generic[S]):
    """``get()`` returns the calling thread's state, made by ``make()`` the first time; ``release(state)``
    gets the state of each thread that has ended. Thread-safe."""

    def __init__(self, make: Callable[[], S], release: Callable[[S], None]) -> None:
        self._make = make
        self._release = release
        self._local = threading.local()
        self._lock = threading.Lock()
        self._states: List[Tuple[weakref.ref[threading.Thread], S]] = []

    def get(self) -> S:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = self._make()
            with self._lock:
                ended = [s for thread, s in self._states if not _alive(thread)]
                self._states = [(t, s) for t, s in self._states if _alive(t)]
                self._states.append((weakref.ref(threading.current_thread()), state))
            for old in ended:
                self._release(old)
        return state

    def states(self) -> List[S]:
        """Every thread's state, ended threads' included until released."""
        with self._lock:
            return [s for _, s in self._states]

    def take_all(self) -> List[S]:
        """Forget every state and return them, for the owner to release (on close)."""
        with self._lock:
            states, self._states = [s for _, s in self._states], []
        return states


def _alive(thread: weakref.ref[threading.Thread]) -> bool:
    current = thread()
    return current is not None and current.is_alive()
