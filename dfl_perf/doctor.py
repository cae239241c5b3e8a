"""``dfl-perf doctor``: what this machine has, and what to change for speed."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from dfl_perf import __version__
from dfl_perf.devices import (
    CPU_ONLY_PROVIDERS,
    available_providers,
    cpu_budget,
    detect_gpus,
    install_problems,
    installed_onnxruntime_flavours,
)
from dfl_perf.lazy import import_cost, optional_import

__all__ = ["collect", "recommendations", "format_report", "HEAVY_MODULES"]

HEAVY_MODULES = ("numpy", "onnxruntime", "cv2", "onnx", "psutil")
ZWSP_KEY = "CUDA_\u200bCACHE_\u200bMAXSIZE"  # DFL's key: zero-width spaces, so CUDA never sees it


def _version(module_name: str) -> Optional[str]:
    module = optional_import(module_name)
    return None if module is None else str(getattr(module, "__version__", "unknown"))


def _memory_total() -> Optional[int]:
    psutil = optional_import("psutil")
    if psutil is not None:
        return int(psutil.virtual_memory().total)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _dfl_info(dfl_path: Optional[str]) -> Dict[str, Any]:
    """Where DeepFaceLive's xlib is, and whether its CUDA_CACHE_MAXSIZE bug is present."""
    info: Dict[str, Any] = {"found": False, "path": None, "zwsp_bug": False}
    candidates = []
    if dfl_path:
        candidates.append(Path(dfl_path) / "xlib" / "onnxruntime" / "device.py")
    from dfl_perf.lazy import is_available

    if is_available("xlib"):
        import importlib.util

        spec = importlib.util.find_spec("xlib")
        if spec is not None and spec.submodule_search_locations:
            candidates.append(Path(list(spec.submodule_search_locations)[0]) / "onnxruntime" / "device.py")
    for device_py in candidates:
        if device_py.is_file():
            info.update(found=True, path=str(device_py.parent.parent.parent))
            info["zwsp_bug"] = "\u200b" in device_py.read_text(encoding="utf-8", errors="replace")
            break
    if ZWSP_KEY in os.environ:
        info["zwsp_bug"] = True
    return info


def collect(measure_imports: bool = True, dfl_path: Optional[str] = None) -> Dict[str, Any]:
    """Everything doctor reports, as a plain JSON-ready dict."""
    gpus = detect_gpus()
    providers = available_providers()
    flavours = installed_onnxruntime_flavours()
    return {
        "dfl_perf": __version__,
        "python": {"version": platform.python_version(), "executable": sys.executable,
                   "implementation": platform.python_implementation()},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": {name: _version(name) for name in ("numpy", "onnxruntime", "cv2", "onnx", "psutil")},
        "onnxruntime_flavours": flavours,
        "providers": providers,
        "gpus": [dict(g.__dict__) for g in gpus],
        "gpu_reason": gpus.reason,
        "cpu": {"logical": os.cpu_count(), "budget": cpu_budget()},
        "memory_total": _memory_total(),
        "import_seconds": import_cost(HEAVY_MODULES) if measure_imports else {},
        "problems": install_problems(gpus=gpus, providers=providers, flavours=flavours),
        "dfl": _dfl_info(dfl_path),
    }


def recommendations(info: Dict[str, Any]) -> List[str]:
    """Concrete actions for the machine described by ``info`` (from ``collect()``)."""
    advice = list(info["problems"])
    providers = info["providers"]
    if not providers:
        advice.append("onnxruntime is not installed: pip install onnxruntime (CPU) or onnxruntime-gpu "
                      "(NVIDIA), or keep the flavour your app already ships")
    if "CUDAExecutionProvider" in providers:
        advice.append("CUDA provider found: use cudnn_conv_algo_search=HEURISTIC (dfl_perf's default) to avoid "
                      "the minutes-long EXHAUSTIVE cuDNN search at first start")
    budget = info["cpu"]["budget"]
    if budget <= 4 and set(providers) <= CPU_ONLY_PROVIDERS:
        advice.append("only %d usable CPU core(s): turn intra-op spinning off and split threads across concurrent "
                      "sessions (SessionConfig.for_pipeline does both); onnxruntime's defaults make each session "
                      "busy-wait and starve the next one" % budget)
    if info["dfl"]["zwsp_bug"]:
        advice.append("DeepFaceLive's device.py sets 'CUDA_\\u200bCACHE_\\u200bMAXSIZE' (zero-width spaces), so the "
                      "CUDA kernel cache stays at its small default: launch DFL through `dfl-perf dfl`, which sets "
                      "the real CUDA_CACHE_MAXSIZE")
    slow = [(name, sec) for name, sec in info["import_seconds"].items() if sec is not None and sec > 0.5]
    for name, sec in slow:
        advice.append("importing %s takes %.1f s: a process that never runs a model should not import it "
                      "(DFL imports it in every spawned worker)" % (name, sec))
    return advice


def _fmt_bytes(n: Optional[int]) -> str:
    return "unknown" if n is None else "%.1f GiB" % (n / 2 ** 30)


def format_report(info: Dict[str, Any]) -> str:
    """A short human-readable report with the recommendations at the end."""
    v = info["versions"]
    lines = [
        "dfl_perf %s   Python %s (%s)" % (info["dfl_perf"], info["python"]["version"], info["python"]["executable"]),
        "platform      %s" % info["platform"],
        "numpy %s   onnxruntime %s (%s)   cv2 %s   onnx %s" % (
            v["numpy"], v["onnxruntime"], ", ".join(info["onnxruntime_flavours"]) or "no flavour", v["cv2"], v["onnx"]),
        "providers     %s" % (", ".join(info["providers"]) or "none (onnxruntime missing)"),
        "CPU           %s logical, %s usable   RAM %s" % (
            info["cpu"]["logical"], info["cpu"]["budget"], _fmt_bytes(info["memory_total"])),
    ]
    if info["gpus"]:
        for g in info["gpus"]:
            lines.append("GPU %d         %s, %s total, %s free, driver %s, compute %s" % (
                g["index"], g["name"], _fmt_bytes(g["memory_total"]), _fmt_bytes(g["memory_free"]),
                g["driver_version"], g["compute_capability"]))
    else:
        lines.append("GPUs          none (%s)" % info["gpu_reason"])
    if info["import_seconds"]:
        costs = ", ".join("%s %s" % (n, "missing" if s is None else "%.0f ms" % (s * 1000))
                          for n, s in info["import_seconds"].items())
        lines.append("import cost   %s" % costs)
    if info["dfl"]["found"]:
        lines.append("DeepFaceLive  %s" % info["dfl"]["path"])
    advice = recommendations(info)
    lines.append("")
    lines.append("Recommendations:" if advice else "Recommendations: none, this install looks right.")
    lines.extend("  - " + a for a in advice)
    return "\n".join(lines)
