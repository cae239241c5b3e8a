"""Typed errors for session creation (every one names the model file, or says it came from
memory), and the mapping of onnxruntime's load failures onto them (``load_error``)."""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

from dfl_perf.ortinfo import ort_message, ort_version

__all__ = [
    "ModelLoadError", "ModelNotFoundError", "InvalidModelError", "UnsupportedModelError", "ProviderError",
    "load_error", "is_model_problem",
]


class ModelLoadError(Exception):
    """A model could not be turned into a session. ``path`` is the file (None for bytes/ModelProto)."""

    def __init__(self, message: str, path: Optional[str] = None, reason: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message

    def __reduce__(self):  # keep the extra fields across pickling (processes, futures)
        return (type(self), (str(self), self.path, self.reason))


class ModelNotFoundError(ModelLoadError):
    """The path does not exist, or is a directory rather than a file."""


class InvalidModelError(ModelLoadError):
    """The file is empty, truncated, or not an ONNX model at all."""


class UnsupportedModelError(ModelLoadError):
    """A valid ONNX model this onnxruntime cannot run (opset or IR version too new, unknown operator)."""


class ProviderError(ModelLoadError):
    """An execution provider is unavailable or failed to initialise (strict config), or every provider failed."""


# ------------------------------------------------------------- onnxruntime's failures, as these errors

_UNSUPPORTED_SIGNS = ("ir version", "no opset import for domain", "no op registered for",
                      "could not find an implementation", "unrecognized attribute", "is not a registered function/op")
_OPSET_ASKED = re.compile(r"Opset (\d+) is under development")
_OPSET_SUPPORTED = re.compile(r"is till opset (\d+)")


def _classify(text: str, label: str) -> Tuple[type, str]:
    lowered = text.lower()
    if "no_suchfile" in lowered or "doesn't exist" in lowered:
        return ModelNotFoundError, "model file not found: %s" % label
    if "protobuf parsing failed" in lowered or "invalid_protobuf" in lowered or "no graph was found" in lowered:
        return InvalidModelError, ("%s is not a valid ONNX model: the file is truncated, corrupt or not ONNX"
                                   % label)
    opset = "opset" in lowered and ("under development" in lowered or "is till opset" in lowered)
    if opset or any(sign in lowered for sign in _UNSUPPORTED_SIGNS):
        version = ".".join(str(part) for part in ort_version())
        return UnsupportedModelError, "%s cannot run on onnxruntime %s" % (label, version)
    if "this is an invalid model" in lowered:
        return InvalidModelError, "%s is an invalid ONNX graph" % label
    return ModelLoadError, "could not load %s" % label


def is_model_problem(exc: BaseException) -> bool:
    """True when onnxruntime's failure is the model's fault (missing, corrupt, unsupported), so
    another execution provider would fail the same way."""
    return isinstance(exc, ModelLoadError) or _classify(str(exc), "")[0] is not ModelLoadError


def _opset_summary(text: str) -> Optional[str]:
    asked, supported = _OPSET_ASKED.search(text), _OPSET_SUPPORTED.search(text)
    if not asked:
        return None
    return "the model uses opset %s; this onnxruntime supports ai.onnx up to opset %s" % (
        asked.group(1), supported.group(1) if supported else "?")


def load_error(exc: BaseException, label: str, path: Optional[str], providers: List[str]) -> ModelLoadError:
    """onnxruntime's failure to load the model ``label`` (file ``path``) as the typed error that fits it."""
    if isinstance(exc, ModelLoadError):
        return exc
    detail = _opset_summary(str(exc)) or ort_message(exc)
    kind, head = _classify(str(exc), label)
    if kind is ModelLoadError:
        head += " with providers %s" % ", ".join(providers)
    return kind("%s (onnxruntime: %s)" % (head, detail), path, detail)
