"""DeepFaceLive with and without dfl_perf on the stand-in DFL (tests/dfl_standin): FPS, CPU per module, memory.

Run: python benchmarks/bench_adapters.py [--resolutions 640x480,1280x720] [--dfm-mb 2,200] [--repeats 3]
         [--frames 400] [--variants plain,launched] [--detector light|yolov5s] [--json PATH] [--extras]

The stand-in is DFL's live pipeline with DFL's module names and interfaces, each module a spawned
process, every image on a shared weak heap of DFL's layout (2048 MB): FileSource (a painted "video",
not real time: every frame, in order) -> FaceDetector (YoloV5Face-shaped model, DFL's pre- and
post-processing) -> FaceMarker (FaceMesh-shaped) -> FaceAligner -> FaceSwapDFM (DFM-shaped 224 px
stand-in, 20 ms preset, 2 or 200 MB of weights) -> FrameAdjuster -> FaceMerger (DFL's CPU merge) ->
StreamOutput, all on the CPU. Variants, alternated within each repeat, each a fresh app:

- ``plain``: ``python main.py run DeepFaceLive ...`` (DFL as it is);
- ``launched``: ``python -m dfl_perf.adapters.deepfacelive main.py run DeepFaceLive ...`` (dfl-perf dfl);
- ``launched:--flag ...``: the launcher with some of its changes turned off, to attribute a gain.

Per run: delivered FPS after a warm-up (from the output's arrival times), CPU ms per delivered frame
per module (from /proc, warm-up excluded) and its minor page faults per frame, the whole app's peak
summed PSS (every process of the app, read from /proc/PID/smaps_rollup each second over the run:
shared pages split between the processes that map them), frames that reached the output without their merged or frame image, and the output
frames themselves (a few saved per run, compared with plain's: the largest level difference).
Medians of the repeats. ``--extras`` adds DFMModel.convert alone and a worker's import time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import REPO, median, print_header, write_json

STANDIN = REPO / "tests" / "dfl_standin"
LAUNCHER = ["-m", "dfl_perf.adapters.deepfacelive"]
MODULES = ("FileSource", "FaceDetector", "FaceMarker", "FaceAligner", "FaceSwapDFM", "FrameAdjuster", "FaceMerger",
           "StreamOutput")
SAVED = (30, 150, 299)


class PssSampler:
    """Peak of the summed PSS of a process and all its descendants, read every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            total = app_pss_bytes(self.pid)
            if total:
                self.peak = max(self.peak, total)
                self.samples += 1
            self._stop.wait(self.interval)


def _descendants(pid: int) -> List[int]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid] + [p.pid for p in root.children(recursive=True)]
    except psutil.Error:
        return []


def _pss_bytes(pid: int) -> int:
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def app_pss_bytes(pid: int) -> int:
    """Summed PSS of ``pid`` and its descendants (each shared page split between the processes mapping it)."""
    return sum(_pss_bytes(p) for p in _descendants(pid))


def _run(variant: str, userdata: Path, env: Dict[str, str], frames: int, timeout: float) -> Dict[str, Any]:
    name, _, flags = variant.partition(":")
    prefix = LAUNCHER + flags.split() if name == "launched" else []
    cmd = [sys.executable] + prefix + [str(STANDIN / "main.py"), "run", "DeepFaceLive", "--userdata-dir", str(userdata)]
    with open(str(userdata / "run.log"), "w") as log:
        proc = subprocess.Popen(cmd, cwd=str(REPO), env=env, stdout=log, stderr=subprocess.STDOUT)
        with PssSampler(proc.pid) as pss:
            code = proc.wait(timeout=timeout)
    if code != 0:
        raise RuntimeError("%s failed (exit %s): see %s" % (variant, code, userdata / "run.log"))
    report = json.loads((userdata / "standin_report.json").read_text())
    if report["frames"] < frames:
        raise RuntimeError("%s delivered %d frames" % (variant, report["frames"]))
    return {"fps": report["fps"], "cpu_ms": report["cpu_ms_per_frame"], "faults": report.get("faults_per_frame", {}),
            "peak_pss_mb": pss.peak / 1e6,
            "pss_samples": pss.samples, "lost": report["lost_merged"] + report["lost_frame"],
            "frames": report["frames"], "heap": report.get("heap"), "merged_dtypes": report.get("merged_dtypes"),
            "out": str(userdata / "out")}


def _max_level_difference(plain_out: str, other_out: str) -> Optional[int]:
    import numpy as np

    worst = None
    for n in SAVED:
        a, b = Path(plain_out) / ("frame_%06d.npy" % n), Path(other_out) / ("frame_%06d.npy" % n)
        if a.is_file() and b.is_file():
            diff = int(np.abs(np.load(str(a)).astype(int) - np.load(str(b))).max())
            worst = diff if worst is None else max(worst, diff)
    return worst


def bench_cell(work: Path, width: int, height: int, dfm_mb: float, variants: List[str], repeats: int, frames: int,
               detector: str, env: Dict[str, str]) -> Dict[str, Any]:
    from dfl_perf.facepipe.models import face_photo_path
    from dfl_perf.facepipe.standin import save_dfm_standin

    dfm = work / ("dfm_%gmb.dfm" % dfm_mb)
    if not dfm.is_file():
        save_dfm_standin(str(dfm), resolution=224, cost="20ms", seed=0, dense_mb=dfm_mb)
    settings = {"frames": frames, "warmup": max(20, frames // 8), "dfm_path": str(dfm), "width": width,
                "height": height, "models_dir": str(work / ("models_" + detector)), "detector_cost": detector,
                "face_path": str(face_photo_path()), "save_frames": [n for n in SAVED if n < frames],
                "timeout_s": 900}
    runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
    for repeat in range(repeats):
        order = variants if repeat % 2 == 0 else list(reversed(variants))
        for variant in order:
            userdata = work / ("%dx%d-%gmb-%s-%d" % (width, height, dfm_mb, variant.replace(" ", "_").replace(":", "_")
                                                     .replace("--", ""), repeat))
            userdata.mkdir()
            (userdata / "standin_settings.json").write_text(json.dumps(settings))
            result = _run(variant, userdata, env, frames, timeout=1200)
            runs[variant].append(result)
            print("  %dx%d %5g MB  repeat %d  %-34s %6.2f FPS  peak PSS %7.0f MB  lost %d" % (
                width, height, dfm_mb, repeat + 1, variant, result["fps"], result["peak_pss_mb"], result["lost"]))
            sys.stdout.flush()
    return {variant: _summary(results, runs.get(variants[0], [])) for variant, results in runs.items()}


def _summary(results: List[Dict[str, Any]], base: List[Dict[str, Any]]) -> Dict[str, Any]:
    cpu = {m: median(r["cpu_ms"].get(m, 0.0) for r in results) for m in MODULES}
    faults = {m: median(r["faults"].get(m, 0.0) for r in results) for m in MODULES}
    diffs = [_max_level_difference(b["out"], r["out"]) for b, r in zip(base, results)]
    return {"fps": median(r["fps"] for r in results), "fps_runs": [r["fps"] for r in results],
            "peak_pss_mb": median(r["peak_pss_mb"] for r in results),
            "peak_pss_runs": [r["peak_pss_mb"] for r in results], "cpu_ms": cpu, "faults": faults,
            "lost": sum(r["lost"] for r in results), "frames": [r["frames"] for r in results],
            "max_level_diff": max([d for d in diffs if d is not None], default=None),
            "heap": results[-1]["heap"], "merged_dtypes": results[-1]["merged_dtypes"]}


def _print_cell(label: str, cell: Dict[str, Any]) -> None:
    base = next(iter(cell.values()))
    print("\n%s" % label)
    print("%-34s %8s %8s %10s %8s %5s %5s" % ("variant", "FPS", "vs 1st", "peak PSS", "vs 1st", "lost", "diff"))
    for variant, row in cell.items():
        print("%-34s %8.2f %7.2fx %8.0f MB %7.2fx %5d %5s" % (
            variant, row["fps"], row["fps"] / base["fps"], row["peak_pss_mb"], row["peak_pss_mb"] / base["peak_pss_mb"],
            row["lost"], "-" if row["max_level_diff"] is None else row["max_level_diff"]))
    print("CPU ms per delivered frame: " + ", ".join("%s" % v for v in cell))
    for module in MODULES:
        print("  %-14s " % module + "  ".join("%7.1f" % cell[v]["cpu_ms"][module] for v in cell))
    print("  %-14s " % "all" + "  ".join("%7.1f" % sum(cell[v]["cpu_ms"].values()) for v in cell))
    print("minor page faults per delivered frame: " + ", ".join("%s" % v for v in cell))
    for module in MODULES:
        print("  %-14s " % module + "  ".join("%7.0f" % cell[v]["faults"][module] for v in cell))


def _extras(work: Path) -> Dict[str, Any]:
    """DFMModel.convert alone (DFL's vs the fast path) and a worker's import (plain vs launched)."""
    sys.path.insert(0, str(STANDIN))
    try:
        import numpy as np
        from modelhub.DFLive.DFMModel import DFMModel

        import dfl_perf.adapters.deepfacelive as dp
        from dfl_perf.adapters.deepfacelive.dfm import FastDFM

        dfm = work / "extras.dfm"
        from dfl_perf.facepipe.standin import save_dfm_standin

        save_dfm_standin(str(dfm), resolution=224, cost="20ms", seed=0)
        dp.install(dp.DFLConfig(lazy_imports=(), optimized_model_cache=False), propagate=False)
        model = DFMModel(str(dfm))
        original, fast = DFMModel.convert.dfl_perf_original, FastDFM(model._sess)
        img = np.random.RandomState(0).randint(0, 256, (224, 224, 3)).astype(np.uint8)
        times: Dict[str, List[float]] = {"dfl_ms": [], "fast_ms": []}
        for i in range(60):
            for key, call in (("dfl_ms", lambda: original(model, img)), ("fast_ms", lambda: fast.convert(img))):
                start = time.perf_counter()
                call()
                if i >= 5:
                    times[key].append(1000 * (time.perf_counter() - start))
        fast.close()
        dp.uninstall()
        return {key: median(values) for key, values in times.items()}
    finally:
        sys.path.remove(str(STANDIN))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolutions", default="640x480,1280x720")
    parser.add_argument("--dfm-mb", default="2,200", help="DFM stand-in weights in MB, comma-separated")
    parser.add_argument("--variants", default="plain,launched",
                        help="comma-separated; 'launched:--flag --flag' turns launcher changes off")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=400, help="frames per run (a warm-up of frames/8, at least 20)")
    parser.add_argument("--detector", choices=("light", "yolov5s"), default="light",
                        help="detector model cost (tests/dfl_standin/standin_models.py): light = issue 17's DFL figures")
    parser.add_argument("--extras", action="store_true", help="also time DFMModel.convert alone")
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    resolutions = [tuple(int(x) for x in r.lower().split("x")) for r in args.resolutions.split(",")]
    dfm_sizes = [float(x) for x in args.dfm_mb.split(",")]
    info = print_header("adapters.deepfacelive: the stand-in DFL's live pipeline, CPU, plain vs launched")
    print("%d frames a run, medians of %d alternating repeats, detector %s; variants: %s"
          % (args.frames, args.repeats, args.detector, ", ".join(variants)))
    env = dict(os.environ)
    for name in ("DFL_PERF_DFL_CONFIG", "PYTHONPATH", "ORT_DEVICES_INITIALIZED", "ORT_DEVICES_COUNT", "DFL_STANDIN_MODELS"):
        env.pop(name, None)
    cells = {}
    with tempfile.TemporaryDirectory(prefix="bench_adapters_") as tmp:
        work = Path(tmp)
        env["DFL_PERF_CACHE_DIR"] = str(work / "cache")
        for width, height in resolutions:
            for dfm_mb in dfm_sizes:
                label = "%dx%d, %g MB DFM" % (width, height, dfm_mb)
                cells[label] = bench_cell(work, width, height, dfm_mb, variants, args.repeats, args.frames,
                                          args.detector, env)
        for label, cell in cells.items():
            _print_cell(label, cell)
        extras = _extras(work) if args.extras else None
    if extras:
        print("\nDFMModel.convert alone, 224 px uint8 face, median ms: DFL %.2f, fast path %.2f"
              % (extras["dfl_ms"], extras["fast_ms"]))
    write_json(args.json, {"machine": info, "frames": args.frames, "repeats": args.repeats, "detector": args.detector,
                           "variants": variants, "cells": cells, "extras": extras})
    return 0


if __name__ == "__main__":
    sys.exit(main())
