"""Where DeepFaceLive's start-up time goes: a per-module timeline, written by every process.

Each DFL process (the app and every spawned worker) that runs with the adapter records its own
start-up events, in wall-clock seconds (``time.time()``, comparable across processes):

- ``spawned``: the process was created (from the OS; else when the adapter first ran in it);
- ``adapter``: dfl_perf's import hook became active in it (its sitecustomize or ``install()``);
- ``imports_done``: DFL's worker object was unpickled and its ``_start_proc`` began (every module
  the worker class needs is imported by then);
- ``on_start_done``: the worker's ``on_start`` returned (its controls are set up, it starts ticking);
- ``session_created``: one entry per onnxruntime session built: when it started and ended, the model,
  and the disk cache outcome (``hit``, ``stored``, ``off``, ...) or ``in-process`` for a session
  reused from the process's cache;
- ``first_frame_in`` / ``first_frame_out``: the first frame a worker read / wrote;
- ``first_swapped_out``: the first frame written that carries a swapped face.

A worker restarted inside its process (``DFLConfig.restart_in_process``) starts a new line, its
``spawned`` being the moment the restart began.

With a folder (``DFLConfig.startup_dir``, or ``meter_dir``, or env ``DFL_PERF_STARTUP_DIR``) each
process writes ``startup-<module>-<pid>.json`` there at each event (a handful per process,
atomic rename). ``collect_startup`` merges the files; ``format_startup`` prints the table that
``dfl-perf dfl --startup-report`` shows at exit and ``dfl-perf dfl meter DIR --startup`` shows live.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

__all__ = ["StartupRecorder", "process_role", "recorder", "record", "record_session", "collect_startup", "format_startup",
           "process_start_time", "STARTUP_DIR_ENV", "patch_worker_base", "patch_connections"]

#: folder for the start-up files when no DFLConfig names one (the benchmark harness uses it)
STARTUP_DIR_ENV = "DFL_PERF_STARTUP_DIR"
_PREFIX = "startup-"
PathLike = Union[str, Path]


def process_start_time() -> Optional[float]:
    """When this process was created, as ``time.time()`` seconds (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / float(os.sysconf("SC_CLK_TCK"))
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class StartupRecorder:
    """This process's start-up events; written to ``folder`` (if any) as each one happens."""

    def __init__(self, folder: Optional[PathLike] = None, module: Optional[str] = None) -> None:
        self.folder = Path(folder) if folder else None
        self.module = module or _main_module_name()
        self.pid = os.getpid()
        self.events: Dict[str, float] = {}
        self.sessions: List[Dict[str, Any]] = []
        self.cycles: List[Dict[str, Any]] = []  # earlier lives of this process's worker (in-process restarts)
        self._lock = threading.Lock()
        started = process_start_time()
        self.events["spawned"] = started if started is not None else time.time()

    def mark(self, event: str, when: Optional[float] = None, once: bool = True) -> bool:
        """Record ``event`` now (or at ``when``); with ``once`` a second mark is ignored. True if recorded."""
        with self._lock:
            if once and event in self.events:
                return False
            self.events[event] = time.time() if when is None else when
        self.flush()
        return True

    def add_session(self, model: str, started: float, ended: float, disk_cache: str, providers: List[str]) -> None:
        with self._lock:
            self.sessions.append({"model": model, "started": started, "ended": ended, "seconds": ended - started,
                                  "disk_cache": disk_cache, "providers": list(providers)})
        self.flush()

    def new_cycle(self) -> None:
        """The worker restarts in this process (``restart``): keep what happened so far, start a new line."""
        now = time.time()
        with self._lock:
            self.cycles.append({"events": self.events, "sessions": self.sessions})
            self.events = {"spawned": now, "imports_done": now}
            self.sessions = []
        self.flush()

    def set_module(self, module: str) -> None:
        """Name this process after the DFL module it runs (the worker class, less ``Worker``)."""
        if module and module != self.module:
            old = self._path()
            self.module = module
            if old is not None:
                try:
                    old.unlink()
                except OSError:
                    pass
            self.flush()

    def document(self) -> Dict[str, Any]:
        with self._lock:
            return {"kind": "dfl_perf.startup", "module": self.module, "pid": self.pid,
                    "events": dict(self.events), "sessions": [dict(s) for s in self.sessions],
                    "cycles": [{"events": dict(c["events"]), "sessions": [dict(s) for s in c["sessions"]]}
                               for c in self.cycles]}

    def _path(self) -> Optional[Path]:
        if self.folder is None or self.module == "other":
            return None
        return self.folder / ("%s%s-%d.json" % (_PREFIX, self.module, self.pid))

    def flush(self) -> Optional[Path]:
        path = self._path()
        if path is None:
            return None
        partial = path.with_name(path.name + ".partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
            partial.write_text(json.dumps(self.document()), encoding="utf-8")
            os.replace(str(partial), str(path))
        except OSError:
            return None
        return path


_forked_worker = [False]


def process_role() -> str:
    """'worker' in a process multiprocessing spawned or forked for a worker, 'app' in a script or ``-m``
    module, else 'other' (``python -c``: multiprocessing's resource tracker or forkserver)."""
    argv = getattr(sys, "argv", None) or [""]
    main = sys.modules.get("__main__")
    if _forked_worker[0] or "--multiprocessing-fork" in argv or getattr(main, "__name__", None) == "__mp_main__":
        return "worker"
    return "other" if argv[0] in ("-c", "") else "app"


def _main_module_name() -> str:
    """The recorder's first name: 'worker' (renamed once its worker class is known), 'app' or 'other' (never written)."""
    return process_role()


def _after_fork_in_child() -> None:
    """A worker forked from the forkserver: a new process with its own timeline."""
    _forked_worker[0] = True
    rec = _recorder
    if rec is not None:
        rec.pid = os.getpid()
        rec.module = "worker"
        now = time.time()
        rec.events = {"spawned": now, "adapter": now}  # the adapter came with the fork
        rec.sessions = []
        rec.cycles = []
        rec._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


_recorder: Optional[StartupRecorder] = None
_recorder_lock = threading.Lock()


def recorder(folder: Optional[PathLike] = None) -> StartupRecorder:
    """This process's recorder (made on first use; ``folder`` or env ``DFL_PERF_STARTUP_DIR`` names its folder)."""
    global _recorder
    with _recorder_lock:
        if _recorder is None:
            _recorder = StartupRecorder(folder or os.environ.get(STARTUP_DIR_ENV) or None)
        elif folder and _recorder.folder is None:
            _recorder.folder = Path(folder)
            _recorder.flush()
        return _recorder


def record(event: str, when: Optional[float] = None) -> None:
    """Mark a start-up event of this process (once); a no-op cost when nothing is written."""
    recorder().mark(event, when)


def record_session(model: str, started: float, ended: float, disk_cache: str, providers: List[str]) -> None:
    recorder().add_session(model, started, ended, disk_cache, providers)


# ------------------------------------------------------------------------------------------ DFL hooks

def patch_worker_base(module: Any, patcher: Any) -> None:
    """Wrap ``xlib.mp.csw`` ``Worker._start_proc`` (module ``xlib.mp.csw.CSWBase``): imports done, on_start done."""
    worker_cls = getattr(module, "Worker", None)
    current = getattr(worker_cls, "_start_proc", None) if worker_cls is not None else None
    if current is None:
        return
    original = getattr(current, "dfl_perf_original", current)  # DFL's own (another patch may wrap it)

    def _start_proc(cls_, *args, **kwargs):
        rec = recorder()
        name = getattr(cls_, "__name__", "worker")
        rec.set_module(name[:-len("Worker")] if name.endswith("Worker") and len(name) > 6 else name)
        rec.mark("imports_done")
        on_start = cls_.__dict__.get("on_start")
        if on_start is not None and not getattr(on_start, "dfl_perf_startup", False):
            def timed_on_start(self, *a, **kw):
                try:
                    return on_start(self, *a, **kw)
                finally:
                    rec.mark("on_start_done")
            timed_on_start.dfl_perf_startup = True  # type: ignore[attr-defined]
            patcher.replace(cls_, "on_start", timed_on_start)
        return current(cls_, *args, **kwargs)

    _start_proc.dfl_perf_original = original  # type: ignore[attr-defined]
    # DFL passes ``Worker._start_proc`` as the process target: pickled by its qualified name, so the
    # wrapper must carry the original's (each child then runs whatever its own Worker holds)
    _start_proc.__qualname__ = original.__qualname__
    _start_proc.__module__ = original.__module__
    patcher.replace(worker_cls, "_start_proc", staticmethod(_start_proc))


def _is_swapped(bcd: Any) -> bool:
    get = getattr(bcd, "get_face_swap_info_list", None)
    if get is None:
        return False
    try:
        return any(getattr(fsi, "face_swap_image_name", None) is not None for fsi in get())
    except Exception:
        return False


def patch_connections(module: Any, patcher: Any) -> None:
    """Wrap DFL's ``BackendConnection.read/write`` (module ``...backend.BackendBase``): first frame in and out."""
    cls = getattr(module, "BackendConnection", None)
    if cls is None:
        return
    read, write = cls.__dict__.get("read"), cls.__dict__.get("write")
    if callable(read):
        def timed_read(self, *args, **kwargs):
            data = read(self, *args, **kwargs)
            if data is not None and "first_frame_in" not in recorder().events:
                record("first_frame_in")
            return data
        patcher.replace(cls, "read", timed_read)
    if callable(write):
        def timed_write(self, bcd, *args, **kwargs):
            result = write(self, bcd, *args, **kwargs)
            events = recorder().events
            if "first_frame_out" not in events:
                record("first_frame_out")
            if "first_swapped_out" not in events and _is_swapped(bcd):
                record("first_swapped_out")
            return result
        patcher.replace(cls, "write", timed_write)


# ------------------------------------------------------------------------------------------ the view

def collect_startup(folder: PathLike) -> Dict[str, Any]:
    """Every process's start-up document in ``folder``: ``{"processes": [...], "t0": app start}``, oldest first.

    A worker restarted in its own process (``restart``) gives one entry per life (``cycle`` 0, 1, ...)."""
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError("start-up folder not found: %s" % path)
    processes = []
    for item in sorted(path.glob(_PREFIX + "*.json")):
        try:
            document = json.loads(item.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and document.get("kind") == "dfl_perf.startup":
            lives = list(document.get("cycles", [])) + [{"events": document["events"],
                                                          "sessions": document.get("sessions", [])}]
            for n, life in enumerate(lives):
                processes.append({"kind": document["kind"], "module": document["module"], "pid": document["pid"],
                                  "cycle": n, "events": life["events"], "sessions": life["sessions"]})
    processes.sort(key=lambda d: d["events"].get("spawned", 0.0))
    apps = [d for d in processes if d["module"] == "app"]
    starts = [d["events"]["spawned"] for d in (apps or processes) if "spawned" in d["events"]]
    return {"t0": min(starts) if starts else None, "processes": processes}


_COLUMNS = (("spawned", "spawned"), ("imports_done", "imports"), ("on_start_done", "on_start"),
            ("first_frame_in", "1st in"), ("first_frame_out", "1st out"), ("first_swapped_out", "1st swap"))


def format_startup(view: Dict[str, Any]) -> str:
    """The start-up timeline as a text table: seconds since the app started, one line per process."""
    t0 = view.get("t0")
    lines = ["DFL start-up timeline (s since the app process started; one line per process, restarts included)",
             "%-16s %7s " % ("module", "pid") + " ".join("%8s" % label for _, label in _COLUMNS)
             + "  sessions (start-end s, disk cache)"]

    def rel(value: Optional[float]) -> str:
        return "-" if value is None or t0 is None else "%.2f" % (value - t0)

    for doc in view.get("processes", []):
        events = doc["events"]
        sessions = ", ".join("%s %s-%s %s" % (os.path.basename(s["model"]), rel(s["started"]), rel(s["ended"]),
                                               s["disk_cache"]) for s in doc.get("sessions", []))
        lines.append("%-16s %7s " % (doc["module"], doc["pid"]) + " ".join("%8s" % rel(events.get(key))
                                                                         for key, _ in _COLUMNS)
                     + ("  " + sessions if sessions else ""))
    swapped = [d["events"]["first_swapped_out"] for d in view.get("processes", []) if "first_swapped_out" in d["events"]]
    if swapped:
        lines.append("first swapped frame written by FaceSwapDFM: %s s" % rel(min(swapped)))
    return "\n".join(lines) + "\n"
