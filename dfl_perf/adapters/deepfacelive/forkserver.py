"""DeepFaceLive's workers forked from one process that has imported DFL's backend once (Linux, macOS).

DFL forces multiprocessing's ``spawn`` start method (``xlib.mp``): each of its 9-11 worker
processes is a fresh interpreter that imports numpy, OpenCV and DFL's whole backend again, all at
the same moment at start-up, on however many cores the machine has. With ``DFLConfig.forkserver``
the app process uses multiprocessing's ``forkserver`` start method instead, with DFL's backend
package preloaded: one server process imports it once, then forks each worker from that state.
A worker is still a separate process that starts from a clean copy (not a fork of the app, which
holds Qt and the UI state), gets its arguments pickled exactly as with spawn, and runs the same DFL
code; it just finds its modules imported.

Meant to be safe with GPUs (measured on the CPU only; no GPU here): the server starts at the first
worker's start, after DFL's app has enumerated its devices (``ORT_DEVICES_INITIALIZED`` is set, so
the server does not touch CUDA), onnxruntime stays deferred in it (``lazy_imports``), so each model
worker loads it itself after the fork, and DFL's OpenCL module only loads its library at import
(devices are listed later, in the worker). The server inherits the app's environment as it is at
the first worker's start, as spawned workers would. Windows has no forkserver: DFL's spawn stays.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, List

__all__ = ["available", "patch_mp_module", "PRELOAD"]

#: what the server imports before forking workers: DFL's backend package (every worker class),
#: through a module that never fails (the forkserver dies on a preload error other than ImportError)
PRELOAD: List[str] = ["dfl_perf.adapters.deepfacelive._preload"]


def available() -> bool:
    """True where multiprocessing offers the forkserver start method."""
    try:
        return "forkserver" in multiprocessing.get_all_start_methods()
    except Exception:
        return False


def patch_mp_module(module: Any, patcher: Any) -> None:
    """After DFL's ``xlib.mp`` forced ``spawn``: use a forkserver with DFL's backend preloaded (undone by ``patcher``)."""
    if not available():
        return
    default = getattr(multiprocessing.context, "_default_context", None)
    if default is None or not hasattr(default, "_actual_context"):
        return
    if multiprocessing.get_start_method(allow_none=True) != "spawn":
        return  # DFL's xlib.mp sets spawn; anything else was chosen by someone else: leave it
    patcher.replace(default, "_actual_context", multiprocessing.get_context("forkserver"))
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and hasattr(server, "_preload_modules"):
        patcher.replace(server, "_preload_modules", list(PRELOAD))
