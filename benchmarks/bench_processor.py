"""dfl_perf.processor: hot-path overhead, and latency under overload, each beside a baseline.

    python benchmarks/bench_processor.py                 # about 1 minute
    python benchmarks/bench_processor.py --quick         # a few seconds
    python benchmarks/bench_processor.py --only overload --json out.json

Sections (each a function ``section_x(args) -> dict`` listed in SECTIONS; add one the same way):

* overhead: a 3-stage pipeline of no-op functions, frames/s and us/frame (lossless, drop='block';
  the time from the first submit to the last result read), beside a hand-made chain of
  ``queue.Queue`` threads (the usual approach) and the plain sequential calls (the floor).
  Median of ``--repeats`` runs.
* overload: frames offered at 2x the sustainable rate for ``--seconds`` to a stage that sleeps a
  fixed service time (so the numbers do not depend on this noisy machine's load); end-to-end
  latency (submit -> result read by the consumer) of the processed frames, p99 over the first and
  the last third of the run. dfl_perf with drop='oldest' and a deadline, dfl_perf with
  drop='oldest' alone, and the FaceFusion-style baseline (every frame submitted to a thread pool,
  results read in order, no bound): its latency grows with the run. The baseline's backlog is
  read to the end, so its cases take about twice ``--seconds``.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

from _common import median, print_header, write_json

from dfl_perf.processor import Pipeline, Stage


def _noop(x: Any) -> Any:
    return x


# -- section: overhead -----------------------------------------------------------------------------
def _run_dfl_pipeline(frames: int, workers: int, max_queue: int) -> float:
    stages = [Stage(_noop, workers=workers, name=n) for n in ("detect", "swap", "merge")]
    with Pipeline(stages, drop="block", max_queue=max_queue) as pipe:
        got = [0]

        def consume() -> None:
            for _ in pipe.results():
                got[0] += 1

        reader = threading.Thread(target=consume)
        t0 = time.perf_counter()
        reader.start()
        for i in range(frames):
            pipe.submit(i)
        pipe.close()
        reader.join()
        elapsed = time.perf_counter() - t0
    assert got[0] == frames and pipe.stats()["done"] == frames
    return elapsed


def _run_queue_chain(frames: int, maxsize: int) -> float:
    """Baseline: one thread per stage, linked by queue.Queue(maxsize), a sentinel at the end."""
    end = object()
    queues = [queue.Queue(maxsize) for _ in range(4)]

    def stage(q_in: queue.Queue, q_out: queue.Queue) -> None:
        while True:
            item = q_in.get()
            q_out.put(item if item is end else _noop(item))
            if item is end:
                return

    threads = [threading.Thread(target=stage, args=(queues[i], queues[i + 1])) for i in range(3)]
    got = [0]

    def consume() -> None:
        while queues[3].get() is not end:
            got[0] += 1

    threads.append(threading.Thread(target=consume))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for i in range(frames):
        queues[0].put(i)
    queues[0].put(end)
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert got[0] == frames
    return elapsed


def _run_sequential(frames: int) -> float:
    t0 = time.perf_counter()
    for i in range(frames):
        _noop(_noop(_noop(i)))
    return time.perf_counter() - t0


def _run_dfl_round_trip(frames: int) -> float:
    """One frame at a time: submit, then wait for its result (3 thread hand-offs and a wake-up each)."""
    stages = [Stage(_noop, name=n) for n in ("detect", "swap", "merge")]
    with Pipeline(stages, drop="block") as pipe:
        t0 = time.perf_counter()
        for i in range(frames):
            pipe.submit(i)
            pipe.get()
        elapsed = time.perf_counter() - t0
    assert pipe.stats()["done"] == frames
    return elapsed


def section_overhead(args: argparse.Namespace) -> Dict[str, Any]:
    frames = 20_000 if args.quick else 100_000
    one_by_one = frames // 20
    cases: List[Tuple[str, int, Callable[[], float]]] = [
        (
            "dfl_perf Pipeline, 3 stages x 1 worker, max_queue=64",
            frames,
            lambda: _run_dfl_pipeline(frames, 1, 64),
        ),
        (
            "dfl_perf Pipeline, 3 stages x 1 worker, max_queue=8",
            frames,
            lambda: _run_dfl_pipeline(frames, 1, 8),
        ),
        (
            "dfl_perf Pipeline, 3 stages x 2 workers, max_queue=64",
            frames,
            lambda: _run_dfl_pipeline(frames, 2, 64),
        ),
        (
            "dfl_perf Pipeline, one frame at a time (submit; get)",
            one_by_one,
            lambda: _run_dfl_round_trip(one_by_one),
        ),
        ("baseline: 3 threads + queue.Queue(64)", frames, lambda: _run_queue_chain(frames, 64)),
        ("floor: 3 plain calls in a loop (no threads)", frames, lambda: _run_sequential(frames)),
    ]
    rows = []
    times: Dict[str, List[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every case alike
        for name, _, run in cases:
            times[name].append(run())
    for name, n, _ in cases:
        seconds = median(times[name])
        rows.append({"case": name, "frames": n, "fps": n / seconds, "us_per_frame": seconds / n * 1e6})
    print("\n-- overhead: 3 no-op stages, median of %d runs --" % args.repeats)
    print("%-58s %8s %12s %10s" % ("case", "frames", "frames/s", "us/frame"))
    for r in rows:
        print("%-58s %8d %12.0f %10.2f" % (r["case"], r["frames"], r["fps"], r["us_per_frame"]))
    return {"frames": frames, "repeats": args.repeats, "rows": rows}


# -- section: overload -----------------------------------------------------------------------------
def _sleeper(seconds: float) -> Callable[[Any], Any]:
    def serve(x: Any) -> Any:
        time.sleep(seconds)
        return x

    return serve


def _offer(submit: Callable[[int, float], None], rate: float, seconds: float) -> int:
    """Call submit(i, t_submit) at a steady rate for ``seconds``; returns the number offered."""
    interval = 1.0 / rate
    start = time.perf_counter()
    i = 0
    while True:
        due = start + i * interval
        now = time.perf_counter()
        if due - start >= seconds:
            return i
        if due > now:
            time.sleep(due - now)
        submit(i, time.perf_counter())
        i += 1


def _run_dfl_overload(stages: List[Stage], rate: float, seconds: float, **options: Any) -> Dict[str, Any]:
    samples: List[Tuple[float, float]] = []  # (submit time, latency) of frames done
    waits: List[float] = []  # submit -> first stage starts it (bounded by the deadline)
    runs: List[float] = []  # first stage starts -> last stage ends (the service itself, and noise)
    with Pipeline(stages, **options) as pipe:

        def consume() -> None:
            for r in pipe.results():
                if r.ok:
                    samples.append((r.queued, time.perf_counter() - r.queued))
                    waits.append(r.started - r.queued)
                    runs.append(r.finished - r.started)

        reader = threading.Thread(target=consume)
        reader.start()
        t0 = time.perf_counter()
        offered = _offer(lambda i, _t: pipe.submit(i), rate, seconds)
        pipe.close(drain=True)
        reader.join()
        stats = pipe.stats()
    return {
        "t0": t0,
        "offered": offered,
        "samples": samples,
        "dropped": stats["dropped"],
        "late": stats["late"],
        "wait_p99_ms": _percentile_ms(waits, 99),
        "run_p99_ms": _percentile_ms(runs, 99),
    }


def _run_pool_overload(
    fns: List[Callable[[Any], Any]], workers: int, rate: float, seconds: float
) -> Dict[str, Any]:
    """FaceFusion-style live loop: every frame goes to a thread pool, results are read in order.

    Nothing bounds the backlog, so after the offering ends the reader still waits for every frame
    (the run takes about twice as long): each latency is measured, none is estimated."""
    futures: queue.Queue[Any] = queue.Queue()
    samples: List[Tuple[float, float]] = []

    def whole_frame(x: Any) -> Any:
        for fn in fns:
            x = fn(x)
        return x

    def consume() -> None:
        while True:
            item = futures.get()
            if item is None:
                return
            t_submit, future = item
            future.result()
            samples.append((t_submit, time.perf_counter() - t_submit))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        reader = threading.Thread(target=consume)
        reader.start()
        t0 = time.perf_counter()
        offered = _offer(lambda i, t: futures.put((t, pool.submit(whole_frame, i))), rate, seconds)
        futures.put(None)
        reader.join()
    return {"t0": t0, "offered": offered, "samples": samples, "dropped": 0, "late": 0}


def _summarise(name: str, run: Dict[str, Any], seconds: float, service: float) -> Dict[str, Any]:
    samples = sorted(run["samples"])
    thirds: List[List[float]] = [[], [], []]
    for t_submit, latency in samples:
        thirds[min(2, int((t_submit - run["t0"]) / (seconds / 3)))].append(latency)
    latencies = [lat for _, lat in samples]
    return {
        "case": name,
        "offered": run["offered"],
        "processed": len(samples),
        "dropped": run["dropped"],
        "late": run["late"],
        "p50_ms": _percentile_ms(latencies, 50),
        "p99_first_third_ms": _percentile_ms(thirds[0], 99),
        "p99_last_third_ms": _percentile_ms(thirds[2], 99),
        "max_ms": max(latencies) * 1e3 if latencies else None,
        "wait_p99_ms": run.get("wait_p99_ms"),
        "run_p99_ms": run.get("run_p99_ms"),
        "service_ms": service * 1e3,
        "p99_over_service": (_percentile_ms(latencies, 99) or 0.0) / (service * 1e3),
    }


def _percentile_ms(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1))))] * 1e3


def section_overload(args: argparse.Namespace) -> Dict[str, Any]:
    seconds = 2.0 if args.quick else args.seconds
    one = 0.010  # one stage, one worker: sustainable 100 frames/s
    detect, swap = 0.003, 0.010  # two stages: swap is the bottleneck, 100 frames/s
    rate = 2.0 / one  # offered: 200 frames/s, twice the sustainable rate in both set-ups
    live = {"drop": "oldest", "max_queue": 4}

    def single() -> List[Stage]:
        return [Stage(_sleeper(one), name="swap")]

    def double() -> List[Stage]:
        return [Stage(_sleeper(detect), name="detect"), Stage(_sleeper(swap), name="swap")]

    cases: List[Tuple[str, float, Callable[[], Dict[str, Any]]]] = [
        (
            "dfl_perf drop=oldest max_queue=4 deadline=1x",
            one,
            lambda: _run_dfl_overload(single(), rate, seconds, deadline=one, **live),
        ),
        (
            "dfl_perf drop=oldest max_queue=4, no deadline",
            one,
            lambda: _run_dfl_overload(single(), rate, seconds, **live),
        ),
        (
            "baseline: unbounded thread pool (FaceFusion-style)",
            one,
            lambda: _run_pool_overload([_sleeper(one)], 1, rate, seconds),
        ),
        (
            "dfl_perf Pipeline detect+swap, drop=oldest deadline=1x",
            detect + swap,
            lambda: _run_dfl_overload(double(), rate, seconds, deadline=detect + swap, **live),
        ),
        (
            "baseline: unbounded pool, detect+swap in one task",
            detect + swap,
            lambda: _run_pool_overload([_sleeper(detect), _sleeper(swap)], 1, rate, seconds),
        ),
    ]
    rows = [_summarise(name, run(), seconds, service) for name, service, run in cases]
    print(
        "\n-- overload: %.0f frames/s offered (2x sustainable) for %.0f s; latency submit -> read --"
        % (rate, seconds)
    )
    fmt = "%-56s %7s %6s %6s %6s %8s %8s %8s %8s %7s %8s %8s"
    print(
        fmt
        % (
            "case",
            "offered",
            "done",
            "drop",
            "late",
            "p50 ms",
            "p99 1/3",
            "p99 3/3",
            "max ms",
            "p99/svc",
            "wait p99",
            "run p99",
        )
    )
    for r in rows:
        ms = [r[k] for k in ("p50_ms", "p99_first_third_ms", "p99_last_third_ms", "max_ms")]
        parts = [r["case"], r["offered"], r["processed"], r["dropped"], r["late"]]
        parts += ["-" if v is None else "%.1f" % v for v in ms]
        parts += ["%.2f" % r["p99_over_service"]]
        parts += ["-" if r[k] is None else "%.1f" % r[k] for k in ("wait_p99_ms", "run_p99_ms")]
        print(fmt % tuple(parts))
    print(
        "(svc: nominal service time per frame, %.0f ms one stage, %.0f ms detect+swap; wait: submit -> first"
        " stage starts it; run: first stage starts -> last ends, the service plus scheduling noise)"
        % (one * 1e3, (detect + swap) * 1e3)
    )
    return {"seconds": seconds, "rate": rate, "rows": rows}


def section_face_swap(args: argparse.Namespace) -> Dict[str, Any]:
    """The reference workload (YuNet -> align -> DFM stand-in 20 ms -> merge, 640x480): DFL's sequential
    loop with DFL's session options vs the Pipeline with tuned sessions; the same measurement as
    ``dfl-perf benchmark`` (targets: >= 2.2x, >= 90% of the compute bound)."""
    from dfl_perf.benchmark import BenchmarkOptions, run_benchmark
    from dfl_perf.benchmark.report import format_table

    options = BenchmarkOptions.quick() if args.quick else BenchmarkOptions()
    report = run_benchmark(options)
    print(format_table(report))
    print("targets: speedup >= 2.2x: %s; efficiency >= 90%%: %s" % (
        "met" if report["speedup"] >= 2.2 else "NOT met", "met" if report["efficiency"] >= 0.9 else "NOT met"))
    out = {k: report[k] for k in ("speedup", "compute_bound_fps", "efficiency", "outputs_match", "workload")}
    out.update(baseline_fps=report["baseline"]["fps"], optimized_fps=report["optimized"]["fps"])
    return out


# Each section: (name, function).
SECTIONS: List[Tuple[str, Callable[[argparse.Namespace], Dict[str, Any]]]] = [
    ("overhead", section_overhead),
    ("overload", section_overload),
    ("face_swap", section_face_swap),
]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--repeats", type=int, default=5, help="overhead runs per case (median)")
    parser.add_argument("--seconds", type=float, default=10.0, help="overload run length per case")
    parser.add_argument(
        "--only", choices=[name for name, _ in SECTIONS], action="append", help="run only this section"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 3)
    info = print_header("dfl_perf.processor")
    info["loadavg"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    print("switch interval %.3f ms, load average %s" % (sys.getswitchinterval() * 1e3, info["loadavg"]))
    results: Dict[str, Any] = {"machine": info, "quick": args.quick}
    for name, section in SECTIONS:
        if args.only and name not in args.only:
            continue
        results[name] = section(args)
    write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
