"""Optional imports and import costs, so that start-up pays only for what a process uses.

dfl_perf defers its heavy imports (numpy, onnxruntime, cv2, onnx, psutil, pynvml) by importing them
inside the functions that need them; ``optional_import`` is for a library that may be absent
(pynvml, prometheus_client), ``is_available`` asks without importing, ``import_cost`` measures.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
import types
from typing import Dict, Iterable, Optional

__all__ = ["optional_import", "is_available", "import_cost"]


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
