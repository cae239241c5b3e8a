"""Stand-in app: starts the backend workers as spawned processes and records what happened."""

import json
import multiprocessing
import os
import queue
import time
from pathlib import Path

from xlib import mp as lib_mp  # noqa: F401  (forces spawn, as DFL's xlib.mp does)

from . import backend
from .backend._report import describe_process

PIPELINE = ("FileSourceWorker", "FaceDetectorWorker", "FaceMarkerWorker", "FaceSwapDFMWorker", "StreamOutputWorker")


class DeepFaceLiveApp:
    def __init__(self, userdata_path):
        self.userdata_path = Path(userdata_path)
        self.settings = json.loads((self.userdata_path / "standin_settings.json").read_text())

    def run(self):
        ctx = multiprocessing.get_context("spawn")
        msg_queue = ctx.Queue()
        connections = [backend.BackendConnection() for _ in range(len(PIPELINE) + 1)]
        procs = []
        for i, name in enumerate(PIPELINE):
            args = [getattr(backend, name), msg_queue, connections[i], connections[i + 1], self.settings]
            proc = ctx.Process(target=backend.BackendWorker._start_proc, args=args, daemon=True)
            proc.start()
            procs.append(proc)
        arrivals = self._collect(connections[-1])
        reports, timings = self._messages(msg_queue, len(PIPELINE))
        for proc in procs:
            proc.join(timeout=30)
        result = {"main": describe_process([]), "workers": reports, "profile_timing": timings,
                  "exit_codes": [p.exitcode for p in procs]}
        result.update(self._throughput(arrivals))
        out = self.userdata_path / "standin_report.json"
        out.write_text(json.dumps(result, indent=1))
        print("stand-in DFL: %d frames, report in %s" % (len(arrivals), out))

    def _collect(self, connection):
        arrivals = []
        deadline = time.monotonic() + self.settings.get("timeout_s", 120)
        while time.monotonic() < deadline:
            bcd = connection.read(timeout=0.05)
            if bcd is None:
                continue
            if bcd == backend.BackendBase.STOP:
                break
            arrivals.append((bcd["t0"], bcd["t1"]))
        return arrivals

    def _messages(self, msg_queue, workers):
        reports, timings = {}, {}
        deadline = time.monotonic() + 60
        while len(reports) < workers and time.monotonic() < deadline:
            try:
                worker, name, args = msg_queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if name == "report":
                reports[worker] = args[0]
            elif name == "_profile_timing":
                timings.setdefault(worker, []).append(args[0])
        return reports, timings

    def _throughput(self, arrivals):
        warmup = min(self.settings.get("warmup", 0), max(0, len(arrivals) - 2))
        steady = arrivals[warmup:]
        if len(steady) < 2:
            return {"frames": len(arrivals), "fps": None, "latency_ms": []}
        span = steady[-1][1] - steady[0][1]
        return {"frames": len(arrivals), "fps": (len(steady) - 1) / span if span > 0 else None,
                "latency_ms": [1000.0 * (t1 - t0) for t0, t1 in steady], "pid": os.getpid()}
