"""The installed onnxruntime, seen from one place: the module (with an ImportError that names the
package to install), its version, its tensor types as numpy dtypes, and its error text made readable.

Importing this module imports nothing heavy: onnxruntime and numpy are imported by the functions
that need them.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

__all__ = ["ort_module", "ort_version", "numpy_dtype_of", "ort_message"]


def ort_module() -> Any:
    """The onnxruntime module, or an ImportError saying which package provides it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("dfl_perf needs onnxruntime for this (pip install onnxruntime, or onnxruntime-gpu / "
                          "onnxruntime-directml): %s" % exc) from None
    return onnxruntime


def ort_version() -> Tuple[int, ...]:
    """The installed onnxruntime version as ints, e.g. (1, 15, 1); (0,) when it is not installed.

    Suffixes are dropped ('1.17.0.dev20231010' -> (1, 17, 0)).
    """
    from dfl_perf.lazy import optional_import

    ort = optional_import("onnxruntime")
    if ort is None:
        return (0,)
    parts = []
    for piece in str(ort.__version__).split(".")[:3]:
        digits = re.match(r"\d*", piece).group()  # type: ignore[union-attr]
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


_DTYPES: Dict[str, Any] = {}
_TYPE_NAMES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "object",
}


def numpy_dtype_of(ort_type: str) -> Optional[Any]:
    """The numpy dtype of an onnxruntime type string such as 'tensor(float)' (strings: object);
    None for a type numpy has no dtype for (bfloat16, sequences, maps)."""
    if not _DTYPES:
        import numpy as np

        _DTYPES.update((name, np.dtype(dtype)) for name, dtype in _TYPE_NAMES.items())
    return _DTYPES.get(ort_type)


# ------------------------------------------------------------------------------------- error text

_CODE_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_FAILED = re.compile(r"^Load model from .*? failed:\s*")
_LOG_PREFIX = re.compile(r"\S+\.(?:cc|h|cpp|hpp):\d+ [^\]\s(]*\] ")  # 'sequential_executor.cc:514 ExecuteKernel] '
_SOURCE_REF = re.compile(r"\S+\.(?:cc|h|cpp|hpp):\d+ ")


def _strip_signature(text: str) -> str:
    """Drop onnxruntime's '<file>:<line> <C++ signature>(...)' prefix, keeping the human message."""
    match = _SOURCE_REF.search(text)
    if not match:
        return text
    start = text.find("(", match.end())
    if start < 0:
        return text
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return (text[:match.start()] + text[index + 1:]).strip()
    return text


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error text on one line, without its code prefix, source file names and C++ signatures."""
    text = " ".join(str(exc).split())
    text = _LOAD_FAILED.sub("", _CODE_PREFIX.sub("", text))
    text = _strip_signature(_LOG_PREFIX.sub("", text))
    return text.strip() or type(exc).__name__
