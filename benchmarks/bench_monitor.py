"""Cost of dfl_perf.monitor's hot path: record(), stage(), frame_done(), and summary() at a full window.

Run: python benchmarks/bench_monitor.py [--quick] [--repeats N] [--json PATH]

Each figure is the median of several repeats of a timed loop (ns per call, loop included; the
empty-loop row shows that floor), as wall time and as CPU time (thread CPU time; process CPU time
for the two-thread rows), the latter being what to read on a shared machine. Baselines, measured in the same run on the same inputs:
- record: an unbounded list.append under a lock (the naive meter, grows forever) and a numpy
  ring written item by item under a lock (why record() avoids numpy);
- stage(): a contextlib.contextmanager timer doing the same work;
- summary(): the same statistics from Python lists and sorted() (summary() sorts numpy copies).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

from _common import median, print_header, write_json

from dfl_perf.monitor import PerformanceMonitor, SystemSampler, draw_overlay


class _ListMeter:
    """Naive baseline: every sample appended to a list under a lock (grows without bound)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.samples: Dict[str, List[float]] = {}

    def record(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.samples.setdefault(stage, []).append(seconds)


class _NumpyRingMeter:
    """Baseline: a preallocated numpy ring per stage, written item by item under a lock."""

    def __init__(self, capacity: int = 1024) -> None:
        import numpy as np

        self.lock = threading.Lock()
        self.rings: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}
        self.capacity = capacity
        self._np = np

    def record(self, stage: str, seconds: float) -> None:
        with self.lock:
            ring = self.rings.get(stage)
            if ring is None:
                ring = self.rings[stage] = self._np.zeros(self.capacity)
                self.counts[stage] = 0
            count = self.counts[stage]
            ring[count % self.capacity] = seconds
            self.counts[stage] = count + 1


def _per_call_ns(run: Callable[[int], None], calls: int, repeats: int, threads: bool = False) -> Tuple[float, float]:
    """(wall, CPU) ns per call, each the median over ``repeats``.

    CPU time (this thread's, or the whole process's for the threaded runs) leaves out the time the
    process waits for a core, so it stays meaningful on a shared, overloaded machine.
    """
    cpu_clock = time.process_time if threads else time.thread_time
    walls, cpus = [], []
    for _ in range(repeats):
        cpu0, wall0 = cpu_clock(), time.perf_counter()
        run(calls)
        walls.append((time.perf_counter() - wall0) / calls * 1e9)
        cpus.append((cpu_clock() - cpu0) / calls * 1e9)
    return median(walls), median(cpus)


def _loop(call: Callable[..., Any], *args: Any) -> Callable[[int], None]:
    def run(calls: int) -> None:
        for _ in range(calls):
            call(*args)
    return run


def _threads(call: Callable[..., Any], args: tuple, threads: int) -> Callable[[int], None]:
    def run(calls: int) -> None:
        each = calls // threads
        barrier = threading.Barrier(threads)

        def work() -> None:
            barrier.wait()
            for _ in range(each):
                call(*args)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return run


def _stage_loop(timer: Callable[[str], Any]) -> Callable[[int], None]:
    def run(calls: int) -> None:
        for _ in range(calls):
            with timer("swap"):
                pass
    return run


def _contextlib_timer(monitor: PerformanceMonitor) -> Callable[[str], Any]:
    @contextlib.contextmanager
    def timer(name: str) -> Any:
        start = time.perf_counter()
        try:
            yield
        finally:
            monitor.record(name, time.perf_counter() - start)
    return timer


def _full_monitor(stages: int) -> PerformanceMonitor:
    import numpy as np

    monitor = PerformanceMonitor()
    values = np.random.default_rng(0).gamma(2.0, 0.01, 4 * monitor.samples).tolist()
    for value in values:
        for index in range(stages):
            monitor.record("stage%d" % index, value)
        monitor.frame_done(value)
    return monitor


def _list_summary(monitor: PerformanceMonitor) -> Callable[[], Any]:
    """Baseline: the same statistics from Python lists and sorted() (no numpy)."""
    from dfl_perf.monitor.stats import describe

    def summary() -> Dict[str, Any]:
        rings = list(monitor._stages.items()) + [("latency", monitor._frames.latencies)]
        return {name: describe(ring.snapshot()[-monitor.samples:]) for name, ring in rings}
    return summary


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    args = parser.parse_args(argv)
    calls = 20000 if args.quick else 200000
    repeats = args.repeats or (3 if args.quick else 7)
    info = print_header("dfl_perf.monitor hot path (ns per call, median of %d)" % repeats)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print("calls per repeat: %d; load average at start: %s" % (calls, "%.2f %.2f %.2f" % load if load else "n/a"))

    monitor = PerformanceMonitor()
    naive, numpy_ring = _ListMeter(), _NumpyRingMeter()
    rows = [
        ("empty loop (floor)", "-", _per_call_ns(_loop(lambda s, v: None, "swap", 0.001), calls, repeats)),
        ("record() 1 thread", "dfl_perf", _per_call_ns(_loop(monitor.record, "swap", 0.001), calls, repeats)),
        ("record() 1 thread", "list.append+lock", _per_call_ns(_loop(naive.record, "swap", 0.001), calls, repeats)),
        ("record() 1 thread", "numpy ring+lock", _per_call_ns(_loop(numpy_ring.record, "swap", 0.001), calls,
                                                            repeats)),
        ("record() 2 threads, same stage", "dfl_perf",
         _per_call_ns(_threads(monitor.record, ("swap", 0.001), 2), calls, repeats, threads=True)),
        ("record() 2 threads, same stage", "list.append+lock",
         _per_call_ns(_threads(naive.record, ("swap", 0.001), 2), calls, repeats, threads=True)),
        ("stage() context manager", "dfl_perf", _per_call_ns(_stage_loop(monitor.stage), calls, repeats)),
        ("stage() context manager", "contextlib", _per_call_ns(_stage_loop(_contextlib_timer(monitor)), calls,
                                                                repeats)),
        ("frame_done()", "dfl_perf", _per_call_ns(_loop(monitor.frame_done, 0.03), calls, repeats)),
    ]
    heavy_calls = 20 if args.quick else 100
    full = _full_monitor(stages=4)
    rows += [
        ("summary() 4 stages x 1024 + e2e", "dfl_perf", _per_call_ns(_loop(full.summary), heavy_calls, repeats)),
        ("summary() 4 stages x 1024 + e2e", "lists + sorted()",
         _per_call_ns(_loop(_list_summary(full)), heavy_calls, repeats)),
        ("prometheus_text() same monitor", "dfl_perf", _per_call_ns(_loop(full.prometheus_text), heavy_calls, repeats)),
    ]
    with SystemSampler() as sampler:
        rows.append(("SystemSampler.sample_once()", "psutil" + ("" if sampler.gpu_reason else "+NVML"),
                     _per_call_ns(_loop(sampler.sample_once), heavy_calls, repeats)))
    try:
        import numpy as np

        frame = np.zeros((1080, 1920, 3), np.uint8)
        summary = full.summary()
        rows.append(("draw_overlay() 1080p, summary dict", "cv2",
                     _per_call_ns(_loop(draw_overlay, frame, summary), heavy_calls, repeats)))
    except ImportError as exc:
        print("draw_overlay skipped: %s" % exc)

    print("%-36s %-18s %12s %12s" % ("operation", "variant", "wall ns", "CPU ns"))
    for operation, variant, (wall, cpu) in rows:
        print("%-36s %-18s %12.0f %12.0f" % (operation, variant, wall, cpu))
    wall, cpu = rows[1][2]
    print("record() target <= 2000 ns: %s (CPU %.0f ns, wall %.0f ns)" % ("met" if cpu <= 2000 else "NOT met", cpu, wall))
    write_json(args.json, {"machine": info, "calls": calls, "repeats": repeats, "load_average": load,
                           "results": [{"operation": o, "variant": v, "wall_ns": w, "cpu_ns": c}
                                       for o, v, (w, c) in rows]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
