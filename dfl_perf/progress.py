"""A progress bar on stderr for the long commands (benchmark, soak, run, model downloads).

``tqdm`` draws it (terminal width, rate, remaining time, at most 10 redraws a second); this module
only fits it to how the commands report progress: an absolute position, a note, and no bar when
the stream is not a terminal unless asked for.
"""

from __future__ import annotations

import sys
from typing import Any, Optional, TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """``bar = ProgressBar('swap', total=300); bar.update(n); bar.close()`` (or use it in ``with``).

    ``unit`` / ``unit_scale`` are tqdm's (``unit="B", unit_scale=True`` for bytes: 1.20M/3.40M, B/s).
    ``enabled=None`` shows the bar only when ``stream`` (default stderr) is a terminal.
    """

    def __init__(self, label: str, total: float, stream: Optional[TextIO] = None, enabled: Optional[bool] = None,
                 unit: str = "it", unit_scale: bool = False) -> None:
        stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.total = total
        # miniters=1: every update checks the clock (mininterval keeps redraws to 10 a second), so the
        # bar needs no tqdm_monitor thread to catch up after a slow stretch
        self._bar = _tqdm_class()(total=total or None, desc=label, file=stream, disable=not enabled, mininterval=0.1,
                                  miniters=1, unit=unit, unit_scale=unit_scale, dynamic_ncols=True)

    @property
    def value(self) -> float:
        return self._bar.n

    def update(self, value: float, note: str = "") -> None:
        """Set the progress to ``value`` (out of ``total``); ``note`` is shown after it until replaced."""
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(value - self._bar.n)

    def advance(self, step: float = 1, note: str = "") -> None:
        self.update(self._bar.n + step, note)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TQDM_CLASS = None


def _tqdm_class() -> Any:
    """tqdm without its monitor thread. tqdm starts ``tqdm_monitor`` (a thread that wakes every 10 s,
    forever) for every new bar, a disabled one too, and stops it only when an enabled bar closes:
    a bar off a terminal would leave it running in the host app. The subclass never starts it."""
    global _TQDM_CLASS
    if _TQDM_CLASS is None:
        from tqdm import tqdm

        class _Tqdm(tqdm):
            monitor_interval = 0

        _TQDM_CLASS = _Tqdm
    return _TQDM_CLASS
