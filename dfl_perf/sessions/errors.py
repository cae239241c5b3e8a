"""Typed errors for session creation: every one names the model file (or says it came from memory)."""

from __future__ import annotations

from typing import Optional

__all__ = [
    "ModelLoadError", "ModelNotFoundError", "InvalidModelError", "UnsupportedModelError", "ProviderError",
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
