"""DeepFaceLive with and without dfl_perf: the stand-in DFL's live pipeline, before and after install().

Run: python benchmarks/bench_adapters.py [--quick] [--repeats N] [--frames N] [--json PATH]

The pipeline is tests/dfl_standin (DFL's module names and session factory): spawned processes
FileSource -> FaceDetector (YoloV5Face-shaped) -> FaceMarker (FaceMesh-shaped) -> FaceAligner ->
FaceSwapDFM (DFM-shaped model, 224, ~20 ms preset) -> FrameAdjuster -> FaceMerger -> StreamOutput,
joined by shared-memory rings, images on the shared frame heap, all on the CPU. Throughput is measured at the end of the pipeline after a
warm-up. Variants, alternated within each repeat:

- ``dfl``: ``python main.py run DeepFaceLive ...`` (DFL's factory: onnxruntime defaults);
- ``dfl_perf``: ``python -m dfl_perf.adapters.deepfacelive main.py run DeepFaceLive ...`` (zero edits);
- ``dfl_perf --no-fast-dfm``: the same without the DFM fast path (to attribute the gain).

A second table times ``DFMModel.convert`` alone (one process, same tuned session): DFL's convert vs
the fast path, interleaved calls. A third times what every spawned worker pays at start-up: a fresh
interpreter importing the backend package, wall time including dfl_perf's sitecustomize
(onnxruntime and onnx deferred with dfl_perf).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from _common import REPO, median, print_header, write_json

STANDIN = REPO / "tests" / "dfl_standin"
SHARED = Path(os.environ.get("DFL_PERF_SHARED", str(REPO.parent / "shared")))
VARIANTS = {
    "dfl": [],
    "dfl_perf": ["-m", "dfl_perf.adapters.deepfacelive"],
    "dfl_perf --no-fast-dfm": ["-m", "dfl_perf.adapters.deepfacelive", "--no-fast-dfm"],
}


def _run_pipeline(variant: str, userdata: Path, env: Dict[str, str]) -> Dict[str, Any]:
    cmd = [sys.executable] + VARIANTS[variant] + [str(STANDIN / "main.py"), "run", "DeepFaceLive",
                                                  "--userdata-dir", str(userdata)]
    done = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError("%s failed:\n%s%s" % (variant, done.stdout, done.stderr))
    report = json.loads((userdata / "standin_report.json").read_text())
    return {"fps": report["fps"], "threads": [w["sessions"][0]["intra_op_num_threads"] for n, w in sorted(report["workers"].items())
                        if w["sessions"]]}


def bench_pipeline(work: Path, frames: int, warmup: int, repeats: int) -> Dict[str, Any]:
    from dfl_perf.facepipe.standin import save_dfm_standin

    dfm = work / "standin_20ms.dfm"
    save_dfm_standin(str(dfm), resolution=224, cost="20ms", seed=0)
    settings = {"frames": frames, "warmup": warmup, "dfm_path": str(dfm), "models_dir": str(work / "models"),
                "face_path": str(SHARED / "media" / "astronaut.png"), "timeout_s": 600}
    env = dict(os.environ, DFL_PERF_CACHE_DIR=str(work / "cache"))
    for name in ("DFL_PERF_DFL_CONFIG", "PYTHONPATH", "ORT_DEVICES_INITIALIZED", "ORT_DEVICES_COUNT"):
        env.pop(name, None)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in VARIANTS}
    for repeat in range(repeats):
        order = list(VARIANTS) if repeat % 2 == 0 else list(reversed(list(VARIANTS)))
        for variant in order:
            userdata = work / ("userdata-%s-%d" % (variant.replace(" ", "_"), repeat))
            userdata.mkdir()
            (userdata / "standin_settings.json").write_text(json.dumps(settings))
            result = _run_pipeline(variant, userdata, env)
            runs[variant].append(result)
            print("  repeat %d  %-24s %6.2f frames/s  (threads per session %s)"
                  % (repeat + 1, variant, result["fps"], result["threads"]))
    return {name: {"fps_median": median(r["fps"] for r in results),
                   "fps_runs": [r["fps"] for r in results],
                   "threads": results[0]["threads"]} for name, results in runs.items()}


def bench_convert(work: Path, calls: int) -> Dict[str, float]:
    sys.path.insert(0, str(STANDIN))
    try:
        import numpy as np
        from modelhub.DFLive.DFMModel import DFMModel

        import dfl_perf.adapters.deepfacelive as dp
        from dfl_perf.adapters.deepfacelive.dfm import FastDFM

        dp.install(dp.DFLConfig(lazy_imports=(), optimized_model_cache=False), propagate=False)
        model = DFMModel(str(work / "standin_20ms.dfm"))
        original = DFMModel.convert.dfl_perf_original
        fast = FastDFM(model._sess)
        rng = np.random.RandomState(0)
        results = {}
        for label, img in (("224x224 uint8 (aligned face)", rng.randint(0, 256, (224, 224, 3)).astype(np.uint8)),
                           ("320x320 uint8 (resized)", rng.randint(0, 256, (320, 320, 3)).astype(np.uint8))):
            for _ in range(5):
                original(model, img)
                fast.convert(img)
            dfl_times, fast_times = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                original(model, img)
                t1 = time.perf_counter()
                fast.convert(img)
                t2 = time.perf_counter()
                dfl_times.append(t1 - t0)
                fast_times.append(t2 - t1)
            results[label] = {"dfl_ms": 1000 * median(dfl_times), "fast_ms": 1000 * median(fast_times)}
        fast.close()
        dp.uninstall()
        return results
    finally:
        sys.path.remove(str(STANDIN))


_IMPORT_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import apps.DeepFaceLive.backend
print(int('__version__' in vars(sys.modules['onnxruntime'])))
"""


def bench_worker_import(repeats: int) -> Dict[str, Dict[str, float]]:
    """Wall seconds of a fresh interpreter (start-up, sitecustomize, then importing the stand-in backend
    package, as each spawned DFL worker does)."""
    from dfl_perf.adapters.deepfacelive import DFLConfig
    from dfl_perf.adapters.deepfacelive._install import SITE_DIR

    base_env = dict(os.environ, ORT_DEVICES_INITIALIZED="1", ORT_DEVICES_COUNT="0")
    for name in ("DFL_PERF_DFL_CONFIG", "PYTHONPATH"):
        base_env.pop(name, None)
    variants = {"dfl": base_env,
                "dfl_perf": dict(base_env, PYTHONPATH=SITE_DIR, DFL_PERF_DFL_CONFIG=DFLConfig().to_json())}
    times: Dict[str, List[float]] = {name: [] for name in variants}
    loaded: Dict[str, int] = {}
    for _ in range(repeats):
        for name, env in variants.items():
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", _IMPORT_PROBE, str(STANDIN)], cwd=str(REPO), env=env,
                                  capture_output=True, text=True, timeout=120, check=True)
            times[name].append(time.perf_counter() - started)
            loaded[name] = int(done.stdout.split()[-1])
    return {name: {"wall_s": median(values), "onnxruntime_loaded": loaded[name]} for name, values in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer frames and repeats)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args()
    frames = args.frames or (60 if args.quick else 200)
    repeats = args.repeats or (2 if args.quick else 3)
    warmup = max(5, frames // 8)
    info = print_header("adapters.deepfacelive: stand-in DFL pipeline, CPU")
    print("pipeline: DFL's live pipeline (stand-in), 640x480, DFM 224 20ms preset; %d frames, %d warm-up,"
          " median of %d repeats" % (frames, warmup, repeats))
    with tempfile.TemporaryDirectory(prefix="bench_adapters_") as tmp:
        work = Path(tmp)
        pipeline = bench_pipeline(work, frames, warmup, repeats)
        convert = bench_convert(work, 40 if args.quick else 150)
    imports = bench_worker_import(3 if args.quick else 7)
    base = pipeline["dfl"]["fps_median"]
    print("\n%-26s %12s %10s  %s" % ("variant", "frames/s", "speed-up", "threads/session"))
    for name, row in pipeline.items():
        print("%-26s %12.2f %9.2fx  %s" % (name, row["fps_median"], row["fps_median"] / base, row["threads"]))
    print("\nDFMModel.convert alone (same tuned session, interleaved calls, median ms):")
    print("%-32s %10s %10s" % ("input", "DFL", "fast path"))
    for label, row in convert.items():
        print("%-32s %10.2f %10.2f" % (label, row["dfl_ms"], row["fast_ms"]))
    print("\nWorker start-up: a fresh interpreter importing the backend package, as every spawned DFL worker"
          " does (median wall s):")
    for name, row in imports.items():
        print("%-26s %8.3f s   onnxruntime run: %s" % (name, row["wall_s"], bool(row["onnxruntime_loaded"])))
    write_json(args.json, {"machine": info, "frames": frames, "warmup": warmup, "repeats": repeats,
                           "pipeline": pipeline, "convert": convert, "worker_import": imports})
    return 0


if __name__ == "__main__":
    sys.exit(main())
