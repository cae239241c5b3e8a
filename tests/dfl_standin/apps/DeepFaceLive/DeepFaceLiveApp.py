"""Stand-in app: DFL's live pipeline as spawned worker processes joined by shared-memory rings.

FileSource -> FaceDetector -> FaceMarker -> FaceAligner -> FaceSwapDFM -> FrameAdjuster -> FaceMerger
-> StreamOutput, one process each, every image on one ``BackendWeakHeap(size_mb=2048)`` as in DFL's
QLiveSwap. Settings come from ``USERDATA/standin_settings.json``; ``USERDATA/standin_report.json``
gets what happened: each worker's process (sessions, imports, patches), the delivered frame rate
after the warm-up, frames that reached the output without their merged or frame image, and each
module's CPU time per delivered frame (from /proc, between the warm-up's end and the last frame).

Settings (all optional but ``dfm_path``, or ``dfm_model`` with ``dfm_models_dir``): ``frames`` (120), ``warmup`` (20), ``width``/``height``
(640x480), ``faces`` (1), ``realtime`` (false), ``heap_mb`` (2048, DFL's), ``timeout_s`` (300),
``models_dir`` (USERDATA/standin_models, built on first use), ``detector_cost`` ("light" or
"yolov5s", see standin_models.py; one models_dir per preset), ``face_path`` (a face photo; else a
painted face), ``save_frames`` (frame numbers whose output is saved as .npy in USERDATA/out), and one
dict per module name (``FaceDetector``, ``FaceMarker``, ``FaceAligner``, ``FaceSwapDFM``,
``FrameAdjuster``, ``FaceMerger``, ``StreamOutput``) with that module's options.
"""

import json
import multiprocessing
import os
import queue
import sys
import time
from pathlib import Path

from xlib import mp as lib_mp  # noqa: F401  (forces spawn, as DFL's xlib.mp does)

from . import backend
from .backend._report import describe_process
from .ui.widgets.QBackendPanel import QBackendPanel

PIPELINE = ("FileSource", "FaceDetector", "FaceMarker", "FaceAligner", "FaceSwapDFM", "FrameAdjuster",
            "FaceMerger", "StreamOutput")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_and_faults(pid):
    """(utime + stime in seconds, minor page faults) of a process from /proc (None when unreadable)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLK_TCK, int(fields[7])
    except (OSError, IndexError, ValueError):
        return None


class DeepFaceLiveApp:
    def __init__(self, userdata_path):
        self.userdata_path = Path(userdata_path)
        self.settings = json.loads((self.userdata_path / "standin_settings.json").read_text())

    def _models(self):
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        try:
            from standin_models import build_models
        finally:
            sys.path.pop(0)
        folder = self.settings.get("models_dir") or str(self.userdata_path / "standin_models")
        os.environ["DFL_STANDIN_MODELS"] = str(build_models(folder, self.settings.get("detector_cost", "light")))

    def _worker_states(self, out_dir):
        s = self.settings
        states = {name: dict(s.get(name, {})) for name in PIPELINE}
        states["FileSource"].update({"width": s.get("width", 640), "height": s.get("height", 480),
                                     "frames": s.get("frames", 120), "faces": s.get("faces", 1),
                                     "realtime": s.get("realtime", False), "face_path": s.get("face_path")})
        for key in ("dfm_path", "dfm_model", "dfm_models_dir"):  # a file, or a name from the model list
            if key in s:
                states["FaceSwapDFM"].setdefault(key, s[key])
        states["StreamOutput"].setdefault("save_frames", s.get("save_frames", []))
        return states

    def _start(self, ctx, msg_queue, stop_event, out_dir):
        self.backend_weak_heap = backend.BackendWeakHeap(size_mb=self.settings.get("heap_mb", 2048))
        self.reemit_frame_signal = backend.BackendSignal()
        connections = self.connections = [backend.BackendConnection(multi_producer=True)] + \
            [backend.BackendConnection() for _ in PIPELINE[2:]]
        states = self._worker_states(out_dir)
        procs = {}
        for i, name in enumerate(PIPELINE):
            args = [self.backend_weak_heap, self.reemit_frame_signal]
            if i > 0:
                args.append(connections[i - 1])
            if i < len(PIPELINE) - 1:
                args.append(connections[i])
            else:
                args.append(str(out_dir))
            worker_cls = getattr(backend, name + "Worker")
            proc = ctx.Process(target=backend.BackendWorker._start_proc, daemon=True,
                               args=(worker_cls, msg_queue, stop_event, states[name], args))
            proc.start()
            procs[name] = proc
        return procs

    def run(self):
        self._models()
        out_dir = self.userdata_path / "out"
        out_dir.mkdir(exist_ok=True)
        ctx = multiprocessing.get_context("spawn")
        msg_queue, stop_event = ctx.Queue(), ctx.Event()
        started = time.perf_counter()
        procs = self._start(ctx, msg_queue, stop_event, out_dir)
        collector = _Messages(msg_queue, procs, self.settings)
        collector.wait_for_output(time.monotonic() + self.settings.get("timeout_s", 300))
        stop_event.set()
        collector.wait_for_reports(time.monotonic() + 60)
        for proc in procs.values():
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
        stats = getattr(self.backend_weak_heap, "dfl_perf_stats", None)  # present when dfl_perf sized the heap
        result = {"main": describe_process([]), "heap_mb": self.backend_weak_heap._heap_size >> 20,
                  "heap": stats() if stats is not None else None,
                  "panels": {name: [p._fps_label.text, p._fps_label.color] for name, p in collector.panels.items()},
                  "workers": collector.reports, "profile_timing": collector.timings,
                  "exit_codes": [p.exitcode for p in procs.values()], "run_s": time.perf_counter() - started}
        result.update(collector.output_summary())
        out = self.userdata_path / "standin_report.json"
        out.write_text(json.dumps(result, indent=1))
        print("stand-in DFL: %d frames at %s fps, report in %s" % (result["frames"], result["fps"], out))


class _Messages:
    """Drains the workers' messages; notes each module's CPU seconds when the warm-up ends and at the last frame."""

    def __init__(self, msg_queue, procs, settings):
        self.queue = msg_queue
        self.procs = procs
        self.frames = int(settings.get("frames", 120))
        self.warmup = min(int(settings.get("warmup", 20)), max(0, self.frames - 2))
        self.reports, self.timings = {}, {}
        self.panels = {}
        self.cpu_marks = []

    def _mark_cpu(self):
        self.cpu_marks.append({name: _cpu_and_faults(p.pid) for name, p in self.procs.items()})

    def _handle(self, timeout):
        try:
            worker, name, args = self.queue.get(timeout=timeout)
        except queue.Empty:
            return None
        module = worker[:-len("Worker")] if worker.endswith("Worker") else worker
        if name == "report":
            self.reports[module] = args[0]
        elif name == "_profile_timing":
            self.timings.setdefault(module, []).append(float(args[0]))
            if module not in self.panels:
                self.panels[module] = QBackendPanel(module)
            self.panels[module]._on_backend_profile_timing(args[0])
            if module == "StreamOutput":
                return "frame"
        elif name == "output_frame":
            return "frame"
        return name

    def wait_for_output(self, deadline):
        seen = 0
        while time.monotonic() < deadline and seen < self.frames:
            if any(p.exitcode is not None for p in self.procs.values()):
                break  # a worker died: no more frames will come
            if self._handle(0.05) == "frame":
                seen += 1
                if seen == self.warmup + 1:
                    self._mark_cpu()
        self._mark_cpu()
        self.seen = seen

    def wait_for_reports(self, deadline):
        while len(self.reports) < sum(p.exitcode in (None, 0) for p in self.procs.values()) \
                and time.monotonic() < deadline:
            self._handle(0.2)

    def output_summary(self):
        out = self.reports.get("StreamOutput", {})
        arrivals = out.get("arrivals", [])
        steady = arrivals[self.warmup:]
        fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) >= 2 and steady[-1] > steady[0] else None
        cpu, faults = {}, {}
        if len(self.cpu_marks) == 2 and len(steady) >= 2:
            first, last = self.cpu_marks
            for name in self.procs:
                if first.get(name) is not None and last.get(name) is not None:
                    cpu[name] = 1000.0 * (last[name][0] - first[name][0]) / (len(steady) - 1)
                    faults[name] = (last[name][1] - first[name][1]) / float(len(steady) - 1)
        return {"frames": len(arrivals), "fps": fps, "cpu_ms_per_frame": cpu, "faults_per_frame": faults,
                "lost_merged": len(out.get("lost_merged", [])), "lost_frame": len(out.get("lost_frame", [])),
                "no_face": out.get("no_face"), "merged_dtypes": out.get("merged_dtypes", []),
                "latency_note": "FileSource not in real time: every frame, in order"}
