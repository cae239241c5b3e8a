"""``dfl-perf run --ray`` against a local ``dfl-perf run``, and 1 against 2 simulated Ray nodes.

The reference workload (YuNet -> align -> DFM stand-in (20 ms) -> merge) on one generated 640x480
MJPG video, written to .avi both ways:

1. local: ``dfl-perf run`` (``run_headless``: the optimized runner on every core) against
   ``--ray`` on a local Ray it starts (one worker per core). Throughput is frames over the job's
   processing time; Ray's start-up (``ray.init`` + workers loading their sessions) is reported on
   its own. Modes alternate in every repeat; medians are printed.
2. scaling: one simulated cluster of two nodes with 1 CPU each (``ray.cluster_utils.Cluster``), jobs
   with 1 worker (one node busy) and 2 workers (both), alternating.
3. the figures a larger cluster's estimate needs: each range's time in its worker (per frame) and
   the driver's CPU per frame (scheduling, polling, joining segments), from the 2-worker runs.

    python benchmarks/bench_ray_batch.py [--frames 180] [--repeats 5] [--range-frames 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

SIZE = (640, 480)
STORE_MB = 200


def _make_inputs(folder: Path, frames: int) -> Dict[str, str]:
    import cv2

    from dfl_perf.facepipe.clip import make_clip
    from dfl_perf.facepipe.workload import standin_model_path

    video = folder / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30, SIZE)
    clip = make_clip(size=SIZE, frames=frames)
    for i in range(frames):
        writer.write(clip[i])
    writer.release()
    return {"video": str(video), "model": str(standin_model_path(cost="20ms"))}


def _local(inputs: Dict[str, str], out: Path) -> Dict[str, float]:
    from dfl_perf.headless import HeadlessOptions, run_headless

    t0 = time.perf_counter()
    summary = run_headless(HeadlessOptions(model=inputs["model"], source=inputs["video"], output=str(out),
                                           progress=False))
    seconds = time.perf_counter() - t0
    return {"frames": summary["frames"], "seconds": seconds, "fps": summary["frames"] / seconds}


def _ray(inputs: Dict[str, str], out: Path, range_frames: int, **kw: Any) -> Dict[str, Any]:
    from dfl_perf.cluster.command import RayRunOptions, run_on_ray

    t0 = time.perf_counter()
    summary = run_on_ray(RayRunOptions(model=inputs["model"], sources=[inputs["video"]], output=str(out),
                                       range_frames=range_frames, progress=False, **kw))
    summary["total_seconds"] = time.perf_counter() - t0
    return summary


def _per_frame(runs: List[Dict[str, Any]], range_frames: int) -> float:
    """Median worker seconds per frame over every full range of ``runs``."""
    return median(s / range_frames for run in runs for s in run["range_seconds"][:-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=180)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--range-frames", type=int, default=30)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    info = print_header("run --ray vs a local run; 1 vs 2 simulated nodes (%dx%d, %d frames, ranges of %d)"
                        % (SIZE[0], SIZE[1], args.frames, args.range_frames))
    import ray

    print("ray %s" % ray.__version__)
    work = Path(tempfile.mkdtemp(prefix="bench_ray_"))
    ray_tmp = None
    if "RAY_TMPDIR" not in os.environ:  # a private one: never another Ray's address file
        ray_tmp = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="bray", dir="/tmp")
    try:
        inputs = _make_inputs(work, args.frames)
        local_runs, ray_runs = [], []
        for r in range(args.repeats):
            local_runs.append(_local(inputs, work / "local.avi"))
            ray_runs.append(_ray(inputs, work / "ray.avi", args.range_frames, local_cpus=os.cpu_count(),
                                 object_store_mb=STORE_MB))
            print("repeat %d: local %.2f FPS | --ray %.2f FPS (processing), start-up %.1f s"
                  % (r + 1, local_runs[-1]["fps"], ray_runs[-1]["fps"], ray_runs[-1]["startup_seconds"]))
        same = _max_difference(work / "local.avi", work / "ray.avi")
        local_fps, ray_fps = median(x["fps"] for x in local_runs), median(x["fps"] for x in ray_runs)
        startup = median(x["startup_seconds"] for x in ray_runs)
        overheads = sorted(a["fps"] / b["fps"] - 1 for a, b in zip(local_runs, ray_runs))
        print("\nlocal dfl-perf run   %6.2f FPS (median; range %.1f-%.1f)"
              % (local_fps, min(x["fps"] for x in local_runs), max(x["fps"] for x in local_runs)))
        print("--ray (local Ray)    %6.2f FPS (median; range %.1f-%.1f); Ray start-up %.1f s (median)"
              % (ray_fps, min(x["fps"] for x in ray_runs), max(x["fps"] for x in ray_runs), startup))
        print("overhead of --ray once Ray is up: %+.1f%% (median of the repeats' local/ray ratios; range %+.1f%% to "
              "%+.1f%%; target <= 20%%)" % (100 * median(overheads), 100 * overheads[0], 100 * overheads[-1]))
        segment_bytes = (work / "ray.avi").stat().st_size / max(1, local_runs[-1]["frames"])
        print("outputs: %d frames each, max pixel difference %d; %.1f kB per frame reach the driver (MJPG)"
              % (local_runs[-1]["frames"], same, segment_bytes / 1000))

        io = _decode_encode_per_frame(inputs, args.range_frames)
        print("decode + encode alone (no swap), one range in one process: %.1f ms per frame" % (1000 * io))
        scaling = _scaling(inputs, work, args)
        result = {"machine": info, "frames": args.frames, "range_frames": args.range_frames,
                  "local": local_runs, "ray_local": [_slim(x) for x in ray_runs],
                  "local_fps": local_fps, "ray_fps": ray_fps, "overhead": median(overheads), "overheads": overheads,
                  "startup_seconds": startup, "max_pixel_difference": same, "segment_bytes_per_frame": segment_bytes,
                  "decode_encode_seconds_per_frame": io,
                  **scaling}
        write_json(args.json, result)
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)
    return 0


def _scaling(inputs: Dict[str, str], work: Path, args: argparse.Namespace) -> Dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE_MB << 20,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=STORE_MB << 20)
    cluster.wait_for_nodes()
    runs: Dict[int, List[Dict[str, Any]]] = {1: [], 2: []}
    try:
        for r in range(args.repeats):
            for workers in (1, 2):
                runs[workers].append(_ray(inputs, work / "scale.avi", args.range_frames, address=cluster.address,
                                          workers=workers))
            print("repeat %d: 1 node %.2f FPS | 2 nodes %.2f FPS (%d nodes used)"
                  % (r + 1, runs[1][-1]["fps"], runs[2][-1]["fps"], runs[2][-1]["nodes"]))
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    one, two = median(x["fps"] for x in runs[1]), median(x["fps"] for x in runs[2])
    speedups = sorted(b["fps"] / a["fps"] for a, b in zip(runs[1], runs[2]))
    per_frame = _per_frame(runs[2], args.range_frames)
    per_frame_one = _per_frame(runs[1], args.range_frames)
    driver = median(x["driver_cpu_seconds"] / x["frames"] for x in runs[2])
    share = median(x["driver_cpu_seconds"] / x["seconds"] for x in runs[2])
    print("\nsimulated nodes: 1 node %.2f FPS, 2 nodes %.2f FPS (medians); 2 vs 1: %.2fx (median of the repeats' "
          "ratios; range %.2f-%.2fx)" % (one, two, median(speedups), speedups[0], speedups[-1]))
    print("worker time per frame (median over full ranges): %.1f ms with 2 workers, %.1f ms with 1"
          % (1000 * per_frame, 1000 * per_frame_one))
    print("driver: %.2f ms CPU per frame (%.1f%% of one core during the job): it alone would cap a job at %.0f FPS"
          % (1000 * driver, 100 * share, 1 / driver))
    return {"scaling": {"one_node_fps": one, "two_node_fps": two, "speedup": median(speedups), "speedups": speedups,
                        "one": [_slim(x) for x in runs[1]], "two": [_slim(x) for x in runs[2]]},
            "worker_seconds_per_frame": per_frame, "worker_seconds_per_frame_alone": per_frame_one,
            "driver_cpu_per_frame": driver, "driver_core_share": share}


def _decode_encode_per_frame(inputs: Dict[str, str], range_frames: int) -> float:
    """A worker's floor whatever the device: one range decoded and encoded with no swap (median of 3)."""
    import cv2

    from dfl_perf.cluster.plan import FrameRange
    from dfl_perf.cluster.worker import encode_range

    size = (int(SIZE[0]), int(SIZE[1]))
    cv2.setNumThreads(1)  # as in a worker
    try:
        times = [encode_range(FrameRange(0, 0, inputs["video"], 0, range_frames, False), 30.0, size, ".avi",
                              lambda frame: frame).seconds / range_frames for _ in range(3)]
    finally:
        cv2.setNumThreads(-1)
    return median(times)


def _slim(summary: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("frames", "seconds", "fps", "startup_seconds", "total_seconds", "range_seconds", "driver_cpu_seconds",
            "nodes", "ranges")
    return {k: summary[k] for k in keep if k in summary}


def _max_difference(a: Path, b: Path) -> int:
    import cv2
    import numpy as np

    ca, cb = cv2.VideoCapture(str(a)), cv2.VideoCapture(str(b))
    worst = 0
    while True:
        ok_a, fa = ca.read()
        ok_b, fb = cb.read()
        if ok_a != ok_b:
            return 255  # counts differ
        if not ok_a:
            break
        worst = max(worst, int(np.abs(fa.astype(np.int16) - fb.astype(np.int16)).max()))
    return worst


if __name__ == "__main__":
    sys.exit(main())
