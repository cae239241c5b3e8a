"""DeepFaceLive's REAL backend, headless, plain vs through dfl_perf: FPS, CPU per module, memory, start-up.

Run: python benchmarks/bench_dfl_real.py --dfl PATH/TO/DeepFaceLive [--dfm-mb 2,200] [--repeats 3]
         [--variants plain,launched,install] [--resolution 640x480] [--fps-s 20] [--switch]
         [--json out.json]

It drives YOUR DeepFaceLive checkout's own backend (``apps.DeepFaceLive.backend``: the 11 backend
hosts, their spawned worker processes, connections and 2 GiB weak heap, built as DFL's window
builds them, with no Qt): FileSource (a video file, not real-time, auto-rewind) -> FaceDetector
(YoloV5) -> FaceMarker (Google FaceMesh) -> FaceAligner -> FaceSwapDFM (a DFM-shaped 224 px stand-in
from dfl_perf.facepipe.standin, 2 MB or 200 MB of weights) -> FrameAdjuster -> FaceMerger ->
StreamOutput, every module on the CPU device, DFL's default settings otherwise. StreamOutput shows
no window (headless), so it only counts frames. The app process (benchmarks/_dfl_real_app.py) is
ours; it contains no DFL code. Variants, alternated in each repeat, each in a fresh process:

- ``plain``: ``python _dfl_real_app.py`` (DFL as it is);
- ``launched``: ``python -m dfl_perf.adapters.deepfacelive _dfl_real_app.py`` (``dfl-perf dfl``);
- ``install``: the one line ``dp.install()`` at the top of the app's main file.

Each run reports: time from start to the first frame and to the first swapped frame at
StreamOutput's input, a per-module timeline (spawned, on_start done, first frame in, first frame
out; launched runs add dfl_perf's own start-up report from inside each worker), delivered FPS over
``--fps-s`` seconds after a settle, CPU ms per delivered frame per module (from /proc), the peak
of the whole app's summed PSS (main process, workers, ffmpeg), and with ``--switch`` the time from
selecting another DFM in FaceSwapDFM to the first frame swapped by it at the output (DFL restarts
the worker). A first, unmeasured run saves DFL's settings (devices, model, file) as a user would;
one unmeasured run per variant warms the disk caches.

Needs in the Python that runs DFL: numpy, opencv-python(-headless), onnxruntime, onnx, numexpr,
h5py (DFL's own imports; PyQt6 is not needed), dfl_perf (pip install -e .), and ffmpeg + ffprobe
on PATH (DFL's FileSource decodes video with them). A checkout that lacks
``modelhub/onnx/YoloV5Face/YoloV5Face.onnx`` (28 MB: some copies drop files of 4 MB and more) is
run from an overlay folder of links with a stand-in of that model's shape and size
(benchmarks/_dfl_real_inputs.py; its cost is an estimate); the report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from _common import REPO, median, print_header, write_json

HERE = Path(__file__).resolve().parent
APP = HERE / "_dfl_real_app.py"
YOLO = Path("modelhub") / "onnx" / "YoloV5Face" / "YoloV5Face.onnx"
VARIANTS = ("plain", "launched", "install")


# ------------------------------------------------------------------------------------------- inputs

def overlay_dfl(dfl: Path, work: Path, width: int, height: int, yolo_width: float = 1.0) -> Dict[str, Any]:
    """The DFL folder to run: the checkout itself, or an overlay of links plus a stand-in YoloV5Face."""
    if not (dfl / "apps" / "DeepFaceLive" / "backend" / "__init__.py").is_file():
        raise SystemExit("not a DeepFaceLive checkout (no apps/DeepFaceLive/backend): %s" % dfl)
    if (dfl / YOLO).is_file():
        return {"path": str(dfl), "yolov5face": "DFL's own"}
    from _dfl_real_inputs import build_yolov5face_standin, face_box_in_window

    root = work / "dfl_overlay"
    if root.exists():
        shutil.rmtree(root)
    _link_tree(dfl, root, YOLO.parent)
    model = build_yolov5face_standin(face_box_in_window(width, height), width=yolo_width)
    (root / YOLO).write_bytes(model.SerializeToString())
    return {"path": str(root), "yolov5face": "stand-in (%.1f MB, same interface; cost estimated, channels x%g)"
            % ((root / YOLO).stat().st_size / 1e6, yolo_width)}


def _link_tree(src: Path, dst: Path, real_dir: Path) -> None:
    """dst mirrors src with symbolic links, except the folders on the way to ``real_dir``, which are real."""
    dst.mkdir(parents=True)
    head = real_dir.parts[0] if real_dir.parts else None
    for entry in src.iterdir():
        if entry.name == head:
            _link_tree(entry, dst / entry.name, Path(*real_dir.parts[1:]))
        else:
            (dst / entry.name).symlink_to(entry)


def prepare_models(userdata: Path, dfm_mbs: List[float], switch: bool) -> Dict[float, List[str]]:
    """DFM stand-ins in userdata/dfm_models: per size, the model used and (with --switch) one more to switch to."""
    from dfl_perf.facepipe.standin import save_dfm_standin

    folder = userdata / "dfm_models"
    folder.mkdir(parents=True, exist_ok=True)
    names: Dict[float, List[str]] = {}
    for mb in dfm_mbs:
        names[mb] = []
        for seed in ((0, 1) if switch else (0,)):
            name = "standin_%gmb_s%d" % (mb, seed)
            path = folder / (name + ".dfm")
            if not path.exists():
                save_dfm_standin(str(path), resolution=224, cost="20ms", seed=seed, dense_mb=mb)
            names[mb].append(name)
    return names


# ------------------------------------------------------------------------------------------- runs

def _command(variant: str, spec_path: Path, python: str) -> List[str]:
    """``launched:--flag+--flag`` runs the launcher with those options (one cut off at a time, say)."""
    if variant.split(":")[0] == "launched":
        flags = [f for f in variant.partition(":")[2].split("+") if f]
        return [python, "-m", "dfl_perf.adapters.deepfacelive"] + flags + [str(APP), str(spec_path)]
    return [python, str(APP), str(spec_path)]


def _error_part(stderr: str, size: int = 3000) -> str:
    """The first traceback of a run's stderr (DFL's workers print more at shutdown, burying it), else its tail."""
    at = stderr.find("Traceback (most recent call last)")
    return stderr[at:at + size] if at >= 0 else stderr[-size:]


def run_app(variant: str, spec: Dict[str, Any], work: Path, python: str, tag: str) -> Dict[str, Any]:
    spec = dict(spec, out=str(work / ("result_%s.json" % tag)))
    spec_path = work / ("spec_%s.json" % tag)
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, DFL_PERF_CACHE_DIR=str(work / "cache"))
    for name in ("DFL_PERF_DFL_CONFIG", "ORT_DEVICES_INITIALIZED", "ORT_DEVICES_COUNT", "DFL_BENCH_INSTALL"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(REPO)  # this checkout's dfl_perf, whatever the interpreter has installed
    if variant == "install":
        env["DFL_BENCH_INSTALL"] = "1"
    if spec.get("startup_dir") and variant != "plain":
        env["DFL_PERF_STARTUP_DIR"] = spec["startup_dir"]
    started = time.monotonic()
    done = subprocess.run(_command(variant, spec_path, python), cwd=str(HERE), env=env, capture_output=True,
                          text=True, timeout=spec.get("timeout_s", 240) + 120)
    wall = time.monotonic() - started
    out = Path(spec["out"])
    if not out.exists():
        raise RuntimeError("%s run %s wrote no result (exit %s):\n%s%s" % (variant, tag, done.returncode,
                                                                          done.stdout[-3000:], _error_part(done.stderr)))
    result = json.loads(out.read_text())
    result["wall_s"] = wall
    result["exit_code"] = done.returncode
    if done.returncode != 0:
        result["stderr_tail"] = done.stderr[-2000:]
    return result


def configure(spec: Dict[str, Any], work: Path, python: str) -> Path:
    """One plain run that sets the controls a user would set; DFL saves them; returns the saved settings file."""
    result = run_app("plain", dict(spec, fps_s=0, switch_models=[]), work, python, "configure")
    if result["events"]["first_swapped_out_s"] is None:
        raise RuntimeError("DFL never delivered a swapped frame while being configured: %s"
                           % json.dumps(result, default=str)[-3000:])
    saved = Path(spec["userdata"]) / "settings" / "states.dat"
    keep = work / ("states_%s.dat" % spec["model"])
    shutil.copyfile(saved, keep)
    return keep


def measured_run(variant: str, spec: Dict[str, Any], states: Path, work: Path, python: str, tag: str) -> Dict[str, Any]:
    shutil.copyfile(states, Path(spec["userdata"]) / "settings" / "states.dat")  # every run starts from the same settings
    startup_dir = work / ("startup_%s" % tag)
    if startup_dir.exists():
        shutil.rmtree(startup_dir)
    result = run_app(variant, dict(spec, startup_dir=str(startup_dir)), work, python, tag)
    if startup_dir.is_dir():
        try:
            from dfl_perf.adapters.deepfacelive.startup import collect_startup
        except ImportError:  # a dfl_perf without the start-up report
            return result
        result["startup_report"] = collect_startup(startup_dir)
    return result


_FLOOR_CHILD = "import numpy, cv2, sys; sys.stdout.write('ok')"


def spawn_floor(python: str, processes: int, repeats: int) -> Dict[str, Any]:
    """The floor for any launcher that starts DFL's workers as fresh interpreters: ``processes`` Pythons
    started at once, each importing numpy and OpenCV (what every DFL worker needs), until the last is done."""
    import concurrent.futures

    times = []
    for _ in range(repeats):
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(processes) as pool:
            list(pool.map(lambda _: subprocess.run([python, "-c", _FLOOR_CHILD], capture_output=True, check=True),
                          range(processes)))
        times.append(time.monotonic() - started)
    return {"processes": processes, "seconds": median(times), "runs": [round(t, 2) for t in times]}


# ------------------------------------------------------------------------------------------- report

def _fmt(value: Optional[float], spec: str = "%.2f") -> str:
    return "-" if value is None else spec % value


def frame_levels(a_path: str, b_path: str) -> int:
    """Largest difference between two saved merged frames in 8-bit levels (DFL keeps them float32 0..1; launched, uint8)."""
    import numpy as np

    def levels(image):  # a float32 frame as DFL shows and streams it (x * 255, clipped, truncated)
        if image.dtype == np.uint8:
            return image.astype(np.int16)
        return np.clip(image.astype(np.float32) * np.float32(255.0), 0, 255).astype(np.uint8).astype(np.int16)

    a, b = np.load(a_path), np.load(b_path)
    if a.shape != b.shape:
        return 255
    return int(np.abs(levels(a) - levels(b)).max())


def same_frames(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Optional[int]]:
    """Per variant: the largest difference from plain's merged frames (same frame numbers, same repeat)."""
    plain = runs.get("plain", [])
    out: Dict[str, Optional[int]] = {}
    for variant, results in runs.items():
        worst = None
        for base, other in zip(plain, results):
            for n, path in other.get("kept_frames", {}).items():
                ref = base.get("kept_frames", {}).get(n)
                if ref:
                    levels = frame_levels(ref, path)
                    worst = levels if worst is None else max(worst, levels)
        out[variant] = worst
    return out


def summarize(runs: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for variant, results in runs.items():
        ok = [r for r in results if r["events"]["first_swapped_out_s"] is not None]
        row: Dict[str, Any] = {"runs": len(results), "ok": len(ok)}
        if ok:
            row["first_swapped_s"] = median(r["events"]["first_swapped_out_s"] for r in ok)
            row["first_swapped_runs"] = [round(r["events"]["first_swapped_out_s"], 2) for r in ok]
            row["first_frame_s"] = median(r["events"]["first_frame_out_s"] for r in ok)
            row["peak_pss_mb"] = median(r["peak_pss_mb"] for r in ok)
            fps = [r["fps"] for r in ok if r.get("fps") and r["fps"]["fps"]]
            if fps:
                row["fps"] = median(f["fps"] for f in fps)
                row["fps_runs"] = [round(f["fps"], 2) for f in fps]
                modules = sorted({m for f in fps for m in f["cpu_ms_per_frame"]})
                row["cpu_ms_per_frame"] = {m: median(f["cpu_ms_per_frame"][m] for f in fps
                                                     if f["cpu_ms_per_frame"].get(m) is not None) for m in modules
                                           if any(f["cpu_ms_per_frame"].get(m) is not None for f in fps)}
            switches = [s["switch_s"] for r in ok for s in r.get("switches", []) if s["switch_s"] is not None]
            if switches:
                row["switch_s"] = median(switches)
                row["switch_runs"] = [round(s, 2) for s in switches]
        out[variant] = row
    return out


def print_summary(title: str, summary: Dict[str, Any]) -> None:
    base = summary.get("plain", {})
    print("\n%s" % title)
    print("%-32s %12s %7s %11s %7s %7s %11s %7s %9s" % ("variant", "first swap s", "ratio", "first frame",
                                                        "FPS", "ratio", "peak PSS MB", "ratio", "switch s"))
    def ratio(row: Dict[str, Any], key: str) -> str:
        if row.get(key) is None or not base.get(key):
            return "-"
        return "%.2fx" % (row[key] / base[key])

    for variant, row in summary.items():
        print("%-32s %12s %7s %11s %7s %7s %11s %7s %9s" % (
            variant, _fmt(row.get("first_swapped_s")), ratio(row, "first_swapped_s"), _fmt(row.get("first_frame_s")),
            _fmt(row.get("fps")), ratio(row, "fps"), _fmt(row.get("peak_pss_mb"), "%.0f"), ratio(row, "peak_pss_mb"),
            _fmt(row.get("switch_s"))))
    modules = sorted({m for row in summary.values() for m in row.get("cpu_ms_per_frame", {})})
    if modules:
        print("CPU ms per delivered frame: " + ", ".join(summary))
        for m in modules:
            print("  %-22s " % m + "  ".join("%8s" % _fmt(row.get("cpu_ms_per_frame", {}).get(m), "%.1f")
                                              for row in summary.values()))


def print_timeline(result: Dict[str, Any]) -> None:
    print("  timeline of one %s run (s from app start): module: spawned / on_start done / first in / first out"
          % result["variant"])
    for name, entries in result["timeline"].items():
        cells = []
        for e in entries:
            cells.append("%s/%s/%s/%s" % tuple(_fmt(e.get(k)) for k in ("spawn_s", "started_s", "first_in_s",
                                                                         "first_out_s")))
        print("    %-16s %s" % (name, "  then ".join(cells)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dfl", required=True, help="DeepFaceLive checkout (the folder with main.py)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs DFL (default: this one)")
    parser.add_argument("--dfm-mb", default="200", help="DFM stand-in weights in MB, comma-separated (default 200)")
    parser.add_argument("--variants", default="plain,launched",
                        help="comma-separated: plain, launched, install; launched:--opt+--opt adds launcher options "
                             "(e.g. launched:--no-forkserver)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolution", default="640x480")
    parser.add_argument("--fps-s", type=float, default=15.0, help="seconds of FPS measurement per run (0: none)")
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--switch", action="store_true", help="also switch the DFM model and time it")
    parser.add_argument("--work", default=None, help="work folder (default: a new temporary folder)")
    parser.add_argument("--timeout-s", type=float, default=240.0)
    parser.add_argument("--floor", type=int, default=9, metavar="N",
                        help="also time N interpreters importing numpy + OpenCV at once (the spawn floor; 0: skip)")
    parser.add_argument("--yolo-width", type=float, default=1.0, metavar="F",
                        help="the YoloV5Face stand-in's channels x F (a checkout without the model; 0.5: about the "
                             "detector cost of issue 17's DFL figures; default 1: YOLOv5s-face's published cost)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(v.split(":")[0] for v in variants) - set(VARIANTS))
    if unknown:
        parser.error("unknown variants %s; use %s" % (unknown, ", ".join(VARIANTS)))
    try:
        width, height = (int(v) for v in args.resolution.lower().split("x"))
    except ValueError:
        parser.error("--resolution must be WIDTHxHEIGHT, got %r" % args.resolution)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            raise SystemExit("%s not found on PATH: DeepFaceLive's FileSource needs it" % tool)
    info = print_header("DeepFaceLive's real backend, headless, CPU")
    work = Path(args.work) if args.work else Path(__import__("tempfile").mkdtemp(prefix="bench_dfl_real_"))
    work.mkdir(parents=True, exist_ok=True)
    dfl = overlay_dfl(Path(args.dfl).resolve(), work, width, height, args.yolo_width)
    userdata = work / "userdata"
    from _dfl_real_inputs import write_clip

    from dfl_perf.facepipe.models import (
        face_photo_path,  # the embedded photo: nothing outside the repo needed
    )

    video = write_clip(work / ("clip_%dx%d.mp4" % (width, height)), face_photo_path(), width, height)
    dfm_mbs = [float(v) for v in args.dfm_mb.split(",") if v]
    models = prepare_models(userdata, dfm_mbs, args.switch)
    print("DFL: %s (YoloV5Face: %s); clip %dx%d; work folder %s" % (args.dfl, dfl["yolov5face"], width, height, work))
    payload: Dict[str, Any] = {"machine": info, "dfl": dfl, "args": vars(args), "results": {}}
    for mb in dfm_mbs:
        names = models[mb]
        spec = {"dfl": dfl["path"], "userdata": str(userdata), "video": str(video), "model": names[0],
                "fps_s": args.fps_s, "settle_s": args.settle_s, "timeout_s": args.timeout_s,
                "switch_models": names[1:] + names[:1] if args.switch else [], "keep_frames": [10, 40]}
        states = configure(spec, work, args.python)
        for variant in variants:  # one unmeasured run each: warm disk caches and page cache
            tag = "warm_%s_%g" % (variant.replace(":", "_").replace("-", "").replace("+", "_"), mb)
            measured_run(variant, spec, states, work, args.python, tag)
        runs: Dict[str, List[Dict[str, Any]]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else list(reversed(variants))
            for variant in order:
                tag = "%s_%g_%d" % (variant.replace(":", "_").replace("-", "").replace("+", "_"), mb, repeat)
                result = measured_run(variant, spec, states, work, args.python, tag)
                result["variant"] = variant
                runs[variant].append(result)
                ev = result["events"]
                fps = result.get("fps") or {}
                print("  %gMB repeat %d %-32s first swapped frame %6s s  FPS %6s  peak PSS %5.0f MB  switch %s"
                      % (mb, repeat + 1, variant, _fmt(ev["first_swapped_out_s"]), _fmt(fps.get("fps")),
                         result["peak_pss_mb"], [_fmt(s["switch_s"]) for s in result.get("switches", [])]))
        summary = summarize(runs)
        levels = same_frames(runs)
        for variant in summary:
            summary[variant]["max_levels_vs_plain"] = levels.get(variant)
        print_summary("DFM stand-in with %g MB of weights (medians of %d)" % (mb, args.repeats), summary)
        print("merged frames 10 and 40 vs plain's, largest difference in 8-bit levels: "
              + ", ".join("%s %s" % (v, "-" if lv is None else lv) for v, lv in levels.items()))
        for variant in variants:
            if runs[variant]:
                print_timeline(runs[variant][-1])
        payload["results"]["%g" % mb] = {"summary": summary, "runs": runs}
    if args.floor > 0:
        floor = spawn_floor(args.python, args.floor, max(3, args.repeats))
        payload["spawn_floor"] = floor
        print("\nspawn floor: %d fresh interpreters importing numpy + OpenCV at once: %.2f s (median of %s)"
              % (floor["processes"], floor["seconds"], floor["runs"]))
    write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
