"""How much `import dfl_perf` adds to a bare interpreter (target: under 15 ms).

Two measures, each in fresh interpreters, medians over the repeats: (1) `-X importtime`'s
cumulative time for `dfl_perf` itself (steady on a shared machine), (2) the wall time of
`python -c "import dfl_perf"` minus `python -c pass`, run alternately (noisier: process start-up
varies by milliseconds). Also lists which heavy modules got imported (none expected).

    python benchmarks/bench_import.py [--repeats 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import REPO, median, print_header, write_json

HEAVY = ("numpy", "onnxruntime", "cv2", "onnx", "psutil", "pynvml")


def _run(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-S", "-c", code], check=True, cwd=str(REPO))
    return time.perf_counter() - t0


def _importtime_us(code: str) -> int:
    """Cumulative microseconds `-X importtime` reports for the dfl_perf package."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(REPO))
    for line in out.stderr.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) == 3 and parts[2] == "dfl_perf":
            return int(parts[1])
    raise RuntimeError("no dfl_perf line in -X importtime output")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="10 repeats")
    parser.add_argument("--json")
    args = parser.parse_args()
    repeats = 10 if args.quick else args.repeats
    info = print_header("import dfl_perf cost")
    # -S skips site (both sides), so the difference is dfl_perf alone; sys.path gets the repo.
    bare, pkg = [], []
    code_pkg = "import sys; sys.path.insert(0, %r); import dfl_perf" % str(REPO)
    for _ in range(2):  # warm the file cache
        _run("pass"), _run(code_pkg)
    for _ in range(repeats):
        bare.append(_run("pass"))
        pkg.append(_run(code_pkg))
    probe = subprocess.run([sys.executable, "-c", code_pkg + "; import sys, json; print(json.dumps(sorted(sys.modules)))"],
                           capture_output=True, text=True, check=True)
    heavy = sorted(set(json.loads(probe.stdout)) & set(HEAVY))
    added_ms = (median(pkg) - median(bare)) * 1000
    importtime_ms = median(_importtime_us(code_pkg) for _ in range(repeats)) / 1000
    print("-X importtime: import dfl_perf        median %.2f ms  (target < 15 ms)" % importtime_ms)
    print("wall: bare interpreter                median %.1f ms" % (median(bare) * 1000))
    print("wall: with import dfl_perf            median %.1f ms  (difference %.1f ms, process start noise "
          "included)" % (median(pkg) * 1000, added_ms))
    print("heavy modules imported: %s" % (heavy or "none"))
    write_json(args.json, {"machine": info, "importtime_ms": importtime_ms, "bare_ms": median(bare) * 1000,
                           "with_dfl_perf_ms": median(pkg) * 1000, "added_wall_ms": added_ms,
                           "heavy_imported": heavy, "repeats": repeats})
    return 0


if __name__ == "__main__":
    sys.exit(main())
