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


def _models(argv: List[str]) -> int:
    from dfl_perf.facepipe.models import models_main

    return models_main(argv)


#: subcommands that parse their own arguments (everything after the command name is theirs)
_PASSTHROUGH = {"models": _models}


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

    sub.add_parser("models", help="list, fetch or locate the pinned reference models (dfl-perf models -h)")
    return parser


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
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        return 0


if __name__ == "__main__":
    sys.exit(main())
