"""DeepFaceLive's workers forked from one server process that imported their libraries once (Linux, macOS).

DFL forces multiprocessing's ``spawn`` start method (``xlib.mp``): each of its 9-11 worker
processes is a fresh interpreter that imports numpy, OpenCV and DFL's whole backend again, all at
the same moment at start-up, on however many cores the machine has. With ``DFLConfig.forkserver``
the app process uses multiprocessing's ``forkserver`` start method instead: one server process
imports what the workers need once, then forks each worker from that state. A worker is still a
separate process that starts from a clean copy (not a fork of the app, which holds Qt and the UI
state), gets its arguments pickled exactly as with spawn, and runs the same DFL code; it just
finds its modules imported.

When the server starts and what it imports (``_preload`` runs in it):

1. ``start_server`` (the launcher calls it before DFL's ``main.py`` runs; otherwise the first worker's
   start does) starts the server, which imports the third-party libraries DFL's workers import
   (numpy, OpenCV, numexpr, onnxruntime, onnx, h5py), in parallel with the app's own start. No DFL
   module: DFL's ``xlib.onnxruntime`` probes the devices (CUDA) at import unless the app already did
   and said so in its environment (``ORT_DEVICES_INITIALIZED``), and the app has not yet;
2. before its first worker, the app hands the server its environment and ``sys.path`` (a file in a
   private folder, written before the first fork request); the server takes them and, when the app
   has enumerated its devices (``ORT_DEVICES_INITIALIZED=1``: DFL's device module then probes
   nothing, as in every spawned worker), imports DFL's backend package once before that fork;
3. every worker gets the app's environment as it is at that worker's start (carried with the
   pickled start-up data, set before anything of DFL runs in it), as a spawned worker would.

Meant to be safe with GPUs (measured on the CPU only; no GPU here): nothing in the server touches
CUDA (onnxruntime loads its CUDA provider at a session's creation, in the worker; DFL's OpenCL module
only loads its library at import, devices are listed later, in the worker). Libraries that read
the environment at import (BLAS and OpenCV pool sizes) see the launch-time environment, as the app
process itself does: DFL sets none of those later. Windows has no forkserver: DFL's spawn stays.
"""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

__all__ = ["available", "patch_mp_module", "start_server", "stop_server", "server_pid", "PRELOAD",
           "THIRD_PARTY", "HANDOFF_ENV", "ENVIRON_KEY"]

#: what the server imports before forking workers, through a module that never fails (the
#: forkserver dies on a preload error other than ImportError)
PRELOAD: List[str] = ["dfl_perf.adapters.deepfacelive._preload"]

#: the libraries DFL's workers import that the server loads at its start (no DFL module)
THIRD_PARTY = ("numpy", "cv2", "numexpr", "onnxruntime", "onnx", "h5py")

#: environment variable naming, in the server only, the file through which the app hands over its
#: environment and ``sys.path`` before the first fork
HANDOFF_ENV = "DFL_PERF_FORKSERVER_HANDOFF"

#: key of the app's environment in each worker's pickled start-up data
ENVIRON_KEY = "dfl_perf_environ"

_lock = threading.RLock()
_ours: Dict[str, Any] = {"pid": None, "folder": None, "written": False}  # the server this module started


def available() -> bool:
    """True where multiprocessing offers the forkserver start method."""
    try:
        return "forkserver" in multiprocessing.get_all_start_methods()
    except Exception:
        return False


def _server() -> Any:
    from multiprocessing import forkserver

    return getattr(forkserver, "_forkserver", None)


def server_pid() -> Optional[int]:
    """The running forkserver's process id (None when it is not running)."""
    server = _server()
    return getattr(server, "_forkserver_pid", None) if server is not None else None


def start_server() -> bool:
    """Start the forkserver now with ``PRELOAD``, unless one runs; True when this call started it.

    The server starts importing the third-party libraries at once; the app hands it its environment
    before the first worker (``patch_mp_module``).
    """
    if not available():
        return False
    with _lock:
        server = _server()
        if server is None or not hasattr(server, "ensure_running") or server_pid() is not None:
            return False
        folder = _ours["folder"]
        if folder is None:
            folder = _ours["folder"] = tempfile.mkdtemp(prefix="dfl_perf_forkserver_")
            atexit.register(shutil.rmtree, folder, True)
        _ours["written"] = False
        saved = os.environ.get(HANDOFF_ENV)
        os.environ[HANDOFF_ENV] = os.path.join(folder, "handoff.json")  # the server's environment only
        try:
            server.set_forkserver_preload(list(PRELOAD))
            server.ensure_running()
        finally:
            if saved is None:
                os.environ.pop(HANDOFF_ENV, None)
            else:
                os.environ[HANDOFF_ENV] = saved
        _ours["pid"] = server_pid()
        return _ours["pid"] is not None


def stop_server(timeout: float = 5.0) -> bool:
    """Ask the running forkserver to end and forget it; True when it ended within ``timeout`` seconds.

    The server ends once every process holding its "alive" pipe has ended: this one (after this call)
    and the workers forked from it, so one still running keeps it a little longer (it ends with them).
    The hand-over folder goes too.
    """
    with _lock:
        folder, _ours["folder"] = _ours["folder"], None
        _ours["written"] = False
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
        server, pid = _server(), server_pid()
        if server is None or pid is None or pid != _ours["pid"]:
            return True  # none running, or not ours: leave it
        _ours["pid"] = None
        with server._lock:
            os.close(server._forkserver_alive_fd)
            address = server._forkserver_address
            server._forkserver_alive_fd = server._forkserver_pid = server._forkserver_address = None
        from multiprocessing import util

        if address and not util.is_abstract_socket_namespace(address):
            try:
                os.unlink(address)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return True
            except ChildProcessError:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _write_handoff() -> None:
    """The app's environment and ``sys.path`` for the server, once, before its first fork request."""
    with _lock:
        folder = _ours["folder"]
        if _ours["written"] or not folder:
            return
        sys_path = [p if p else os.getcwd() for p in sys.path]
        path = os.path.join(folder, "handoff.json")
        partial = path + ".partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"environ": dict(os.environ), "sys_path": sys_path}, f)
        os.replace(partial, path)
        _ours["written"] = True


def _with_environ(original: Any) -> Any:
    """``spawn.get_preparation_data`` that also carries the app's environment to the worker."""
    def get_preparation_data(name: str) -> Dict[str, Any]:
        data = original(name)
        data[ENVIRON_KEY] = dict(os.environ)
        return data

    return get_preparation_data


def _with_handoff(original: Any) -> Any:
    """``forkserver.connect_to_new_process`` that starts our server and hands it the app's state first."""
    def connect_to_new_process(fds: Any) -> Any:
        try:
            start_server()
            _write_handoff()
        except Exception as exc:  # the server forks without the preloaded backend: workers import it
            sys.stderr.write("dfl_perf: forkserver hand-over failed: %r\n" % (exc,))
        return original(fds)

    return connect_to_new_process


def patch_mp_module(module: Any, patcher: Any) -> None:
    """After DFL's ``xlib.mp`` forced ``spawn``: use our forkserver instead (undone by ``patcher``)."""
    if not available():
        return
    default = getattr(multiprocessing.context, "_default_context", None)
    if default is None or not hasattr(default, "_actual_context"):
        return
    if multiprocessing.get_start_method(allow_none=True) != "spawn":
        return  # DFL's xlib.mp sets spawn; anything else was chosen by someone else: leave it
    from multiprocessing import forkserver, spawn

    server = _server()
    if server is None or not hasattr(server, "connect_to_new_process"):
        return
    patcher.replace(default, "_actual_context", multiprocessing.get_context("forkserver"))
    if server_pid() is None and hasattr(server, "_preload_modules"):
        patcher.replace(server, "_preload_modules", list(PRELOAD))
    patcher.wrap(spawn, "get_preparation_data", _with_environ)
    patcher.wrap(forkserver, "connect_to_new_process", _with_handoff)
