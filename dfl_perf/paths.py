"""Where dfl_perf keeps files: one function decides each location."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache_dir", "ensure_private_dir", "CACHE_DIR_ENV"]

CACHE_DIR_ENV = "DFL_PERF_CACHE_DIR"


def user_cache_dir() -> Path:
    """The user cache directory for dfl_perf (not created here).

    ``DFL_PERF_CACHE_DIR`` overrides it; otherwise the platform's user cache folder as
    ``platformdirs`` knows it: ``%LOCALAPPDATA%\\dfl_perf\\Cache`` on Windows,
    ``~/Library/Caches/dfl_perf`` on macOS, ``$XDG_CACHE_HOME/dfl_perf`` (default
    ``~/.cache/dfl_perf``) elsewhere.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("dfl_perf", appauthor=False))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) readable by the user only; return it.

    Raises OSError naming the path when it cannot be created or is not a directory.
    """
    path = Path(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError("cannot create cache directory %s: %s" % (path, exc)) from exc
    if not path.is_dir():
        raise OSError("cache path %s exists but is not a directory" % path)
    return path
