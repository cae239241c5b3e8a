"""Runs in the forkserver (see ``forkserver``) before it forks DFL's workers; never fails.

multiprocessing's forkserver skips a preload module that raises ImportError but dies on any other
error: every step here turns a failure into "not preloaded", so each worker then imports what it
needs itself, as under spawn. Steps:

1. import the third-party libraries DFL's workers use (``forkserver.THIRD_PARTY``; those dfl_perf
   defers in workers are loaded for real: they cost a forked worker nothing), and build OpenCV's Lab
   tables, which DFL's merger needs for its first frame;
2. each forked worker applies the app's environment carried in its start-up data before anything
   else runs in it (``spawn.prepare`` wrapped);
3. just before the first fork, read the app's environment and ``sys.path`` from the hand-over file
   and, when the app has enumerated its devices, import DFL's backend package once.
"""

import json
import os
import sys


def _import_third_party():
    from dfl_perf.adapters.deepfacelive._hooks import load_deferred
    from dfl_perf.adapters.deepfacelive.forkserver import THIRD_PARTY

    for name in THIRD_PARTY:
        _import_or_forget(name, lambda loaded=name: load_deferred(sys.modules[loaded]))


def _warm_opencv():
    """OpenCV builds its Lab colour tables at the first Lab conversion (60-100 ms on this machine).

    DFL's FaceMerger converts every face to Lab and back (its default colour transfer, ``rct``), so its
    first merged frame paid for them; built here once, every forked worker has them. The tables are the
    same whoever builds them: the same pictures come out.
    """
    cv2, numpy = sys.modules.get("cv2"), sys.modules.get("numpy")
    if cv2 is None or numpy is None:
        return
    pixel = numpy.zeros((1, 1, 3), numpy.float32)
    cv2.cvtColor(cv2.cvtColor(pixel, cv2.COLOR_BGR2LAB), cv2.COLOR_LAB2BGR)


def _import_or_forget(name, then=None):
    """Import ``name`` (then run ``then``); on any failure forget every module it left half-imported.

    A worker forked from here must not inherit a broken module: it imports it itself, as under spawn.
    """
    before = set(sys.modules)
    try:
        __import__(name)
        if then is not None:
            then()
    except Exception:
        for new in set(sys.modules) - before:
            sys.modules.pop(new, None)


def _apply_environ(environ):
    """Make this process's environment exactly ``environ`` (as a spawned worker inherits the app's)."""
    for name in [n for n in os.environ if n not in environ]:
        del os.environ[name]
    for name, value in environ.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _wrap_prepare():
    from multiprocessing import spawn

    from dfl_perf.adapters.deepfacelive.forkserver import ENVIRON_KEY

    original = spawn.prepare

    def prepare(data):
        environ = data.pop(ENVIRON_KEY, None) if isinstance(data, dict) else None
        if isinstance(environ, dict):
            _apply_environ(environ)
        return original(data)

    spawn.prepare = prepare


def _read_handoff():
    from dfl_perf.adapters.deepfacelive.forkserver import HANDOFF_ENV

    path = os.environ.get(HANDOFF_ENV)
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            handoff = json.load(f)
        os.unlink(path)  # it holds the app's environment: read once, gone
    except (OSError, ValueError):
        return None
    return handoff if isinstance(handoff, dict) else None


def _backend_wanted():
    from dfl_perf.adapters.deepfacelive.config import config_from_env

    config = config_from_env()
    return config is None or config.forkserver_backend


_first_fork = [True]


def _before_fork():
    """Before the first fork: the app's environment and sys.path, then DFL's backend once the app has probed."""
    if not _first_fork[0]:
        return
    _first_fork[0] = False
    try:
        handoff = _read_handoff()
        if handoff is None:
            return
        environ, sys_path = handoff.get("environ"), handoff.get("sys_path")
        if not isinstance(environ, dict) or not isinstance(sys_path, list):
            return
        _apply_environ(environ)
        sys.path[:] = sys_path
        if environ.get("ORT_DEVICES_INITIALIZED") == "1" and _backend_wanted():  # DFL's device module probes nothing
            _import_or_forget("apps.DeepFaceLive.backend")  # one that fails here: the workers say why
    except Exception:
        pass


def _prepare_server():
    for step in (_import_third_party, _warm_opencv, _wrap_prepare):
        try:
            step()
        except Exception:
            pass
    try:
        import dfl_perf.adapters.deepfacelive.startup  # noqa: F401  (its fork hook names forked workers)
    except Exception:
        pass
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_before_fork)


_prepare_server()
