"""The reference face-swap workload: detect, (mark), align, swap (DFM), merge; plus models and a test clip.

Each step is a plain function or a small class that takes a model path, a registry name or a
ready onnxruntime session, so a caller can run it the DFL way (plain sessions, fresh arrays) or
the optimized way (tuned sessions, pooled ``out=`` buffers, its own runner) with the same results.

Submodules: ``detector`` (YuNet ``FaceDetector``), ``align`` (5-point similarity transform),
``merge`` (``merge_face``), ``landmarks`` (FaceMesh / Peppa),
``clip`` (``make_clip``, ``open_source``), ``models`` (registry and fetcher), ``standin``
(DFM-shaped stand-in model), ``frames`` (``check_frame``: the frames the runners accept); the swap
step is ``dfl_perf.buffers.DFMRunner``. Names below are imported on first use, so importing this package pulls in neither onnxruntime nor cv2.
"""

from __future__ import annotations

import importlib
from typing import Any, List

_EXPORTS = {
    "Face": "detector", "FaceDetector": "detector",
    "similarity_transform": "align", "align_matrix": "align", "warp_face": "align",
    "invert_affine": "align", "transform_points": "align", "template_points": "align",
    "feather_mask": "merge", "merge_face": "merge", "merge_faces": "merge",
    "Landmarks": "landmarks", "FaceMeshLandmarker": "landmarks", "PeppaLandmarker": "landmarks",
    "SyntheticClip": "clip", "make_clip": "clip", "open_source": "clip", "VideoSource": "clip",
    "ModelInfo": "models", "REGISTRY": "models", "ModelFetchError": "models", "model_path": "models",
    "fetch": "models", "models_main": "models",
    "build_dfm_standin": "standin",
    "BadFrameError": "frames", "check_frame": "frames",
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
