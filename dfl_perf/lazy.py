"""Lazy and optional imports, so that start-up pays only for what a process uses."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import threading
import types
from typing import Dict, Iterable, Optional

__all__ = ["lazy_import", "optional_import", "is_available", "import_cost", "LazyModule"]


class LazyModule(types.ModuleType):
    """A stand-in for a module that imports the real one on first attribute access."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # Set through __dict__ so that __getattr__ is never entered for our own state.
        self.__dict__["_lazy_lock"] = threading.Lock()
        self.__dict__["_lazy_module"] = None

    def _lazy_load(self) -> types.ModuleType:
        module = self.__dict__["_lazy_module"]
        if module is not None:
            return module
        with self.__dict__["_lazy_lock"]:
            module = self.__dict__["_lazy_module"]
            if module is None:
                module = importlib.import_module(self.__name__)
                self.__dict__["_lazy_module"] = module
        return module

    def __getattr__(self, attr: str):
        return getattr(self._lazy_load(), attr)

    def __dir__(self):
        return dir(self._lazy_load())

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_lazy_module"] is not None else "not loaded"
        return "<lazy module %r (%s)>" % (self.__name__, state)


def lazy_import(name: str) -> types.ModuleType:
    """Return ``name`` if already imported, else a proxy that imports it on first attribute access.

    Thread-safe: many threads touching the proxy at once import the module once and all see the
    real module. A missing module raises ImportError at first use, not here.
    """
    module = sys.modules.get(name)
    if module is not None:
        return module
    return LazyModule(name)


def optional_import(name: str) -> Optional[types.ModuleType]:
    """Import ``name`` and return it, or return None when it is not installed or fails to import."""
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install (missing DLL, ABI mismatch) counts as absent
        return None


def is_available(name: str) -> bool:
    """True when ``name`` can be found on the import path; the module is not imported."""
    if name in sys.modules:
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
        return False


_COST_SNIPPET = r"""
import sys, time, json
name = sys.argv[1]
t0 = time.perf_counter()
try:
    __import__(name)
    ok = True
except Exception:
    ok = False
print(json.dumps({"ok": ok, "seconds": time.perf_counter() - t0}))
"""


def import_cost(names: Iterable[str], python: Optional[str] = None, timeout: float = 120.0) -> Dict[str, Optional[float]]:
    """Seconds to import each module, each measured in a fresh interpreter.

    Returns ``{name: seconds}``; None for a module that is missing or fails to import.
    """
    exe = python or sys.executable
    costs: Dict[str, Optional[float]] = {}
    for name in names:
        try:
            out = subprocess.run(
                [exe, "-c", _COST_SNIPPET, name],
                capture_output=True, text=True, timeout=timeout, check=False,
            )
            report = json.loads(out.stdout.strip().splitlines()[-1])
            costs[name] = report["seconds"] if report["ok"] else None
        except (subprocess.TimeoutExpired, ValueError, IndexError, OSError):
            costs[name] = None
    return costs
