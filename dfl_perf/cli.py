"""The ``dfl-perf`` command. Each subcommand imports its implementation only when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

__all__ = ["main"]


def _doctor(args: argparse.Namespace) -> int:
    from dfl_perf import doctor

    info = doctor.collect(measure_imports=not args.no_import_cost, dfl_path=args.dfl)
    if args.json:
        info["recommendations"] = doctor.recommendations(info)
        print(json.dumps(info, indent=2, default=str))
    else:
        print(doctor.format_report(info))
    return 0


def _resolution(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError("resolution must look like 640x480, got %r" % text) from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError("resolution too small: %r" % text)
    return (w, h)


def _benchmark(args: argparse.Namespace) -> int:
    from dfl_perf.benchmark import BenchmarkOptions, run_benchmark
    from dfl_perf.benchmark.report import format_table, plot

    chosen = {k: v for k, v in (("resolution", args.resolution), ("duration", args.duration),
                                 ("repeats", args.repeats), ("model", args.model), ("source", args.source),
                                 ("provider", args.provider), ("faces", args.faces), ("dfm_cost", args.dfm_cost),
                                 ("progress", not args.no_progress)) if v is not None}
    options = BenchmarkOptions.quick(**chosen) if args.quick else BenchmarkOptions(**chosen)
    report = run_benchmark(options)
    print(format_table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        print("wrote %s" % args.json)
    if args.plot:
        plot(report, args.plot)
        print("wrote %s" % args.plot)
    if not report["outputs_match"]:
        print("FAILED: optimized output frames differ from the baseline's", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.ray is not None and args.remote:
        print("dfl-perf run: --remote and --ray do not go together: --ray runs the model in its own workers",
              file=sys.stderr)
        return 2
    if args.ray is not None:  # Ray code lives in dfl_perf.cluster, imported only here
        from dfl_perf.cluster.command import main_args as ray_main

        return ray_main(args)
    if len(args.source) > 1:
        print("dfl-perf run: several --source need --ray (a local run takes one)", file=sys.stderr)
        return 2
    args.source = args.source[0]
    from dfl_perf.headless import main_args

    return main_args(args)


def _soak(args: argparse.Namespace) -> int:
    from dfl_perf.soak import SoakOptions, format_verdict, run_soak

    options = SoakOptions(duration=args.duration, fps=args.fps, dfm_cost=args.dfm_cost)
    report = run_soak(options, progress=not args.no_progress)
    print(format_verdict(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2, default=str)
        print("wrote %s" % args.json)
    return 0 if report["verdict"]["passed"] else 1


def _models(argv: List[str]) -> int:
    from dfl_perf.facepipe.models import models_main

    return models_main(argv)


def _serve(argv: List[str]) -> int:
    from dfl_perf.serve.command import serve_main

    return serve_main(argv)


def _dfl(argv: List[str]) -> int:
    from dfl_perf.adapters.deepfacelive import dfl_main

    _warn_install_problems()
    return dfl_main(argv)


def _warn_install_problems() -> None:
    """Say once, before a long job, when the onnxruntime install is wrong for this machine."""
    import logging

    from dfl_perf.devices import warn_install_problems

    logging.basicConfig(format="dfl-perf: %(message)s")
    warn_install_problems()


#: subcommands that parse their own arguments (everything after the command name is theirs)
_PASSTHROUGH = {"models": _models, "dfl": _dfl, "serve": _serve}


def _build_parser() -> argparse.ArgumentParser:
    from dfl_perf import __version__

    parser = argparse.ArgumentParser(prog="dfl-perf", description="Faster real-time ONNX face swap (DeepFaceLive and peers).")
    parser.add_argument("--version", action="version", version="dfl_perf " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="report Python, onnxruntime, providers, GPUs, cores, and what to change")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--dfl", metavar="PATH", help="DeepFaceLive checkout to inspect")
    p.add_argument("--no-import-cost", action="store_true", help="skip measuring heavy import times")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("benchmark", help="DFL's way vs dfl_perf's on the same frames and models: the before/after table")
    p.add_argument("--model", metavar="PATH.dfm", help="a real DFM model (default: the DFM-shaped stand-in)")
    p.add_argument("--source", metavar="VIDEO|INDEX", help="a video file or camera index (default: generated clip)")
    p.add_argument("--resolution", type=_resolution, metavar="WxH", help="frame size (default 640x480)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds of 30 fps frames per run (default 4)")
    p.add_argument("--repeats", type=int, help="runs per mode; medians are reported (default 3)")
    p.add_argument("--faces", type=int, help="faces per frame in the generated clip (default 1)")
    p.add_argument("--dfm-cost", choices=("5ms", "20ms", "60ms"), help="stand-in DFM cost (default 20ms)")
    p.add_argument("--provider", help="execution provider, e.g. cpu, cuda, dml (default: best available)")
    p.add_argument("--quick", action="store_true", help="a short run (under 2 minutes on 2 cores)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--plot", metavar="PATH.png", help="plot FPS and latency over time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("run", help="headless face swap: a DFM on a video file or camera, written to a video")
    p.add_argument("--model", metavar="PATH.dfm",
                   help="the DFM (or DFM-shaped ONNX) model (default: the DFM-shaped stand-in, not a real face swap)")
    p.add_argument("--remote", metavar="URL", help="swap on a dfl-perf serve server instead of a local model")
    p.add_argument("--token", help="the server's token (default: DFL_PERF_SERVE_TOKEN)")
    p.add_argument("--remote-codec", choices=("raw", "jpeg"), default="raw", help="how faces travel (default raw)")
    p.add_argument("--source", required=True, action="append", metavar="VIDEO|INDEX",
                   help="a video file, or a camera index (with --ray: repeat it, or give a folder)")
    p.add_argument("--output", metavar="OUT.mp4", help="the video to write (.mp4, .avi, .mkv, .mov)")
    p.add_argument("--show", action="store_true", help="show a preview window with the live HUD")
    p.add_argument("--provider", help="execution provider, e.g. cpu, cuda, dml (default: best available)")
    p.add_argument("--max-faces", type=int, default=1, help="faces to swap per frame (default 1)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--low-memory", action="store_true",
                   help="smaller peak memory for a little less FPS (one swap worker, at most 3 frames alive)")
    p.add_argument("--json", metavar="PATH", help="write the run's summary (frames, dropped, late, failed, FPS, "
                   "latency percentiles) as JSON")
    p.add_argument("--memory-budget", metavar="SIZE", help="keep the runner's buffers and cached sessions within "
                   "this much host memory (512M, 2G, 25%%): idle buffers, then unused sessions are freed as they grow")
    p.add_argument("--target-fps", type=float, metavar="FPS",
                   help="cameras: hold this frame rate when the machine cannot keep up, by detecting faces less "
                        "often and at a smaller detector input (default: the camera's rate; 0: fixed quality)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on Ray (pip install \"dfl_perf[ray]\"): no ADDRESS starts a local Ray (or joins "
                        "RAY_ADDRESS), auto joins this machine's cluster, ray://HOST:10001 uses Ray Client")
    p.add_argument("--ray-workers", type=int, metavar="N", help="--ray: at most N workers (default: one per CPU)")
    p.add_argument("--ray-gpus-per-worker", type=float, metavar="G", help="--ray: GPUs per worker (e.g. 1 or 0.5)")
    p.add_argument("--range-frames", type=int, metavar="N", help="--ray: frames per range (default: about 4 per worker)")
    p.set_defaults(func=_run)

    p = sub.add_parser("soak", help="run the optimized pipeline live for a while; exit 1 on leaks, decay or lost frames")
    p.add_argument("--duration", type=float, default=60.0, metavar="SECONDS", help="how long (default 60)")
    p.add_argument("--fps", type=float, default=60.0, help="source frame rate (default 60: frames get dropped)")
    p.add_argument("--dfm-cost", choices=("5ms", "20ms", "60ms"), default="20ms", help="stand-in DFM cost")
    p.add_argument("--json", metavar="PATH", help="write the samples and the verdict as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_soak)

    sub.add_parser("models", help="list, fetch or locate the pinned reference models (dfl-perf models -h)")
    sub.add_parser("serve", help="serve a DFM on Ray Serve for remote swaps (dfl-perf serve -h; needs dfl_perf[serve])")
    sub.add_parser("dfl", help="launch DeepFaceLive with dfl_perf in every worker: dfl-perf dfl PATH/main.py run "
                              "DeepFaceLive --userdata-dir DIR (dfl-perf dfl -h)")
    return parser


def _user_errors() -> tuple:
    """Errors that describe the user's input or setup (files, models, sources), not a bug of ours."""
    errors = [FileNotFoundError, PermissionError]
    for module, name in (("dfl_perf.facepipe.models", "ModelFetchError"), ("dfl_perf.sessions.errors", "ModelLoadError"),
                         ("dfl_perf.buffers.dfm", "DFMContractError")):
        loaded = sys.modules.get(module)  # only a module the command used can have raised it
        if loaded is not None:
            errors.append(getattr(loaded, name))
    return tuple(errors)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``dfl-perf``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _PASSTHROUGH:
            return int(_PASSTHROUGH[argv[0]](argv[1:]) or 0)
        parser = _build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        if args.command in ("benchmark", "run", "soak"):
            _warn_install_problems()
        return int(args.func(args) or 0)
    except _user_errors() as exc:  # a missing model, an unreadable source: say it in one line
        print("dfl-perf %s: %s" % (argv[0] if argv else "", exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


if __name__ == "__main__":
    sys.exit(main())
