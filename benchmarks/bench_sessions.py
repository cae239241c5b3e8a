"""dfl_perf.sessions benchmarks.

(a) pipeline: three sessions busy at once, as in DeepFaceLive's live pipeline: a detector (YuNet-n
    320), a landmarker (FaceMesh 192) and a DFM-shaped swap model (stand-in, about 20 ms a face)
    each run on every frame in its own stage, stages linked by bounded queues (2 items). Stages are
    threads, or processes started with spawn (what DFL really does). Aggregate frames/s through the
    whole pipeline, same frames for every configuration, median of --repeats runs:
      dfl          SessionConfig.dfl_default() for each session (what InferenceSession_with_device builds)
      for_pipeline SessionConfig.for_pipeline(3, costs=<measured single-thread ms of each model>)
      for_pipeline_nocost  SessionConfig.for_pipeline(3) (no costs: the budget split evenly)
(b) create: creation time of a DFM-shaped model of realistic size (--pad-mb, default 60 MB) and of
    the real FaceMesh model (small file, many nodes), each case in a fresh process: cold (dfl config;
    tuned config, disk cache off), first start with the disk cache on (builds and stores),
    disk-cached start (fresh process, cache filled; includes the sha256 check of the cached file)
    with the cached graph loaded at each optimisation level, and an in-process ModelCache hit.
(c) flight: 8 threads ask one ModelCache for the same model at once: loads counted; compared with 8
    threads each calling create_session.

    python benchmarks/bench_sessions.py [--quick] [--only pipeline,create,flight] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from _common import REPO, median, print_header, write_json

SHARED = Path(os.environ.get("DFL_PERF_SHARED", str(REPO.parent / "shared")))
DETECTOR = "yunet_n_320_320.onnx"
MARKER = "facemesh_468.onnx"
QUEUE_SIZE = 2


# ------------------------------------------------------------------------------------ (a) pipeline

def _feeds(session: Any, seed: int) -> Dict[str, Any]:
    import numpy as np

    from dfl_perf.sessions.warmup import zero_inputs

    rng = np.random.RandomState(seed)
    return {name: rng.rand(*a.shape).astype(a.dtype) for name, a in zero_inputs(session).items()}


def _open_stage(model: str, config: Any, seed: int):
    from dfl_perf.sessions import create_session

    session = create_session(model, config)
    feeds = _feeds(session, seed)
    for _ in range(3):
        session.run(None, feeds)
    return session, feeds


def _stage_loop(session: Any, feeds: Dict[str, Any], inbox: Any, outbox: Any) -> None:
    while True:
        item = inbox.get()
        if item is not None:
            session.run(None, feeds)
        outbox.put(item)
        if item is None:
            return


def _drive(first: Any, last: Any, frames: int) -> float:
    """Push ``frames`` frames (blocking on the bounded queue), wait for all of them; frames/s."""
    started = time.perf_counter()
    feeder = threading.Thread(target=lambda: [first.put(i) for i in list(range(frames)) + [None]])
    feeder.start()
    done = 0
    while last.get() is not None:
        done += 1
    elapsed = time.perf_counter() - started
    feeder.join()
    assert done == frames
    return frames / elapsed


def pipeline_threads(models: Sequence[str], configs: Sequence[Any], frames: int) -> float:
    stages = [_open_stage(m, c, i) for i, (m, c) in enumerate(zip(models, configs))]
    boxes = [queue.Queue(QUEUE_SIZE) for _ in models] + [queue.Queue()]
    workers = [threading.Thread(target=_stage_loop, args=(s, f, boxes[i], boxes[i + 1]))
               for i, (s, f) in enumerate(stages)]
    for w in workers:
        w.start()
    try:
        return _drive(boxes[0], boxes[-1], frames)
    finally:
        for w in workers:
            w.join()


def _process_stage(model: str, config: Any, seed: int, inbox: Any, outbox: Any, ready: Any) -> None:
    session, feeds = _open_stage(model, config, seed)
    ready.put(seed)
    _stage_loop(session, feeds, inbox, outbox)


def pipeline_processes(models: Sequence[str], configs: Sequence[Any], frames: int) -> float:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    boxes = [ctx.Queue(QUEUE_SIZE) for _ in models] + [ctx.Queue()]
    ready = ctx.Queue()
    procs = [ctx.Process(target=_process_stage, args=(m, c, i, boxes[i], boxes[i + 1], ready), daemon=True)
             for i, (m, c) in enumerate(zip(models, configs))]
    for p in procs:
        p.start()
    try:
        waiting, deadline = len(procs), time.monotonic() + 300
        while waiting:
            try:
                ready.get(timeout=0.5)
                waiting -= 1
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError("a stage process did not start (exit codes %s)" % dead) from None
        return _drive(boxes[0], boxes[-1], frames)
    finally:
        for p in procs:
            p.join(timeout=60)


def single_thread_ms(model: str, runs: int = 15) -> float:
    from dfl_perf.sessions import SessionConfig

    session, feeds = _open_stage(model, SessionConfig.tuned(threads=1), 0)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def bench_pipeline(args, workdir: Path) -> Optional[Dict[str, Any]]:
    from dfl_perf.devices import cpu_budget
    from dfl_perf.facepipe.standin import save_dfm_standin
    from dfl_perf.sessions import SessionConfig

    if not (SHARED / "models" / DETECTOR).is_file():
        print("(a) skipped: shared models not found under %s (set DFL_PERF_SHARED)" % SHARED)
        return None
    swap = save_dfm_standin(workdir / "swap_20ms.onnx", cost="20ms")
    models = [str(SHARED / "models" / DETECTOR), str(SHARED / "models" / MARKER), swap]
    costs = [single_thread_ms(m) for m in models]
    variants = {
        "dfl": [SessionConfig.dfl_default()] * 3,
        "for_pipeline": SessionConfig.for_pipeline(3, costs=costs),
        "for_pipeline_nocost": SessionConfig.for_pipeline(3),
    }
    print("\n(a) pipeline: detector %s, marker %s, swap stand-in; %d frames, median of %d runs, cpu_budget %d"
          % (DETECTOR, MARKER, args.frames, args.repeats, cpu_budget()))
    print("    single-thread ms per frame: detector %.1f, marker %.1f, swap %.1f -> for_pipeline threads %s"
          % (costs[0], costs[1], costs[2], [c.intra_op_threads for c in variants["for_pipeline"]]))
    runners = {"threads": pipeline_threads, "processes": pipeline_processes}
    result: Dict[str, Any] = {"costs_ms": costs, "frames": args.frames, "repeats": args.repeats,
                              "threads": {k: [c.intra_op_threads for c in v] for k, v in variants.items()}}
    for mode in args.modes:
        runs: Dict[str, List[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):  # interleaved, so that machine noise hits every variant alike
            for name, configs in variants.items():
                runs[name].append(runners[mode](models, configs, args.frames))
        fps = {name: median(v) for name, v in runs.items()}
        result[mode] = {"fps": fps, "runs": runs}
        print("    %-10s %-22s %9s %9s" % ("stages", "config", "frames/s", "vs dfl"))
        for name in variants:
            print("    %-10s %-22s %9.1f %8.2fx" % (mode, name, fps[name], fps[name] / fps["dfl"]))
    return result


# -------------------------------------------------------------------------------------- (b) create

_CREATE_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import onnxruntime  # imported before timing: every case pays it alike
from dfl_perf.sessions import SessionConfig, create_session_with_info
import dfl_perf.sessions.cached_create as dc
case, model = sys.argv[2], sys.argv[3]
if case.startswith("cached_"):
    dc.CACHED_LOAD_LEVEL = case[len("cached_"):]
config = SessionConfig.dfl_default() if case == "dfl" else SessionConfig.tuned()
if case != "dfl" and case != "cold":
    config = config.replace(disk_cache=True)
t0 = time.perf_counter()
info = create_session_with_info(model, config)
created = time.perf_counter() - t0
from dfl_perf.sessions import warmup_session
first = warmup_session(info.session, runs=1)[0]
print(json.dumps({"seconds": created, "first_run": first, "disk_cache": info.disk_cache}))
"""


def _child(case: str, model: str, cache_dir: str) -> Dict[str, Any]:
    env = dict(os.environ, DFL_PERF_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _CREATE_CHILD, str(REPO), case, model], env=env,
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError("child %s failed: %s" % (case, out.stderr[-2000:]))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _in_process_hit(model: str) -> float:
    from dfl_perf.sessions import ModelCache

    with ModelCache() as cache:
        cache.get(model)
        started = time.perf_counter()
        cache.get(model)
        return time.perf_counter() - started


_CASES = ("dfl", "cold", "store", "cached_disable", "cached_basic", "cached_all")
_LABELS = {"dfl": "cold, dfl_default config", "cold": "cold, tuned config (no disk cache)",
           "store": "first start, disk cache on (stores)", "cached_disable": "disk-cached, load level disable",
           "cached_basic": "disk-cached, load level basic", "cached_all": "disk-cached, load level all"}


def _create_cases(model: str, repeats: int, workdir: Path) -> Dict[str, Any]:
    import shutil

    runs: Dict[str, List[Dict[str, Any]]] = {c: [] for c in _CASES}
    for _ in range(repeats):
        cache_dir = tempfile.mkdtemp(prefix="bench_sessions_cache_", dir=str(workdir))
        for case in _CASES:  # 'store' fills the cache that the 'cached_*' cases then load
            runs[case].append(_child(case, model, cache_dir))
        shutil.rmtree(cache_dir, ignore_errors=True)
    hits = [_in_process_hit(model) for _ in range(max(3, repeats))]
    result: Dict[str, Any] = {}
    print("    %-38s %10s %12s %12s" % ("case", "create s", "first run s", "disk cache"))
    for case in _CASES:
        seconds = median(r["seconds"] for r in runs[case])
        first = median(r["first_run"] for r in runs[case])
        outcome = ",".join(sorted({r["disk_cache"] for r in runs[case]}))
        result[case] = {"seconds": seconds, "first_run": first, "disk_cache": outcome, "runs": runs[case]}
        print("    %-38s %10.3f %12.3f %12s" % (_LABELS[case], seconds, first, outcome))
    result["hit"] = {"seconds": median(hits)}
    print("    %-38s %10.6f" % ("ModelCache hit, same process", median(hits)))
    return result


def bench_create(args, workdir: Path) -> Dict[str, Any]:
    from dfl_perf.facepipe.standin import save_dfm_standin

    models = {"dfm_standin": save_dfm_standin(workdir / "dfm_big.onnx", cost="20ms", pad_mb=args.pad_mb)}
    if (SHARED / "models" / MARKER).is_file():
        models["facemesh"] = str(SHARED / "models" / MARKER)
    result: Dict[str, Any] = {}
    for name, model in models.items():
        size_mb = os.path.getsize(model) / 1e6
        print("\n(b) creation of %s (%.1f MB), fresh process per case, median of %d" % (name, size_mb, args.repeats))
        result[name] = {"model_mb": size_mb, "cases": _create_cases(model, args.repeats, workdir)}
    return result


# -------------------------------------------------------------------------------------- (c) flight

def _eight(target) -> float:
    barrier = threading.Barrier(8)
    errors: List[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            target()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def bench_flight(args, workdir: Path) -> Dict[str, Any]:
    from dfl_perf.facepipe.standin import save_dfm_standin
    from dfl_perf.sessions import ModelCache, SessionConfig, create_session

    model = save_dfm_standin(workdir / "dfm_flight.onnx", cost="20ms", pad_mb=args.pad_mb)
    config = SessionConfig.tuned()
    with ModelCache(config=config) as cache:
        cached_s = _eight(lambda: cache.get(model))
        stats = cache.stats()
    plain_s = _eight(lambda: create_session(model, config))
    print("\n(c) 8 threads ask for one %.0f MB model at once" % (os.path.getsize(model) / 1e6))
    print("    ModelCache: %d load(s), %d waited, %d hits, %.3f s;  8x create_session: 8 loads, %.3f s"
          % (stats["loads"], stats["waits"], stats["hits"], cached_s, plain_s))
    return {"loads": stats["loads"], "waits": stats["waits"], "hits": stats["hits"], "seconds": cached_s,
            "plain_seconds": plain_s}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and repeats")
    parser.add_argument("--frames", type=int, default=None, help="frames per pipeline run (default 120, quick 40)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (default 5, quick 3)")
    parser.add_argument("--pad-mb", type=float, default=60.0, help="weights added to the DFM stand-in (MB)")
    parser.add_argument("--only", default="pipeline,create,flight", help="comma-separated parts to run")
    parser.add_argument("--modes", default="threads,processes", help="pipeline stage kinds: threads,processes")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    args = parser.parse_args(argv)
    args.frames = args.frames or (40 if args.quick else 120)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.modes = [m for m in args.modes.split(",") if m]
    parts = set(args.only.split(","))
    info = print_header("dfl_perf.sessions")
    payload: Dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="bench_sessions_") as tmp:
        workdir = Path(tmp)
        if "pipeline" in parts:
            payload["pipeline"] = bench_pipeline(args, workdir)
        if "create" in parts:
            payload["create"] = bench_create(args, workdir)
        if "flight" in parts:
            payload["flight"] = bench_flight(args, workdir)
    write_json(args.json, payload)


if __name__ == "__main__":
    main()
