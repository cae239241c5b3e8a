"""Shared helpers for benchmark scripts: machine/version header, medians, JSON output."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def machine_info() -> Dict[str, Any]:
    """Machine and library versions, for every benchmark's header and JSON (``dfl-perf benchmark``'s own)."""
    from dfl_perf.benchmark.report import machine_info as describe

    return describe()


def print_header(title: str, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    info = info or machine_info()
    v = info["versions"]
    print("== %s ==" % title)
    print("machine: %s, %s cores (budget %s), Python %s" % (info["platform"], info["cpu_count"], info["cpu_budget"],
                                                           v["python"]))
    print("versions: " + ", ".join("%s %s" % (k, v[k]) for k in v if k not in ("python", "dfl_perf")))
    return info


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def write_json(path: Optional[str], payload: Dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str))
        print("wrote %s" % path)
