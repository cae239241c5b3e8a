"""A model to load (``ModelSource``), checked once (``resolve_model``), and the key that names it
(``model_identity``): the one definition of "the same model" for every cache of dfl_perf."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Hashable, Optional, Tuple

from dfl_perf.files import file_stamp, sha256_file
from dfl_perf.sessions.errors import InvalidModelError, ModelNotFoundError

__all__ = ["ModelSource", "resolve_model", "model_identity"]


@dataclass(frozen=True)
class ModelSource:
    """A model to load: a checked file ``path`` and/or in-memory ``data`` (serialized ONNX; used when set)."""

    path: Optional[str]
    data: Optional[bytes]

    @property
    def label(self) -> str:
        return self.path if self.path is not None else "<in-memory model, %d bytes>" % len(self.data or b"")

    @property
    def size(self) -> int:
        return os.path.getsize(self.path) if self.path is not None else len(self.data or b"")

    def ort_input(self) -> Any:
        """What onnxruntime's InferenceSession takes: the bytes when set, else the path."""
        return self.data if self.data is not None else self.path


def resolve_model(model: Any) -> ModelSource:
    """Check ``model`` (path, bytes or ``onnx.ModelProto``) and return it as a ModelSource."""
    if isinstance(model, ModelSource):
        return model
    if hasattr(model, "SerializeToString") and hasattr(model, "graph"):
        return resolve_model(model.SerializeToString())
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not data:
            raise InvalidModelError("model bytes are empty: nothing to load", None, "empty")
        return ModelSource(None, data)
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.exists(path):
            raise ModelNotFoundError("model file not found: %s" % path, path, "missing")
        if os.path.isdir(path):
            raise ModelNotFoundError("model path is a directory, not an ONNX file: %s" % path, path, "directory")
        if os.path.getsize(path) == 0:
            raise InvalidModelError("model file is empty (0 bytes): %s" % path, path, "empty")
        return ModelSource(path, None)
    raise TypeError("model must be a path, model bytes or onnx.ModelProto, got %s" % type(model).__name__)


_digests: Dict[Tuple[Any, ...], str] = {}  # (real path, stamp...) -> sha256, for this process
_digests_lock = threading.Lock()
_MAX_DIGESTS = 256


def model_identity(source: ModelSource, by_content: bool = False) -> Hashable:
    """A hashable key that names the model, not the object that carries it.

    In-memory models: ``('sha256', digest of the bytes)``. Files: ``('file', real path, size,
    mtime_ns, ctime_ns, inode)``, so a file replaced in place (even keeping size and mtime) gets a
    new key; with ``by_content`` ``('sha256', digest of the file)`` instead (the same model at two
    paths, or as bytes, then shares a key; hashed once per file version in this process).
    """
    if source.path is None:
        return ("sha256", hashlib.sha256(source.data or b"").hexdigest())
    real = os.path.realpath(source.path)
    stamp = (real,) + tuple(file_stamp(os.stat(real)))
    if not by_content:
        return ("file",) + stamp
    with _digests_lock:
        digest = _digests.get(stamp)
    if digest is None:
        digest = sha256_file(real)
        with _digests_lock:
            if len(_digests) >= _MAX_DIGESTS:
                _digests.clear()
            _digests[stamp] = digest
    return ("sha256", digest)
