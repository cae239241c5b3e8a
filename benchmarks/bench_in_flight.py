"""Throughput of the optimized runner against its bound on frames in flight (files mode).

``OptimizedRunner(max_in_flight=N)`` lets at most N frames sit between the source and the sink;
the default is swap workers + 3 (5 on two cores), ``low_memory=True`` uses one swap worker and 3.
This runs the reference workload (YuNet -> align -> DFM stand-in (20 ms) -> merge) on the same
pre-rendered 640x480 frames with each bound in turn, alternating the bounds in every repeat so
they share the machine's load, and prints the median FPS per bound and its ratio to no bound
(``none``: what the runner did before the bound existed).

    python benchmarks/bench_in_flight.py [--frames 300] [--repeats 3] [--bounds 3 4 5 8 none]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

UNBOUNDED = 10 ** 6


def _bound(text: str) -> int:
    return UNBOUNDED if text == "none" else int(text)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bounds", nargs="+", type=_bound, default=[3, 4, 5, 8, UNBOUNDED])
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    info = print_header("optimized runner: FPS by max_in_flight (640x480, files mode)")

    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload

    clip = make_clip(size=(640, 480), frames=PATH_PERIOD).to_list()
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    fps: Dict[int, List[float]] = {b: [] for b in args.bounds}
    with OptimizedRunner(Workload()) as warm:  # builds the stand-in and warms the file cache
        warm.run(frames[:20])
    for _ in range(args.repeats):
        for bound in args.bounds:
            with OptimizedRunner(Workload(), max_in_flight=bound) as runner:
                runner.run(frames[:10])
                fps[bound].append(runner.run(frames).fps)
    free = median(fps[UNBOUNDED]) if UNBOUNDED in fps else None
    print("| max_in_flight | FPS (median of %d) | vs none |" % args.repeats)
    print("|---|---:|---:|")
    for bound in args.bounds:
        value = median(fps[bound])
        print("| %s | %.1f | %s |" % ("none" if bound == UNBOUNDED else bound, value,
                                      "%.2fx" % (value / free) if free else "-"))
    write_json(args.json, {"machine": info, "frames": args.frames,
                           "fps": {("none" if b == UNBOUNDED else str(b)): v for b, v in fps.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
