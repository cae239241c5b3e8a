"""Start-up and restart of one DFL-style model module on the stand-in (tests/dfl_standin), plain vs launched.

Run: python benchmarks/bench_dfl_standin_startup.py [--dfm-mb 200] [--repeats 3]

The stand-in's ``xlib.mp.csw`` host starts a worker the way DFL's does (a new process per start,
``Worker._start_proc``, ``on_start``, the model session built on a later tick, ``restart()`` on a
model change); the worker (tests/startup_probe.py) loads a DFM-shaped stand-in with ``dense_mb`` MB of
weights, restarts once, and loads it again. Timed from the app process's creation: the first
life's session ready, and the restart (from the second life's start, new process or new cycle, to its session ready), read
from each process's start-up timeline (so dfl_perf records in both). "plain": every start-up cut off
(spawn, eager imports, no lean weights, no disk cache, restart in a new process; the session is
still built by dfl_perf's factory); "launched": the launcher's defaults. For DFL's own code and the
whole pipeline use bench_dfl_real.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, List

from _common import REPO, median, print_header

TESTS = REPO / "tests"
STANDIN = TESTS / "dfl_standin"

_HOST = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [{standin!r}, {tests!r}, {repo!r}]
    from xlib.mp.csw import Host
    from startup_probe import ProbeSheet, ProbeState, ProbeWorker

    if __name__ == "__main__":
        host = Host(sheet_cls=ProbeSheet, worker_cls=ProbeWorker, worker_state_cls=ProbeState,
                    worker_start_args=[{model!r}, 1])
        host.start()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (host._state.lives > 1 and host.is_started()):
            host.process_messages()
            time.sleep(0.005)
        time.sleep(1.0)
        host.process_messages()
        host.stop()
        while not host.is_stopped() and time.monotonic() < deadline:
            host.process_messages()
            time.sleep(0.005)
        print(json.dumps({{"errors": host.errors, "lives": host._state.lives}}))
""")


def run_once(model: Path, work: Path, launched: bool, tag: str) -> Dict[str, float]:
    from dfl_perf.adapters.deepfacelive._install import SITE_DIR
    from dfl_perf.adapters.deepfacelive.config import CONFIG_ENV, DFLConfig
    from dfl_perf.adapters.deepfacelive.startup import collect_startup

    folder = work / ("startup_" + tag)
    script = work / "host.py"
    script.write_text(_HOST.format(standin=str(STANDIN), tests=str(TESTS), repo=str(REPO), model=str(model)))
    env = dict(os.environ, ORT_DEVICES_INITIALIZED="1", ORT_DEVICES_COUNT="0", DFL_PERF_CACHE_DIR=str(work / "cache"))
    env.pop(CONFIG_ENV, None)
    # plain: dfl_perf only records (DFL's factory, spawn, restart in a new process); launched: its settings
    config = DFLConfig(startup_dir=str(folder), meter=False, fast_dfm=False)
    if not launched:
        config = DFLConfig(startup_dir=str(folder), meter=False, fast_dfm=False, forkserver=False,
                           restart_in_process=False, lean_weights=False, optimized_model_cache=False,
                           lazy_imports=(), lazy_heap=False)
    env.update(PYTHONPATH=SITE_DIR)
    env[CONFIG_ENV] = config.to_json()
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)
    view = collect_startup(folder)
    t0 = view["t0"]
    lives = [p for p in view["processes"] if p["module"] == "Probe"]
    first, second = lives[0], lives[-1]
    ready = [p["sessions"][0]["ended"] for p in (first, second)]
    return {"first_session_ready_s": ready[0] - t0, "restart_s": ready[1] - second["events"]["spawned"],
            "first_spawned_s": first["events"]["spawned"] - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dfm-mb", type=float, default=200.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print_header("stand-in DFL: one model module's start and restart, plain vs launched")
    from dfl_perf.facepipe.standin import save_dfm_standin

    work = Path(tempfile.mkdtemp(prefix="bench_standin_startup_"))
    model = work / "standin.dfm"
    save_dfm_standin(str(model), resolution=224, cost="20ms", seed=0, dense_mb=args.dfm_mb)
    runs: Dict[str, List[Dict[str, float]]] = {"plain": [], "launched": []}
    run_once(model, work, True, "warm")  # the lean copy and disk caches, made once
    for repeat in range(args.repeats):
        for variant in (("plain", "launched") if repeat % 2 == 0 else ("launched", "plain")):
            result = run_once(model, work, variant == "launched", "%s%d" % (variant, repeat))
            runs[variant].append(result)
            print("  repeat %d %-9s %s" % (repeat + 1, variant, json.dumps({k: round(v, 3) for k, v in result.items()})))
    print("\nDFM stand-in %g MB, medians of %d (first: s since the app process started)" % (args.dfm_mb, args.repeats))
    for variant, results in runs.items():
        print("  %-9s first session ready %.2f s   restart to session ready %.2f s"
              % (variant, median(r["first_session_ready_s"] for r in results), median(r["restart_s"] for r in results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
