"""The optimized runner's workers per stage: planned from measured costs vs the fixed rule it replaced.

``OptimizedRunner`` measures detect, swap and merge on its first frame and sizes each stage with
``dfl_perf.processor.plan_workers``. Before, the rule was fixed: one detect worker, one swap worker
per core, one merge worker. This runs two workloads on the same pre-rendered 640x480 frames (files
mode), planned and fixed in turn in every repeat so that they share the machine's load, and prints
the median FPS of each and the workers each used:

- reference: YuNet-n 320 and the 20 ms DFM stand-in (the swap is the costly step: both rules agree);
- detect-heavy: YuNet-s 640 and the 5 ms stand-in (detection is the costly step: one detect worker
  holds the pipeline back, the plan gives it two).

    python benchmarks/bench_plan.py [--frames 300] [--repeats 5] [--json PATH]

YuNet-s comes from the model registry (set ``DFL_PERF_MODEL_MIRROR`` offline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

WORKLOADS = {
    "reference": {"detector": "yunet_n_320_320", "dfm_cost": "20ms"},
    "detect-heavy": {"detector": "yunet_s_640_640", "dfm_cost": "5ms"},
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    info = print_header("optimized runner: workers planned from measured costs vs the fixed rule (640x480, files)")

    from dfl_perf.devices import cpu_budget
    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload, swap_workers_for

    clip = make_clip(size=(640, 480), frames=PATH_PERIOD).to_list()
    frames = [clip[i % len(clip)] for i in range(args.frames)]
    fixed_swap = swap_workers_for("CPUExecutionProvider", cpu_budget())
    results: Dict[str, Any] = {}
    print("| workload | rule | workers (detect / swap / merge) | FPS (median of %d) | planned vs fixed |" % args.repeats)
    print("|---|---|---|---:|---:|")
    for name in args.workloads:
        workload = Workload(**WORKLOADS[name])
        with OptimizedRunner(workload) as warm:  # builds the stand-in, warms the file cache
            warm.run(frames[:20])
        fps: Dict[str, List[float]] = {"planned": [], "fixed": []}
        workers: Dict[str, Dict[str, int]] = {}
        for _ in range(args.repeats):
            for rule in ("planned", "fixed"):
                with OptimizedRunner(workload, swap_workers=None if rule == "planned" else fixed_swap) as runner:
                    runner.run(frames[:10])  # the plan is measured here, outside the timed run
                    fps[rule].append(runner.run(frames).fps)
                    workers[rule] = runner.workers
        ratio = median(fps["planned"]) / median(fps["fixed"])
        for rule in ("planned", "fixed"):
            w = workers[rule]
            print("| %s | %s | %d / %d / %d | %.1f | %s |" % (name, rule, w["detect"], w["swap"], w["merge"],
                                                            median(fps[rule]), "%.2fx" % ratio if rule == "planned" else ""))
        results[name] = {"fps": fps, "workers": workers, "ratio": ratio}
    write_json(args.json, {"machine": info, "frames": args.frames, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
