"""``RunGuard``: counts the runs in progress so that ``close()`` waits for them instead of taking
their buffers away mid-run."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["RunGuard"]


class RunGuard:
    """Runs enter and leave; ``close()`` refuses new runs and waits until the ones inside have left."""

    def __init__(self, closed_message: str) -> None:
        self._changed = threading.Condition()
        self._active = 0
        self._message = closed_message
        self.closed = False

    @contextmanager
    def running(self) -> Iterator[None]:
        """One run: raises RuntimeError(closed_message) once closed."""
        with self._changed:
            if self.closed:
                raise RuntimeError(self._message)
            self._active += 1
        try:
            yield
        finally:
            with self._changed:
                self._active -= 1
                if not self._active:
                    self._changed.notify_all()

    def close(self) -> bool:
        """Refuse new runs, wait for the runs in progress; False if it was already closed."""
        with self._changed:
            if self.closed:
                return False
            self.closed = True
            while self._active:
                self._changed.wait()
            return True
