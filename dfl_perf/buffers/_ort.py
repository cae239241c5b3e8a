"""Small onnxruntime helpers shared by the buffers package (imported lazily, feature-detected)."""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["ort_module", "ort_version", "parse_device", "numpy_dtype_of", "short_error", "BoundSessionError"]

_ORT_TENSOR_TYPES: Dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


class BoundSessionError(RuntimeError):
    """onnxruntime refused a run or a binding; the message says which tensor and why."""


def ort_module() -> Any:
    """The onnxruntime module, or ImportError saying which package provides it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("dfl_perf.buffers needs onnxruntime (pip install dfl_perf[cpu] or "
                          "onnxruntime-gpu / onnxruntime-directml): %s" % exc) from None
    return onnxruntime


def ort_version() -> Tuple[int, ...]:
    """The installed onnxruntime version as a tuple of ints, e.g. (1, 15, 1)."""
    parts = re.findall(r"\d+", ort_module().__version__)[:3]
    return tuple(int(p) for p in parts)


def parse_device(device: str, device_id: int = 0) -> Tuple[str, int]:
    """'cuda:1' -> ('cuda', 1); ('cuda', 2) -> ('cuda', 2); 'cpu' -> ('cpu', 0)."""
    if not isinstance(device, str) or not device:
        raise ValueError("device must be a string such as 'cpu' or 'cuda:0', got %r" % (device,))
    name, sep, index = device.strip().lower().partition(":")
    if sep:
        if not index.isdigit():
            raise ValueError("device %r: the part after ':' must be a device index" % device)
        device_id = int(index)
    if int(device_id) < 0:
        raise ValueError("device %r: device_id must be >= 0, got %d" % (device, device_id))
    return name, (0 if name == "cpu" else int(device_id))


def numpy_dtype_of(ort_type: str) -> Optional[np.dtype]:
    """numpy dtype for an onnxruntime type string like 'tensor(float)'; None when there is none."""
    dt = _ORT_TENSOR_TYPES.get(ort_type)
    return None if dt is None else np.dtype(dt)


def short_error(exc: BaseException) -> str:
    """onnxruntime's message without its source-file prefix, on one line."""
    text = " ".join(str(exc).split())
    text = re.sub(r"/\S+\.(cc|h|cpp):\d+ [^\]]*\] ", "", text)
    return text or type(exc).__name__
