"""The benchmark's table, plot and machine description."""

from __future__ import annotations

import os
import platform
from typing import Any, Dict, List

__all__ = ["machine_info", "format_table", "plot"]


def machine_info() -> Dict[str, Any]:
    """Machine and library versions, recorded with every result."""
    from dfl_perf import __version__
    from dfl_perf.devices import cpu_budget, detect_gpus
    from dfl_perf.lazy import optional_import

    versions = {"dfl_perf": __version__, "python": platform.python_version()}
    for name in ("numpy", "onnxruntime", "cv2", "onnx"):
        module = optional_import(name)
        versions[name] = None if module is None else str(getattr(module, "__version__", "?"))
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "cpu_budget": cpu_budget(),
            "gpus": [g.name for g in detect_gpus()], "versions": versions}


def _mb(n: float) -> str:
    return "%.0f MB" % (n / 1e6)  # decimal, like bench_footprint and the README


def _kb(n: float) -> str:
    return "%.1f kB" % (n / 1e3)  # decimal, like _mb


def _ms(s: float) -> str:
    return "%.1f ms" % (s * 1000)


def format_table(report: Dict[str, Any]) -> str:
    """A plain-text table: baseline vs optimized, then the verdict lines."""
    b, o = report["baseline"], report["optimized"]
    rows: List[List[str]] = [
        ["", "baseline (DFL way)", "optimized (dfl_perf)", "ratio"],
        ["FPS, all frames (median of %d)" % len(b["fps_runs"]), "%.1f" % b["fps"], "%.1f" % o["fps"],
         "%.2fx" % report["speedup"]],
    ]
    for key in ("p50", "p95", "p99"):
        rows.append(["all frames: latency %s" % key, _ms(b["latency"][key]), _ms(o["latency"][key]),
                     "%.2fx" % (o["latency"][key] / b["latency"][key])])
    if "live" in b and "live" in o:
        bl, ol = b["live"], o["live"]
        rows.append(["live %g FPS camera: FPS" % bl["camera_fps"], "%.1f" % bl["fps"], "%.1f" % ol["fps"],
                     "%.2fx" % (ol["fps"] / max(bl["fps"], 1e-9))])
        for key in ("p50", "p99"):
            rows.append(["live latency %s" % key, _ms(bl["latency"][key]), _ms(ol["latency"][key]),
                         "%.2fx" % (ol["latency"][key] / bl["latency"][key])])
    rows += [
        ["peak RSS, with %s of preloaded frames" % _mb(b.get("frames_bytes", 0)), _mb(b["peak_rss"]),
         _mb(o["peak_rss"]), "%.2fx" % (o["peak_rss"] / b["peak_rss"])],
        ["allocated per frame", _kb(b["alloc_per_frame"]), _kb(o["alloc_per_frame"]),
         "%.3fx" % (o["alloc_per_frame"] / max(b["alloc_per_frame"], 1))],
        ["session creation", _ms(b["session_seconds"]), _ms(o["session_seconds"]), ""],
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    w, m, s = report["workload"], report["machine"], report["session_start"]
    check = report["output_check"]
    lines += [""] + _overload_lines(o)
    lines += [
        "speedup %.2fx   compute bound %.1f FPS (stages %s on %d cores)   efficiency %.0f%%" % (
            report["speedup"], report["compute_bound_fps"],
            ", ".join("%s %.1f ms" % kv for kv in o["stage_cpu_ms"].items()), m["cpu_budget"],
            100 * report["efficiency"]),
        "outputs_match %s (max |diff| %s levels over %d frames, mean %.4f; tolerance %d)" % (
            report["outputs_match"], check["max_abs_diff"], check["frames_compared"], check["mean_abs_diff"],
            check["tolerance"]),
        "DFM session start: DFL-style %s, tuned cold %s, tuned from disk cache %s, in-process cache hit %s" % (
            _ms(s["dfl_create"]), _ms(s["tuned_cold"]), _ms(s["tuned_disk_cached"]), _ms(s["cache_hit"])),
        "import dfl_perf adds %.1f ms" % report["import_dfl_perf_ms"],
        "workload: %s; detector %s; DFM %s; provider %s; workers %s" % (
            w["source"], w["detector"], w["dfm"] or "stand-in (%s)" % w["dfm_cost"], w["provider"],
            ", ".join("%s %d" % kv for kv in o["workers"].items()) if o.get("workers")
            else "swap %d" % o["swap_workers"]),
        "machine: %s, %s cores (budget %s); %s" % (
            m["platform"], m["cpu_count"], m["cpu_budget"],
            ", ".join("%s %s" % kv for kv in m["versions"].items())),
    ]
    return "\n".join(lines)


def _overload_lines(optimized: Dict[str, Any]) -> List[str]:
    """The live phase under load: fixed quality vs holding the target (dfl_perf only)."""
    load = optimized.get("overload")
    if not load:
        return []
    fixed, adaptive = load["fixed"], load["adaptive"]
    settings = ", ".join(" ".join("%s %s" % kv for kv in s.items()) for s in load["settings"] if s)
    return [
        "live under load: %.1f FPS offered (%.1fx the all-frames FPS), medians of %d runs:" % (
            load["offered_fps"], load["factor"], len(load["settings"])),
        "  fixed quality:    %.1f FPS, %d frames lost, latency p50 %s p99 %s" % (
            fixed["fps"], fixed["lost"], _ms(fixed["latency"]["p50"]), _ms(fixed["latency"]["p99"])),
        "  holding the rate: %.1f FPS, %d frames lost, latency p50 %s p99 %s (%s knob moves; at the end: %s)" % (
            adaptive["fps"], adaptive["lost"], _ms(adaptive["latency"]["p50"]), _ms(adaptive["latency"]["p99"]),
            "/".join(str(n) for n in load["changes"]), settings or "-"),
        "",
    ]


def plot(report: Dict[str, Any], path: str) -> None:
    """FPS and latency over time, baseline vs optimized (matplotlib, from the ``bench`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fps, ax_lat) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for key, label in (("baseline", "baseline (DFL way)"), ("optimized", "optimized (dfl_perf)")):
        rows = report[key]["timeline"]
        t = [r["t"] for r in rows]
        ax_fps.plot(t, [r["fps"] for r in rows], marker=".", label=label)
        ax_lat.plot(t, [1000 * r["latency_p50"] for r in rows], marker=".", label=label)
    ax_fps.set_ylabel("frames / s")
    ax_lat.set_ylabel("latency p50 (ms)")
    ax_lat.set_xlabel("seconds into the run")
    ax_fps.set_title("dfl-perf benchmark: speedup %.2fx, outputs_match %s" % (report["speedup"], report["outputs_match"]))
    ax_fps.legend()
    ax_fps.grid(alpha=0.3)
    ax_lat.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
