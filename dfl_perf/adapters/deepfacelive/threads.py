"""Every DFL worker's thread pools sized from the same core split as its onnxruntime sessions.

Each of DFL's ~8 spawned workers imports OpenCV, numexpr and numpy (a threaded BLAS underneath),
and each of those starts a pool sized for every core of the machine. Beside the model sessions
(already split by ``--model-processes``/``--threads``), that is eight processes each running pools
for all cores. ``govern_thread_pools`` gives OpenCV (``cv2.setNumThreads``), numexpr and the BLAS
under numpy the session's per-process thread count:

- through the environment (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``,
  ``NUMEXPR_NUM_THREADS``, ``OPENCV_FOR_THREADS_NUM``), set by ``install()`` before DFL's workers start
  so that each reads them at import (a value the user set is kept);
- through the libraries' calls, in every process where they are already imported
  (``apply_thread_pools``, run by the adapter's import-time patches).
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, Optional

__all__ = ["THREAD_ENV", "thread_environment", "apply_thread_pools", "restore_thread_pools"]

#: environment variables that size a library's pool at import
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "OPENCV_FOR_THREADS_NUM")

_applied: Dict[str, int] = {}  # library -> its thread count before we changed it


def thread_environment(threads: int) -> Dict[str, str]:
    """The environment that sizes every pool to ``threads``."""
    return {name: str(int(threads)) for name in THREAD_ENV}


def _cv2_pool() -> Optional[tuple]:
    cv2 = sys.modules.get("cv2")
    if cv2 is None or not callable(getattr(cv2, "setNumThreads", None)) or not callable(getattr(cv2, "getNumThreads", None)):
        return None
    return cv2.getNumThreads, cv2.setNumThreads


def _numexpr_pool() -> Optional[tuple]:
    module = sys.modules.get("numexpr")
    if module is None or type(module).__name__ == "_DeferredModule" \
            or not all(callable(getattr(module, name, None)) for name in ("set_num_threads", "get_num_threads")):
        return None
    return module.get_num_threads, module.set_num_threads


_POOLS: Dict[str, Callable[[], Optional[tuple]]] = {"cv2": _cv2_pool, "numexpr": _numexpr_pool}


def apply_thread_pools(threads: int) -> Dict[str, int]:
    """Size the pools of the libraries loaded in this process (once each); returns library -> count set."""
    done = {}
    for name, pool in _POOLS.items():
        if name in _applied:
            continue
        handles = pool()
        if handles is None:
            continue
        get, set_ = handles
        try:
            _applied[name] = int(get())
            set_(int(threads))
        except Exception:  # a library without a working pool control: leave it
            _applied.pop(name, None)
            continue
        done[name] = int(threads)
    return done


def restore_thread_pools() -> None:
    """Give each library back the thread count it had (``uninstall``)."""
    for name, count in list(_applied.items()):
        handles = _POOLS[name]()
        if handles is not None:
            try:
                handles[1](count)
            except Exception:
                pass
        del _applied[name]
