"""Shared helpers for benchmark scripts: machine/version header, medians, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def machine_info() -> Dict[str, Any]:
    """Machine and library versions, for every benchmark's header and JSON."""
    from dfl_perf.lazy import optional_import

    versions = {}
    for name in ("numpy", "onnxruntime", "cv2", "onnx"):
        module = optional_import(name)
        versions[name] = None if module is None else str(getattr(module, "__version__", "?"))
    try:
        from dfl_perf.devices import cpu_budget

        budget: Optional[int] = cpu_budget()
    except Exception:
        budget = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_budget": budget,
        "python": platform.python_version(),
        "versions": versions,
    }


def print_header(title: str, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    info = info or machine_info()
    v = info["versions"]
    print("== %s ==" % title)
    print("machine: %s, %s cores (budget %s), Python %s" % (info["platform"], info["cpu_count"], info["cpu_budget"],
                                                           info["python"]))
    print("versions: " + ", ".join("%s %s" % (k, v[k]) for k in v))
    return info


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print("wrote %s" % path)
