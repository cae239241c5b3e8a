"""Zero-edit launch of DeepFaceLive with dfl_perf, and the ``dfl-perf dfl`` command.

``dfl_main(["PATH/TO/DFL/main.py", "run", "DeepFaceLive", "--userdata-dir", DIR])``:

1. writes the settings to ``DFL_PERF_DFL_CONFIG`` and puts the adapter's ``_site`` folder (a
   ``sitecustomize.py``) first on ``PYTHONPATH``. Every process multiprocessing spawns inherits
   both, and Python imports ``sitecustomize`` at start-up (the ``site`` module's documented hook),
   so each DFL worker installs the import hook before it unpickles its worker class;
2. installs the same hook in this process;
3. runs DFL's ``main.py`` as ``__main__`` with DFL's arguments, with its folder first on
   ``sys.path``, as ``python main.py ...`` would.

Spawned children re-run DFL's ``main.py`` as ``__mp_main__``, not this launcher, which is why the
hand-over goes through the environment. Without ``main.py`` the command runs ``meter`` instead:
``dfl_main(["meter", DIR, "--format", "prometheus"])`` prints one view of all modules' numbers.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from typing import List, Optional

from dfl_perf.adapters.deepfacelive._install import install, uninstall
from dfl_perf.adapters.deepfacelive.config import DFLConfig

__all__ = ["dfl_main", "launch", "config_from_args"]

USAGE = """dfl-perf dfl [options] PATH/TO/DeepFaceLive/main.py [DFL arguments ...]
       dfl-perf dfl meter DIR [--format json|csv|prometheus] [--out PATH] [--startup]"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfl-perf dfl", usage=USAGE,
                                description="Run DeepFaceLive with dfl_perf (no edits to DeepFaceLive).")
    p.add_argument("--model-processes", type=int, default=None, metavar="N",
                   help="DFL modules running models at once; the CPU cores are split between them (default 3)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="intra-op threads per session (overrides the split)")
    p.add_argument("--spinning", action="store_true", help="keep onnxruntime's busy-waiting threads (off by default)")
    p.add_argument("--no-cpu-fallback", action="store_true",
                   help="fail when the CUDA/DirectML provider cannot load instead of using the CPU")
    p.add_argument("--cudnn-search", choices=("HEURISTIC", "DEFAULT", "EXHAUSTIVE"), default=None,
                   help="cuDNN convolution search (default HEURISTIC)")
    p.add_argument("--tensorrt", action="store_true", help="use TensorRT (engine cache on disk) before CUDA when installed")
    p.add_argument("--no-optimized-cache", action="store_true", help="do not keep optimized models on disk")
    lean = p.add_mutually_exclusive_group()
    lean.add_argument("--lean-weights", action="store_true",
                      help="load every model from a copy with its weights in a separate file, memory-mapped: "
                           "less memory and a faster load (made once per model; needs the onnx package). "
                           "Default: models of 64 MB or more on the CPU (DFMs)")
    lean.add_argument("--no-lean-weights", action="store_true", help="load every model as it is")
    p.add_argument("--cache-dir", default=None, metavar="DIR", help="disk cache folder (default: dfl_perf's user cache)")
    p.add_argument("--no-fast-dfm", action="store_true", help="keep DeepFaceLive's own DFMModel.convert")
    p.add_argument("--no-meter", action="store_true", help="keep DeepFaceLive's own per-module FPS meter")
    p.add_argument("--meter-dir", default=None, metavar="DIR", help="write every module's numbers there (see 'meter')")
    p.add_argument("--no-lazy-imports", action="store_true",
                   help="import onnxruntime/onnx eagerly in every worker, as DeepFaceLive does")
    p.add_argument("--no-lazy-heap", action="store_true",
                   help="write DeepFaceLive's 2 GiB frame heap full of zeros at start, as it does")
    p.add_argument("--no-forkserver", action="store_true",
                   help="spawn every worker as a fresh interpreter, as DeepFaceLive does (default on Linux and "
                        "macOS: fork them from one process that imported DeepFaceLive's backend once)")
    p.add_argument("--forkserver-late", action="store_true",
                   help="start the forkserver at the first worker's start (default: at launch, so that it imports "
                        "numpy, OpenCV and onnxruntime while DeepFaceLive starts)")
    p.add_argument("--no-forkserver-backend", action="store_true",
                   help="the forkserver imports the third-party libraries only; each worker imports "
                        "DeepFaceLive's backend after its fork")
    p.add_argument("--restart-process", action="store_true",
                   help="restart a module in a new process on a model/device change, as DeepFaceLive does "
                        "(default: in the same process, without importing everything again)")
    p.add_argument("--startup-dir", default=None, metavar="DIR",
                   help="every process writes its start-up timeline there (default: --meter-dir)")
    p.add_argument("--startup-report", action="store_true",
                   help="print each module's start-up timeline (spawned, imports, sessions, first frames) at exit")
    p.add_argument("--memory-budget", default=None, metavar="SIZE",
                   help="per DFL process (2G, 1500M, 25%%): dfl_perf's buffers kept within it, a warning when the "
                        "process's memory nears it, idle buffers freed past 95%%")
    p.add_argument("--remote-swap", default=None, metavar="URL",
                   help="a dfl-perf serve server: FaceSwapDFM's model list offers its model, swapped there")
    p.add_argument("--remote-codec", choices=("raw", "jpeg"), default=None, help="how faces travel (default raw)")
    p.add_argument("--token", default=None, help="the server's token (default: DFL_PERF_SERVE_TOKEN)")
    p.add_argument("--no-fast-merge", action="store_true", help="keep DeepFaceLive's own CPU merge in FaceMerger")
    p.add_argument("--float-merged", action="store_true",
                   help="pass the merged frame on as float32, as DeepFaceLive does (default: uint8, same levels)")
    p.add_argument("--no-fast-detector", action="store_true", help="keep YoloV5Face's own pre- and post-processing")
    p.add_argument("--no-thread-pools", action="store_true",
                   help="leave OpenCV, numexpr and BLAS thread pools at their defaults (all cores, in every worker)")
    p.add_argument("--frame-heap-mb", type=int, default=None, metavar="N",
                   help="a fixed shared frame heap of N MB (default: sized by need, up to DeepFaceLive's 2048 MB); "
                        "for odd set-ups such as several sources or 4K")
    p.add_argument("--no-frame-heap", action="store_true", help="keep DeepFaceLive's 2048 MB frame heap, all of it resident")
    p.add_argument("--no-malloc-reuse", action="store_true",
                   help="leave glibc's malloc returning freed blocks to the system (each frame faults its memory in again)")
    p.add_argument("--config", default=None, metavar="JSON", help="settings as a JSON object (options above override it)")
    p.add_argument("main_py", metavar="main.py", help="DeepFaceLive's main.py")
    p.add_argument("dfl_args", nargs=argparse.REMAINDER, help="arguments for DeepFaceLive's main.py")
    return p


def config_from_args(args: argparse.Namespace) -> DFLConfig:
    """The DFLConfig for parsed ``dfl-perf dfl`` options."""
    data = DFLConfig.from_json(args.config).__dict__.copy() if args.config else {}
    overrides = {
        "model_processes": args.model_processes, "intra_op_threads": args.threads,
        "cudnn_conv_algo_search": args.cudnn_search, "cache_dir": args.cache_dir, "meter_dir": args.meter_dir,
        "startup_dir": args.startup_dir,
        "memory_budget": args.memory_budget,
        "remote_swap": args.remote_swap, "remote_codec": args.remote_codec,
        "frame_heap_mb": args.frame_heap_mb,
    }
    data.update({k: v for k, v in overrides.items() if v is not None})
    for flag, key, value in ((args.spinning, "allow_spinning", True), (args.no_cpu_fallback, "cpu_fallback", False),
                             (args.tensorrt, "tensorrt", True), (args.no_optimized_cache, "optimized_model_cache", False),
                             (args.lean_weights, "lean_weights", True),
                             (args.no_lean_weights, "lean_weights", False),
                             (args.no_fast_dfm, "fast_dfm", False), (args.no_meter, "meter", False),
                             (args.no_lazy_imports, "lazy_imports", ()),
                             (args.restart_process, "restart_in_process", False),
                             (args.no_lazy_heap, "lazy_heap", False),
                             (args.no_forkserver, "forkserver", False),
                             (args.forkserver_late, "forkserver_at_launch", False),
                             (args.no_forkserver_backend, "forkserver_backend", False),
                             (args.no_fast_merge, "fast_merge", False),
                             (args.float_merged, "merged_uint8", False), (args.no_fast_detector, "fast_detector", False),
                             (args.no_thread_pools, "thread_pools", False), (args.no_frame_heap, "frame_heap", False),
                             (args.no_malloc_reuse, "malloc_reuse", False)):
        if flag:
            data[key] = value
    for key in ("meter_dir", "startup_dir"):
        if data.get(key):
            data[key] = os.path.abspath(data[key])
    return DFLConfig.from_dict(data)


def launch(main_py: str, dfl_args: List[str], config: Optional[DFLConfig] = None) -> int:
    """Run DeepFaceLive's ``main.py`` in this process with dfl_perf installed here and in its workers."""
    path = os.path.abspath(main_py)
    if not os.path.isfile(path):
        raise FileNotFoundError("DeepFaceLive main.py not found: %s" % path)
    config = config or DFLConfig()
    install(config, propagate=True)
    _start_forkserver(config)
    saved_argv, saved_path0 = list(sys.argv), list(sys.path)
    sys.argv = [path] + list(dfl_args)
    sys.path.insert(0, os.path.dirname(path))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path0
        uninstall()
        _stop_forkserver()
    return 0


def _start_forkserver(config: DFLConfig) -> None:
    """The forkserver starts now, importing the workers' libraries while DFL's main.py starts (``forkserver``)."""
    if not (config.forkserver and config.forkserver_at_launch):
        return
    from dfl_perf.adapters.deepfacelive.forkserver import start_server

    try:
        start_server()
    except Exception as exc:  # DFL starts anyway; its first worker starts the server (or spawns)
        sys.stderr.write("dfl-perf dfl: the forkserver did not start at launch: %r\n" % (exc,))


def _stop_forkserver() -> None:
    forkserver = sys.modules.get("dfl_perf.adapters.deepfacelive.forkserver")
    if forkserver is not None:
        forkserver.stop_server()


def _meter_main(argv: List[str]) -> int:
    from dfl_perf.adapters.deepfacelive.meter import write_meter_view

    p = argparse.ArgumentParser(prog="dfl-perf dfl meter", description="One view of every DFL module's numbers.")
    p.add_argument("meter_dir", help="the --meter-dir given to the launch")
    p.add_argument("--format", choices=("json", "csv", "prometheus"), default=None,
                   help="default json (with --startup: a text table)")
    p.add_argument("--out", default=None, help="write to this file as well as stdout")
    p.add_argument("--startup", action="store_true",
                   help="each module's start-up timeline instead (text, or JSON with --format json)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if args.startup:
            sys.stdout.write(_startup_view(args.meter_dir, args.format, args.out))
            return 0
        sys.stdout.write(write_meter_view(args.meter_dir, args.out, args.format or "json"))
    except FileNotFoundError as exc:
        sys.stderr.write("dfl-perf dfl meter: %s\n" % exc)
        return 2
    return 0


def _startup_view(folder: str, fmt: str, out: Optional[str]) -> str:
    import json

    from dfl_perf.adapters.deepfacelive.startup import collect_startup, format_startup

    view = collect_startup(folder)
    text = json.dumps(view, indent=1) + "\n" if fmt == "json" else format_startup(view)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
    return text


def _launch_with_report(args: argparse.Namespace, config: DFLConfig) -> int:
    """``launch`` plus, with ``--startup-report``, the start-up table on stderr at exit."""
    if not args.startup_report:
        return launch(args.main_py, args.dfl_args, config)
    import shutil
    import tempfile

    temporary = None
    if not config.startup_folder():
        temporary = tempfile.mkdtemp(prefix="dfl_perf_startup_")
        config.startup_dir = temporary
    try:
        code = launch(args.main_py, args.dfl_args, config)
        try:
            sys.stderr.write(_startup_view(config.startup_folder() or "", "text", None))
        except FileNotFoundError:
            sys.stderr.write("dfl-perf dfl: no start-up timeline was written\n")
        return code
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def dfl_main(argv: List[str]) -> int:
    """Entry point of ``dfl-perf dfl`` and ``python -m dfl_perf.adapters.deepfacelive``; returns the exit code."""
    argv = list(argv)
    if argv and argv[0] == "meter":
        return _meter_main(argv[1:])
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        try:
            config = config_from_args(args)
        except ValueError as exc:
            parser.error(str(exc))
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.token:  # DFL's spawned workers inherit it; it never goes into the settings
        os.environ["DFL_PERF_SERVE_TOKEN"] = args.token
    try:
        return _launch_with_report(args, config)
    except FileNotFoundError as exc:
        sys.stderr.write("dfl-perf dfl: %s\n" % exc)
        return 2
