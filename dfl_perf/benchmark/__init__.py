"""``dfl-perf benchmark``: DFL's way against dfl_perf's, on the same frames and models, in one run.

Each repeat runs the baseline and the optimized path in fresh processes (alternating which goes
first), so each has its own peak RSS and thread pools; the table reports medians over repeats.
A separate pass in this process runs both paths on every frame and compares the output frames
(``outputs_match``), so a speed-up is never bought with wrong results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

__all__ = ["BenchmarkOptions", "run_benchmark"]

#: outputs agree when no pixel differs by more than this many uint8 levels. The optimized merge
#: warps only the face's rectangle: OpenCV rounds warp sample positions to 1/32 px from the matrix,
#: and a rectangle-offset matrix rounds a little differently than the full frame's, which moves
#: sharp edges by up to 3 levels on OpenCV 4.8 (DFL's pin), 1 on OpenCV 5.
MATCH_TOLERANCE = 3


@dataclass
class BenchmarkOptions:
    """What to measure; the defaults are the reference workload at 640x480."""

    resolution: Tuple[int, int] = (640, 480)
    duration: float = 4.0  # seconds of 30 fps clip
    repeats: int = 3
    model: Optional[str] = None  # a real .dfm; None = the stand-in
    dfm_cost: str = "20ms"
    detector: str = "yunet_n_320_320"
    source: Optional[str] = None  # video path or camera index; None = the generated clip
    faces: int = 1
    provider: Optional[str] = None
    warmup: int = 5
    trace_frames: int = 30
    max_queue: int = 2
    live_fps: float = 30.0  # the live phase: a camera at this rate
    live_seconds: float = 4.0
    live_deadline: float = 0.15
    #: the live phase under load: frames offered at this multiple of the optimized all-frames FPS, for
    #: live_seconds with fixed quality and again holding that rate as the target (0: no such phase)
    overload: float = 1.2
    progress: bool = True
    workload_extra: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def quick(cls, **changes: Any) -> BenchmarkOptions:
        """Under two minutes on a 2-core machine: 2 s of clip, 3 repeats, fewer traced frames."""
        base = dict(duration=2.0, repeats=3, trace_frames=15, live_seconds=2.0)
        base.update(changes)
        return cls(**base)


def _frames(options: BenchmarkOptions):
    import numpy as np

    count = max(10, int(round(options.duration * 30)))
    if options.source is None:
        from dfl_perf.facepipe.clip import make_clip

        clip = make_clip(size=tuple(options.resolution), frames=count, faces=options.faces)
        return np.stack(clip.to_list()), "generated clip %dx%d, %d face(s)" % (options.resolution + (options.faces,))
    import cv2

    from dfl_perf.facepipe.clip import open_source

    source: Any = int(options.source) if str(options.source).isdigit() else options.source
    frames = []
    for frame in open_source(source, max_frames=count):
        if frame.shape[1::-1] != tuple(options.resolution):
            frame = cv2.resize(frame, tuple(options.resolution), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    if not frames:
        raise ValueError("no frames could be read from %s" % options.source)
    return np.stack(frames), "%s, %d frames at %dx%d" % ((options.source, len(frames)) + tuple(options.resolution))


def _workload(options: BenchmarkOptions) -> Dict[str, Any]:
    """The workload spec for the child processes, with the model files resolved (fetched) here once."""
    from dfl_perf.facepipe.workload import Workload

    spec = {"detector": options.detector, "dfm": options.model, "dfm_cost": options.dfm_cost,
            "max_faces": max(1, options.faces)}
    spec.update(options.workload_extra)
    workload = Workload(**spec)
    spec.update(detector=str(workload.detector_path()), dfm=options.model and str(workload.dfm_path()))
    if options.model is None:
        workload.dfm_path()  # build the stand-in file once, before the children race for it
    return spec


def _provider(options: BenchmarkOptions) -> str:
    from dfl_perf.devices import select_providers

    return select_providers(options.provider)[0][0]


def _run_child(spec: Dict[str, Any], workdir: Path, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    name = "%s_%d" % (spec["mode"], len(list(workdir.glob("*.out.json"))))
    spec_path, out_path = workdir / (name + ".spec.json"), workdir / (name + ".out.json")
    spec_path.write_text(json.dumps(spec))
    child_env = dict(os.environ)
    child_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "dfl_perf.benchmark.worker", str(spec_path), str(out_path)],
                          capture_output=True, text=True, env=child_env)
    if proc.returncode != 0:
        raise RuntimeError("benchmark %s run failed (exit %d):\n%s" % (spec["mode"], proc.returncode, proc.stderr[-4000:]))
    return json.loads(out_path.read_text())


def compare_outputs(frames: Any, workload: Dict[str, Any], provider: str, progress: Any = None) -> Dict[str, Any]:
    """Run both paths on every frame here and compare the output frames pixel by pixel."""
    import numpy as np

    from dfl_perf.facepipe.workload import BaselineRunner, OptimizedRunner, Workload

    w = Workload(**workload)
    expected: Dict[int, Any] = {}
    BaselineRunner(w, provider).run(frames, sink=lambda i, f: expected.__setitem__(i, f))
    diffs: List[int] = []
    mean_diffs: List[float] = []

    def check(index: int, frame: Any) -> None:
        d = np.abs(frame.astype(np.int16) - expected.pop(index).astype(np.int16))
        diffs.append(int(d.max()))
        mean_diffs.append(float(d.mean()))
        if progress is not None:
            progress.advance()

    with OptimizedRunner(w, provider) as runner:
        runner.run(frames, sink=check)
    worst = max(diffs) if diffs else None
    return {"frames_compared": len(diffs), "max_abs_diff": worst, "mean_abs_diff": float(np.mean(mean_diffs or [0])),
            "tolerance": MATCH_TOLERANCE, "match": bool(diffs) and len(diffs) == len(frames) and worst <= MATCH_TOLERANCE}


def _median_run(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Medians of the numbers over repeats; the timeline of the median-FPS run."""
    import numpy as np

    def med(get):
        return float(np.median([get(r) for r in runs]))

    by_fps = sorted(runs, key=lambda r: r["fps"])
    out = {
        "fps": med(lambda r: r["fps"]),
        "fps_runs": [r["fps"] for r in runs],
        "latency": {k: med(lambda r, k=k: r["latency"][k]) for k in ("p50", "p95", "p99", "max")},
        "peak_rss": med(lambda r: r["peak_rss"]),
        "frames_bytes": runs[0]["frames_bytes"],
        "alloc_per_frame": med(lambda r: r["alloc_per_frame"]["median"]),
        "alloc_frames_over_64k": med(lambda r: r["alloc_per_frame"]["frames_over_64k"]),
        "session_seconds": med(lambda r: r["session_seconds"]),
        "timeline": by_fps[len(by_fps) // 2]["timeline"],
    }
    if "live" in runs[0]:
        out["live"] = {"camera_fps": runs[0]["live"]["camera_fps"], "fps": med(lambda r: r["live"]["fps"]),
                       "offered": med(lambda r: r["live"]["offered"]), "done": med(lambda r: r["live"]["done"]),
                       "latency": {k: med(lambda r, k=k: r["live"]["latency"][k]) for k in ("p50", "p95", "p99")}}
    if "overload" in runs[0]:
        out["overload"] = {"factor": runs[0]["overload"]["factor"],
                           "offered_fps": med(lambda r: r["overload"]["offered_fps"])}
        for mode in ("fixed", "adaptive"):
            out["overload"][mode] = {
                "fps": med(lambda r, m=mode: r["overload"][m]["fps"]),
                "lost": med(lambda r, m=mode: r["overload"][m]["lost"]),
                "latency": {k: med(lambda r, k=k, m=mode: r["overload"][m]["latency"][k]) for k in ("p50", "p99")}}
        out["overload"]["settings"] = [r["overload"]["adaptive"]["settings"] for r in runs]
        out["overload"]["changes"] = [len(r["overload"]["adaptive"]["changes"]) for r in runs]
    if "bound_fps" in runs[0]:
        out["bound_fps"] = med(lambda r: r["bound_fps"])
        out["stage_cpu_ms"] = {k: 1000 * med(lambda r, k=k: r["stage_cpu_seconds"][k]) for k in runs[0]["stage_cpu_seconds"]}
        out["swap_workers"] = runs[0]["swap_workers"]
        out["workers"] = runs[0].get("workers")
    return out


def _import_ms(repeats: int = 5) -> float:
    """Median milliseconds of `import dfl_perf`, each in a fresh interpreter (``lazy.import_cost``)."""
    import statistics

    from dfl_perf.lazy import import_cost

    samples = [import_cost(["dfl_perf"])["dfl_perf"] for _ in range(repeats)]
    return 1000 * statistics.median(s for s in samples if s is not None)


def run_benchmark(options: BenchmarkOptions) -> Dict[str, Any]:
    """Run the whole benchmark; returns the JSON-ready report (see ``report.format_table``)."""
    import numpy as np

    from dfl_perf.benchmark.report import machine_info
    from dfl_perf.progress import ProgressBar

    provider = _provider(options)
    workload = _workload(options)
    frames, source_label = _frames(options)
    total_steps = 2 * options.repeats + 2 + len(frames)
    bar = ProgressBar("benchmark", total_steps, enabled=None if options.progress else False)
    runs: Dict[str, List[Dict[str, Any]]] = {"baseline": [], "optimized": []}
    with tempfile.TemporaryDirectory(prefix="dfl_perf_bench_") as tmp:
        workdir = Path(tmp)
        frames_path = workdir / "frames.npy"
        np.save(str(frames_path), frames)
        common = {"frames_path": str(frames_path), "workload": workload, "provider": provider,
                  "warmup": options.warmup, "trace_frames": options.trace_frames, "max_queue": options.max_queue,
                  "live_fps": options.live_fps, "live_seconds": options.live_seconds,
                  "live_deadline": options.live_deadline, "overload": options.overload}
        for rep in range(options.repeats):
            order = ("baseline", "optimized") if rep % 2 == 0 else ("optimized", "baseline")
            for mode in order:
                bar.advance(note="%s run %d/%d" % (mode, rep + 1, options.repeats))
                runs[mode].append(_run_child(dict(common, mode=mode), workdir))
        disk_env = {"DFL_PERF_CACHE_DIR": str(workdir / "cache")}
        bar.advance(note="session start-up")
        cold = _run_child(dict(common, mode="startup"), workdir, disk_env)
        bar.advance(note="session start-up (disk cache)")
        warm = _run_child(dict(common, mode="startup"), workdir, disk_env)
    bar.update(2 * options.repeats + 2, note="comparing outputs")
    match = compare_outputs(frames, workload, provider, progress=bar)
    bar.close()
    baseline, optimized = _median_run(runs["baseline"]), _median_run(runs["optimized"])
    bound = optimized.get("bound_fps") or float("nan")
    return {
        "workload": dict(workload, source=source_label, resolution=list(options.resolution), frames=len(frames),
                         provider=provider),
        "options": {k: v for k, v in asdict(options).items() if k != "workload_extra"},
        "machine": machine_info(),
        "baseline": baseline,
        "optimized": optimized,
        "speedup": optimized["fps"] / baseline["fps"],
        "compute_bound_fps": bound,
        "efficiency": optimized["fps"] / bound,
        "outputs_match": match["match"],
        "output_check": match,
        "session_start": {"dfl_create": cold["dfl_create"], "tuned_cold": cold["tuned_create"],
                          "tuned_disk_cached": warm["tuned_create"], "cache_hit": cold["cache_hit"]},
        "import_dfl_perf_ms": _import_ms(),
        "runs": runs,
    }
