"""Stand-in DeepFaceLive entry point: ``main.py run DeepFaceLive --userdata-dir DIR`` (DFL's command line)."""

import argparse
import os
from pathlib import Path


def main():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    run_parser = subparsers.add_parser("run", help="Run the application.")
    run_subparsers = run_parser.add_subparsers()

    def run_DeepFaceLive(args):
        from apps.DeepFaceLive.DeepFaceLiveApp import DeepFaceLiveApp

        DeepFaceLiveApp(userdata_path=Path(args.userdata_dir)).run()

    p = run_subparsers.add_parser("DeepFaceLive")
    p.add_argument("--userdata-dir", default=None, help="Workspace directory.")
    p.set_defaults(func=run_DeepFaceLive)

    def bad_args(arguments):
        parser.print_help()
        raise SystemExit(0)

    parser.set_defaults(func=bad_args)
    args = parser.parse_args()
    if getattr(args, "userdata_dir", None):
        args.userdata_dir = os.path.abspath(os.path.expanduser(args.userdata_dir))
    args.func(args)


if __name__ == "__main__":
    main()
