"""The reference face-swap workload: detect, align, swap (DFM), merge; its two runners, models and a test clip.

``OptimizedRunner`` runs it dfl_perf's way (tuned cached sessions, pooled buffers, a three-stage
``Pipeline``), ``BaselineRunner`` DeepFaceLive's way, on the same ``Workload`` (which models) and
frames; both return ``RunStats``. The steps are plain functions or small classes that take a model
path, a registry name or a ready onnxruntime session: ``FaceDetector`` (YuNet), ``align_matrix`` /
``warp_face`` (5-point alignment), ``merge_faces``; the swap step is ``dfl_perf.buffers.DFMRunner``. Also
``make_clip`` / ``VideoSource`` (frames in), ``model_path`` (the pinned models), ``BadFrameError``.

Submodules hold the rest: ``detector``, ``align``, ``merge``, ``landmarks`` (FaceMesh /
Peppa), ``clip``, ``models`` (registry and fetcher), ``standin`` (DFM-shaped stand-in model),
``frames``, ``job`` (what both runners share), ``baseline``, ``optimized``, ``workload`` (both
runners together). Names are imported on first use, so importing this package pulls in neither
onnxruntime nor cv2.
"""

from __future__ import annotations

import importlib
from typing import Any, List

_EXPORTS = {
    "Workload": "job", "RunStats": "job",
    "OptimizedRunner": "optimized", "BaselineRunner": "baseline",
    "FaceDetector": "detector",
    "align_matrix": "align", "warp_face": "align",
    "merge_faces": "merge",
    "make_clip": "clip", "VideoSource": "clip",
    "model_path": "models",
    "BadFrameError": "frames",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    value = getattr(importlib.import_module("%s.%s" % (__name__, module)), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
