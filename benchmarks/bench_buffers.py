"""DFL's DFM step the plain way vs through dfl_perf.buffers (DFMRunner: BoundSession + pools).

On the DFM-shaped stand-in (dfl_perf.facepipe.standin) at 224 and 320:
- plain  : DeepFaceLive's way: uint8 face -> astype(float32), /= 255 -> session.run -> fresh outputs;
- pooled : DFMRunner: the face scaled straight into a pooled float32 input bound with IOBinding,
           outputs written by onnxruntime into pooled arrays.
Each (resolution, mode) runs in its own subprocess (clean peak RSS), on the same faces and the
same session options. Per frame: time (median), bytes allocated on the Python side (tracemalloc
peak over the frame, traces cleared before it: the most memory the frame held at once beyond what
it started with, a lower bound on what it allocated; numpy reports its arrays to tracemalloc) and
how many frames held more than 64 KB. Time per frame is also measured with both modes alternating
frame by frame in one more process (what the table's ms/frame shows: on a shared machine, load
drifts between separate processes). Medians over --repeats runs.

    python benchmarks/bench_buffers.py [--frames 1000] [--repeats 3] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any, Dict, List

from _common import REPO, median, print_header, write_json

from dfl_perf.benchmark.measure import peak_rss_bytes

LIMIT_64K = 64 * 1024
MODES = ("plain", "pooled")


# ----------------------------------------------------------------------------- worker (one mode)
def _session(res: int, cost: str, threads: int) -> Any:
    import onnxruntime as ort

    from dfl_perf.facepipe.standin import build_dfm_standin

    model = build_dfm_standin(resolution=res, cost=cost, seed=0)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def _frame_fn(mode: str, session: Any, faces: List[Any]):
    import numpy as np

    held = [None]  # the previous frame's outputs stay referenced until the next frame, as in DFL

    if mode == "plain":
        name = session.get_inputs()[0].name

        def frame(i: int) -> None:
            x = faces[i % len(faces)].astype(np.float32)
            x /= 255.0
            held[0] = session.run(None, {name: x[None]})
        return frame, None

    from dfl_perf.buffers import DFMRunner

    runner = DFMRunner(session)

    def frame(i: int) -> None:
        held[0] = runner.run(faces[i % len(faces)])
    return frame, runner


def worker(mode: str, res: int, frames: int, cost: str, threads: int, traced_frames: int) -> Dict[str, Any]:
    import gc
    import tracemalloc

    import numpy as np

    session = _session(res, cost, threads)
    rng = np.random.RandomState(1)
    faces = [rng.randint(0, 256, (res, res, 3)).astype(np.uint8) for _ in range(8)]
    frame, runner = _frame_fn(mode, session, faces)
    for i in range(20):
        frame(i)
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        frame(i)
        times.append(time.perf_counter() - t0)
    rss = peak_rss_bytes()  # before tracemalloc, whose own bookkeeping would add to it
    gc.collect()
    tracemalloc.start()
    peaks = []
    for i in range(traced_frames):
        tracemalloc.clear_traces()
        frame(i)
        peaks.append(tracemalloc.get_traced_memory()[1])
    tracemalloc.stop()
    out = {
        "mode": mode, "res": res, "frames": frames, "traced_frames": traced_frames,
        "ms_median": median(times) * 1000, "ms_mean": sum(times) / len(times) * 1000,
        "alloc_median": median(peaks), "alloc_max": max(peaks),
        "frames_over_64k": sum(1 for p in peaks if p > LIMIT_64K), "peak_rss": rss,
    }
    if runner is not None:
        out["pool"] = runner.bound.host_pool.stats()
        out["bound"] = runner.bound.stats()
        runner.close()
    return out


def worker_interleaved(res: int, frames: int, cost: str, threads: int) -> Dict[str, Any]:
    """Both modes in one process on one session, frames alternating (ABBA): timing robust to load drift."""
    import numpy as np

    session = _session(res, cost, threads)
    rng = np.random.RandomState(1)
    faces = [rng.randint(0, 256, (res, res, 3)).astype(np.uint8) for _ in range(8)]
    fns = {mode: _frame_fn(mode, session, faces) for mode in MODES}
    for i in range(20):
        for mode in MODES:
            fns[mode][0](i)
    times: Dict[str, List[float]] = {mode: [] for mode in MODES}
    for i in range(frames):
        for mode in (MODES if i % 2 == 0 else MODES[::-1]):
            t0 = time.perf_counter()
            fns[mode][0](i)
            times[mode].append(time.perf_counter() - t0)
    fns["pooled"][1].close()
    ratios = [b / a for a, b in zip(times["plain"], times["pooled"])]
    return {"res": res, "frames": frames, "ms_plain": median(times["plain"]) * 1000,
            "ms_pooled": median(times["pooled"]) * 1000, "paired_ratio": median(ratios)}


# ----------------------------------------------------------------------------- parent
def _run_worker(args: argparse.Namespace, mode: str, res: int) -> Dict[str, Any]:
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_buffers.py"), "--worker", mode, "--res", str(res),
           "--frames", str(args.frames), "--cost", args.cost, "--threads", str(args.threads),
           "--traced-frames", str(args.traced_frames)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
    if done.returncode != 0:
        raise SystemExit("worker %s/%d failed:\n%s" % (mode, res, done.stderr[-3000:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    keys = ("ms_median", "ms_mean", "alloc_median", "alloc_max", "frames_over_64k", "peak_rss")
    return {k: median(r[k] for r in runs) for k in keys}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 320])
    parser.add_argument("--cost", default="20ms", help="stand-in cost preset (5ms, 20ms, 60ms)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both modes (default 1)")
    parser.add_argument("--traced-frames", type=int, default=200, help="frames measured under tracemalloc")
    parser.add_argument("--quick", action="store_true", help="100 frames, 1 repeat")
    parser.add_argument("--json")
    parser.add_argument("--worker", choices=MODES + ("interleaved",), help=argparse.SUPPRESS)
    parser.add_argument("--res", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "interleaved":
        print(json.dumps(worker_interleaved(args.res, args.frames, args.cost, args.threads)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.res, args.frames, args.cost, args.threads,
                                min(args.traced_frames, args.frames))))
        return 0
    if args.quick:
        args.frames, args.repeats = 100, 1
    args.traced_frames = min(args.traced_frames, args.frames)
    info = print_header("buffers: DFM step, DFL's way vs DFMRunner")
    print("stand-in cost %s, intra-op threads %d, %d frames (%d under tracemalloc) x %d repeats, one subprocess "
          "per mode" % (args.cost, args.threads, args.frames, args.traced_frames, args.repeats))
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for res in args.resolutions:
            order = MODES if rep % 2 == 0 else MODES[::-1]
            for mode in order:
                runs.setdefault("%s/%d" % (mode, res), []).append(_run_worker(args, mode, res))
            runs.setdefault("interleaved/%d" % res, []).append(_run_worker(args, "interleaved", res))
    summary = {key: _summarise(value) for key, value in runs.items() if not key.startswith("interleaved")}
    for res in args.resolutions:
        inter = runs["interleaved/%d" % res]
        summary["interleaved/%d" % res] = {k: median(r[k] for r in inter)
                                           for k in ("ms_plain", "ms_pooled", "paired_ratio")}
    print("\n%-5s %-7s %12s %12s %16s %14s %12s %10s" % (
        "res", "mode", "ms/frame", "ms (alone)", "alloc/frame (B)", "max alloc (B)", "frames>64KB", "peak RSS"))
    verdicts = {}
    for res in args.resolutions:
        inter = summary["interleaved/%d" % res]
        for mode in MODES:
            s = summary["%s/%d" % (mode, res)]
            print("%-5d %-7s %12.2f %12.2f %16.0f %14.0f %12.0f %8.1f MB" % (
                res, mode, inter["ms_" + mode], s["ms_median"], s["alloc_median"], s["alloc_max"],
                s["frames_over_64k"], s["peak_rss"] / 2 ** 20))
        plain, pooled = summary["plain/%d" % res], summary["pooled/%d" % res]
        fewer = 1 - pooled["alloc_median"] / plain["alloc_median"] if plain["alloc_median"] else 0.0
        verdicts[res] = {"alloc_reduction": fewer, "time_change": inter["paired_ratio"] - 1,
                         "rss_change_mb": (pooled["peak_rss"] - plain["peak_rss"]) / 2 ** 20,
                         "no_frame_over_64k": pooled["alloc_max"] <= LIMIT_64K}
        print("      -> %.1f%% fewer bytes per frame (target >= 90%%), largest pooled frame %s 64 KB, "
              "time %+.1f%% (paired), peak RSS %+.1f MB" % (
                  100 * fewer, "<=" if verdicts[res]["no_frame_over_64k"] else ">", 100 * verdicts[res]["time_change"],
                  verdicts[res]["rss_change_mb"]))
    print("ms/frame: both modes alternating frame by frame in one process (robust to load on a shared machine);\n"
          "ms (alone), alloc, RSS: each mode in its own process. alloc/frame: tracemalloc peak over the frame.")
    write_json(args.json, {"machine": info, "args": {k: v for k, v in vars(args).items() if k not in ("worker", "res")},
                           "runs": runs, "summary": summary, "verdicts": verdicts})
    return 0


if __name__ == "__main__":
    sys.exit(main())
