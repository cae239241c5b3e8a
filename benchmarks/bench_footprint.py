"""Peak memory of the reference workload: baseline vs optimized, per resolution (issue 11, part 2).

The workload is ``dfl_perf.facepipe.workload``: YuNet -> align -> DFM stand-in (20 ms) -> merge on
the generated clip; baseline = DFL's way (DFL's session options, sequential, fresh arrays, DFL's
full-frame float32 merge), optimized = dfl_perf's (tuned cached sessions, pooled IOBinding, the
Pipeline, a MemoryManager over the pool and the cache), low_memory = the same with
``OptimizedRunner(low_memory=True, merge_in_place=True)`` (one swap worker, at most three frames alive,
onnxruntime's memory pattern off, lean weights, faces merged into the source frame). Frames are
rendered one at a time in every mode, so no frame list inflates a peak. The first run of each mode
saves every 100th output frame to disk as it goes; the table compares them pixel by pixel with the
baseline's (largest difference in levels, share of values that differ at all).

The ``one frame`` column is the floor: the low_memory runner's peak over a single frame (the
libraries, the clip, both sessions and one frame's activations, nothing queued). A run of many
frames cannot peak below it, whichever way it is done, so its change from the baseline is about the
most any pipeline of these models and libraries could save at that resolution.

Each (mode, resolution, repeat) runs in a fresh Python process, so one run's allocations never
count in another's peak. The child imports the workload, reads its RSS (``rss_start``), runs the
frames, and reports the process's high-water mark (``VmHWM``; ``peak_wset`` on Windows) and
its RSS at the end; ``rss_ready`` is its RSS once the runner is built (libraries, clip, sessions),
the floor no run can go under. The table gives medians over the repeats and each mode's change
from the baseline.

    python benchmarks/bench_footprint.py                 # 640x480 and 1280x720, 1000 frames, 3 repeats
    python benchmarks/bench_footprint.py --quick         # 100 frames, 1 repeat
    python benchmarks/bench_footprint.py --json out.json
    python benchmarks/bench_footprint.py --dfm-weights-mb 200   # a DFM-sized model (real ones: 100-700 MB)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

from dfl_perf.benchmark.measure import RssSplitSampler, peak_rss_bytes  # noqa: E402

MODES = ("baseline", "optimized", "low_memory")
FLOOR = "one_frame"  # low_memory over one frame: the least a run of these models can peak at
RESOLUTIONS = ((640, 480), (1280, 720))
MB = 1e6
_CHILD_FLAG = "--child"
SAMPLE_EVERY = 100


def run_workload(mode: str, width: int, height: int, frames: int, weights_mb: float = 0.0,
                 samples: Optional[str] = None) -> Dict[str, Any]:
    """Run the reference workload once in this process; returns FPS, per-frame output means and
    ``rss_ready``, the RSS once the runner is built (libraries, clip, sessions: before frame 1).
    ``samples``: a folder where every ``SAMPLE_EVERY``-th output frame is saved (``<index>.npy``)."""
    import numpy as np

    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import BaselineRunner, OptimizedRunner, Workload

    clip = make_clip(size=(width, height), frames=PATH_PERIOD)
    means: List[float] = []

    def source():
        for i in range(frames):
            yield clip.render(i % PATH_PERIOD)

    def sink(index: int, frame: Any) -> None:
        means.append(float(frame.mean()))
        if samples and index % SAMPLE_EVERY == 0:  # written at once: no frame stays in memory
            np.save(os.path.join(samples, "%d.npy" % index), frame)

    workload = Workload(dfm_weights_mb=weights_mb)
    if mode == "baseline":
        runner = BaselineRunner(workload)
        ready = _rss_bytes()
        stats = runner.run(source(), sink=sink)
    else:
        from dfl_perf.memory import MemoryManager

        low = mode == "low_memory"  # the source renders a new frame each time: merging in place is safe
        with OptimizedRunner(workload, low_memory=low, merge_in_place=low) as runner, \
                MemoryManager(host_budget=256 << 20) as memory:
            memory.register(runner.pool, name="frame buffers")
            memory.register(runner.cache, name="sessions")
            ready = _rss_bytes()
            stats = runner.run(source(), sink=sink)
    return {"fps": stats.fps, "frames_done": stats.frames, "output_means": means, "rss_ready": ready}


def _rss_bytes() -> Optional[int]:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _child(mode: str, width: int, height: int, frames: int, weights_mb: float, samples: str) -> int:
    rss_start = _rss_bytes()
    runner, count = ("low_memory", 1) if mode == FLOOR else (mode, frames)
    try:
        with RssSplitSampler() as split:
            report = run_workload(runner, width, height, count, weights_mb, samples)
    except NotImplementedError as exc:
        print(json.dumps({"error": "not_implemented", "message": str(exc)}))
        return 2
    peaks = split.peaks or {}
    print(json.dumps({"mode": mode, "width": width, "height": height, "frames": frames,
                      "rss_start": rss_start, "peak_rss": peak_rss_bytes(), "rss_end": _rss_bytes(),
                      "peak_anon": peaks.get("anon"), "peak_file": peaks.get("file"),
                      "workload": report}, default=str))
    return 0


def measure_once(mode: str, width: int, height: int, frames: int, timeout: float,
                 weights_mb: float = 0.0, samples: str = "") -> Dict[str, Any]:
    """One fresh process running the workload; returns the child's JSON report."""
    cmd = [sys.executable, os.path.abspath(__file__), _CHILD_FLAG, mode, "%dx%d" % (width, height), str(frames),
           str(weights_mb), samples]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise RuntimeError("footprint child %s %dx%d failed (exit %d):\n%s" % (
            mode, width, height, proc.returncode, proc.stderr[-3000:])) from None
    if "error" in report:
        raise NotImplementedError(report["message"])
    return report


def _cell(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One table cell: medians over a cell's repeats, and the runs themselves."""
    cell = {"peak_rss": median(r["peak_rss"] for r in runs), "rss_start": median(r["rss_start"] for r in runs),
            "rss_ready": median(r["workload"]["rss_ready"] for r in runs),
            "fps": median(r["workload"]["fps"] for r in runs), "runs": runs}
    for key in ("peak_anon", "peak_file"):
        values = [r[key] for r in runs if r.get(key) is not None]
        cell[key] = median(values) if values else None
    return cell


def _parse_resolution(text: str) -> Tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("resolution must look like 640x480, got %r" % text) from None
    return width, height


def compare_samples(baseline: str, other: str) -> Dict[str, Any]:
    """Pixel by pixel, the sampled output frames of a mode against the baseline's."""
    import numpy as np

    names = sorted(os.listdir(baseline), key=lambda n: int(n.split(".")[0]))
    if not names or sorted(os.listdir(other)) != sorted(names):
        raise RuntimeError("sampled frames differ: baseline %s, other %s" % (names, sorted(os.listdir(other))))
    worst, differing, total = 0, 0, 0
    for name in names:
        a = np.load(os.path.join(baseline, name)).astype(np.int16)
        b = np.load(os.path.join(other, name)).astype(np.int16)
        diff = np.abs(a - b)
        worst, differing, total = max(worst, int(diff.max())), differing + int((diff > 0).sum()), total + diff.size
    return {"frames": len(names), "max_abs_diff": worst, "share_differing": differing / total}


def _change(value: Optional[int], base: Optional[int]) -> str:
    return "%+.1f%%" % (100.0 * (value - base) / base) if base and value is not None else "-"


def table(rows: List[Dict[str, Any]]) -> List[str]:
    """Peak RSS per mode with its change from the baseline, FPS, and the RSS before frame 1."""
    lines = ["| resolution | frames | baseline peak MB | optimized peak MB (change) | low_memory peak MB (change) "
             "| one frame (floor) MB (change) | FPS base / opt / low | RSS before frame 1 MB "
             "| pixels vs baseline: max diff opt / low (share differing) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        base = row["baseline"]["peak_rss"]
        cells = ["%.1f (%s)" % (row[m]["peak_rss"] / MB, _change(row[m]["peak_rss"], base)) for m in MODES[1:] + (FLOOR,)]
        fps = " / ".join("%.1f" % row[m]["fps"] for m in MODES)
        ready = " / ".join("%.0f" % (row[m]["rss_ready"] / MB) if row[m]["rss_ready"] else "-" for m in MODES)
        pixels = " / ".join("%d (%.2f%%)" % (row[m]["pixels"]["max_abs_diff"], 100 * row[m]["pixels"]["share_differing"])
                            for m in MODES[1:])
        lines.append("| %dx%d | %d | %.1f | %s | %s | %s | %s | %s | %s |" % (
            row["width"], row["height"], row["frames"], base / MB, cells[0], cells[1], cells[2], fps, ready, pixels))
    return lines


def split_table(rows: List[Dict[str, Any]]) -> List[str]:
    """Each peak's two parts, sampled: anonymous (the process's own allocations) and file-backed
    (library code and memory-mapped weights), with the anonymous part's change from the baseline."""
    modes = MODES + (FLOOR,)
    lines = ["| resolution | anonymous peak MB: " + " / ".join(modes) + " (change) | file-backed peak MB: "
             + " / ".join(modes) + " |", "|---|---:|---:|"]
    for row in rows:
        if row["baseline"].get("peak_anon") is None:
            return []  # no split on this system
        base = row["baseline"]["peak_anon"]
        anon = " / ".join("%.0f" % (row[m]["peak_anon"] / MB) for m in modes)
        change = " / ".join(_change(row[m]["peak_anon"], base) for m in modes[1:])
        files = " / ".join("%.0f" % (row[m]["peak_file"] / MB) for m in modes)
        lines.append("| %dx%d | %s (%s) | %s |" % (row["width"], row["height"], anon, change, files))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == _CHILD_FLAG:
        width, height = _parse_resolution(argv[2])
        return _child(argv[1], width, height, int(argv[3]), float(argv[4]), argv[5])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 frames, 1 repeat")
    parser.add_argument("--frames", type=int, help="frames per run (default 1000; 100 with --quick)")
    parser.add_argument("--repeats", type=int, help="fresh processes per cell (default 3; 1 with --quick)")
    parser.add_argument("--resolutions", nargs="+", type=_parse_resolution, default=list(RESOLUTIONS))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    parser.add_argument("--dfm-weights-mb", type=float, default=0.0, metavar="MB",
                        help="give the DFM stand-in this many MB of weights read every run, like a real DFM's "
                             "(default 0: its own 0.3 MB)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    frames = args.frames or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    info = print_header("footprint: peak RSS, baseline vs optimized"
                        + (", DFM stand-in with %g MB of weights" % args.dfm_weights_mb if args.dfm_weights_mb else ""))
    from dfl_perf.facepipe.workload import Workload

    # made here, before any measured child: building a big stand-in costs far more than loading it
    Workload(dfm_weights_mb=args.dfm_weights_mb).dfm_path()
    rows = []
    try:
        for width, height in args.resolutions:
            row: Dict[str, Any] = {"width": width, "height": height, "frames": frames}
            samples_root = tempfile.mkdtemp(prefix="dfl_perf_footprint_")
            for mode in MODES:  # interleaving per resolution keeps both modes under the same machine load
                folder = os.path.join(samples_root, mode)
                os.mkdir(folder)
                runs = [measure_once(mode, width, height, frames, args.timeout, args.dfm_weights_mb,
                                     folder if i == 0 else "") for i in range(repeats)]
                row[mode] = _cell(runs)
            floor = [measure_once(FLOOR, width, height, 1, args.timeout, args.dfm_weights_mb) for _ in range(repeats)]
            row[FLOOR] = _cell(floor)
            a = row["baseline"]["runs"][0]["workload"]["output_means"]
            row["max_mean_diff"] = 0.0
            for mode in MODES[1:]:
                b = row[mode]["runs"][0]["workload"]["output_means"]
                if len(a) != len(b):
                    raise RuntimeError("%s processed %d frames, baseline %d" % (mode, len(b), len(a)))
                row["max_mean_diff"] = max([row["max_mean_diff"]] + [abs(x - y) for x, y in zip(a, b)])
                row[mode]["pixels"] = compare_samples(os.path.join(samples_root, "baseline"),
                                                      os.path.join(samples_root, mode))
            shutil.rmtree(samples_root)
            for mode in MODES + (FLOOR,):
                for run in row[mode]["runs"]:
                    run["workload"].pop("output_means")
            rows.append(row)
    except NotImplementedError as exc:
        print("not ready: %s" % exc)
        return 2
    print("\n".join(table(rows)))
    split = split_table(rows)
    if split:
        print("peaks by part (sampled every 2 ms: lower bounds; a file-backed part also depends on the page cache):")
        print("\n".join(split))
    write_json(args.json, {"machine": info, "frames": frames, "repeats": repeats, "dfm_weights_mb": args.dfm_weights_mb,
                           "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
