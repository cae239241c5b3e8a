"""A one-line progress bar on stderr, with no dependency; silent when the stream is not a terminal
unless asked."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

__all__ = ["ProgressBar"]


def _count(value: float, total: float) -> str:
    return "%d/%d" % (value, total)


class ProgressBar:
    """``bar = ProgressBar('swap', total=300); bar.update(n); bar.close()``; redrawn at most 10 times a second.

    ``describe(value, total)`` formats the numbers shown after the bar (default ``"12/300"``);
    ``enabled=None`` shows the bar only when ``stream`` is a terminal.
    """

    def __init__(self, label: str, total: float, stream: Optional[TextIO] = None, width: int = 30,
                 describe: Callable[[float, float], str] = _count, enabled: Optional[bool] = None) -> None:
        self.label, self.total, self.width, self.describe = label, max(total, 1), width, describe
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.value = 0.0
        self._last = 0.0
        self._started = time.monotonic()

    def update(self, value: float, note: str = "") -> None:
        """Set the progress to ``value`` (out of ``total``)."""
        self.value = value
        now = time.monotonic()
        if self.enabled and (now - self._last >= 0.1 or value >= self.total):
            self._last = now
            self._draw(note)

    def advance(self, step: float = 1, note: str = "") -> None:
        self.update(self.value + step, note)

    def _draw(self, note: str = "") -> None:
        frac = min(1.0, self.value / self.total)
        filled = int(frac * self.width)
        self.stream.write("\r%-22s [%s%s] %3d%% %s %s" % (
            self.label[:22], "#" * filled, "-" * (self.width - filled), frac * 100,
            self.describe(self.value, self.total), note))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
