"""onnxruntime's memory pattern on vs off for the optimized runner on a CPU: FPS and peak RSS.

dfl_perf turns the pattern off on a CPU (``OptimizedRunner(mem_pattern=None)``); this checks that
choice side by side. Each run is a fresh process running the reference workload (YuNet -> align ->
DFM stand-in (20 ms) -> merge) on the generated clip, frames rendered one at a time, with
``mem_pattern=True`` or ``False``; the two settings alternate in every repeat so they share the
machine's load. Prints the median FPS and peak RSS (the child's ``VmHWM``) per setting.

    python benchmarks/bench_mem_pattern.py [--frames 600] [--repeats 6] [--resolution 640x480] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

_CHILD_FLAG = "--child"
MB = 1e6


def _child(pattern: bool, width: int, height: int, frames: int) -> Dict[str, Any]:
    from dfl_perf.benchmark.measure import peak_rss_bytes
    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload

    clip = make_clip(size=(width, height), frames=PATH_PERIOD)
    source = (clip.render(i % PATH_PERIOD) for i in range(frames))
    with OptimizedRunner(Workload(), provider="cpu", mem_pattern=pattern) as runner:
        fps = runner.run(source).fps
    return {"pattern": pattern, "fps": fps, "peak_rss": peak_rss_bytes()}


def measure(pattern: bool, width: int, height: int, frames: int) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), _CHILD_FLAG, "on" if pattern else "off",
           str(width), str(height), str(frames)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("child (pattern %s) failed (exit %d):\n%s" % (pattern, proc.returncode,
                                                                        proc.stderr[-3000:])) from None


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == _CHILD_FLAG:
        print(json.dumps(_child(argv[1] == "on", int(argv[2]), int(argv[3]), int(argv[4]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--resolution", default="640x480")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.resolution.lower().split("x"))
    except ValueError:
        parser.error("--resolution must look like 640x480, got %r" % args.resolution)
    if args.repeats < 1 or args.frames < 1:
        parser.error("--repeats and --frames must be at least 1")
    info = print_header("optimized runner: onnxruntime's memory pattern on vs off (CPU, %dx%d)" % (width, height))
    from dfl_perf.facepipe.workload import Workload

    Workload().dfm_path()  # the stand-in is built here, not inside a measured child
    runs: Dict[bool, List[Dict[str, Any]]] = {True: [], False: []}
    for _ in range(args.repeats):
        for pattern in (True, False):
            runs[pattern].append(measure(pattern, width, height, args.frames))
    print("| memory pattern | FPS (median of %d) | FPS runs | peak RSS MB (median) |" % args.repeats)
    print("|---|---:|---|---:|")
    for pattern in (True, False):
        fps = [r["fps"] for r in runs[pattern]]
        print("| %s | %.1f | %s | %.1f |" % ("on" if pattern else "off", median(fps), " ".join("%.1f" % f for f in fps),
                                           median(r["peak_rss"] for r in runs[pattern]) / MB))
    write_json(args.json, {"machine": info, "frames": args.frames, "resolution": args.resolution,
                           "runs": {"on": runs[True], "off": runs[False]}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
