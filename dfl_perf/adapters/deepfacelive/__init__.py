"""dfl_perf for DeepFaceLive (DFL), with no edits to a DFL checkout, or one line.

Zero-edit launch (patches the main process and every spawned worker)::

    python -m dfl_perf.adapters.deepfacelive PATH/TO/DeepFaceLive/main.py run DeepFaceLive --userdata-dir DIR

One line at the top of DFL's ``main.py``::

    import dfl_perf.adapters.deepfacelive as dp; dp.install()

What changes: every session DFL builds through ``xlib.onnxruntime.InferenceSession_with_device``
gets tuned options (see ``factory``), a failing CUDA provider falls back to CPU with a warning,
``DFMModel.convert`` runs through pooled buffers (``dfm``), FaceMerger's CPU merge works on the
face's rectangle and passes a uint8 frame on (``merger``, ``merge_ops``, ``output``), YoloV5Face's
pre- and post-processing skip full-size copies (``detector``), every worker's OpenCV, numexpr and
BLAS pools follow the core split (``threads``), the shared frame heap is sized by need instead of
2 GB resident (``heap``), and DFL's UI shows each module's FPS alone, the delivered rate and its
busy share (``meter``). ``uninstall()`` puts everything back.

Importing this package is cheap (standard library only); the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from dfl_perf.adapters.deepfacelive._install import (
    install,
    installed_config,
    is_installed,
    session_records,
    uninstall,
)
from dfl_perf.adapters.deepfacelive.config import DFLConfig

__all__ = [
    "install", "uninstall", "is_installed", "installed_config", "session_records", "DFLConfig",
    "launch", "dfl_main", "collect_meter", "write_meter_view",
]

_LAZY = {
    "collect_meter": "dfl_perf.adapters.deepfacelive.meter",
    "write_meter_view": "dfl_perf.adapters.deepfacelive.meter",
    "dfl_main": "dfl_perf.adapters.deepfacelive.launcher",
    "launch": "dfl_perf.adapters.deepfacelive.launcher",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
