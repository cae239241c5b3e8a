"""A model to load (``ModelSource``), checked once (``resolve_model``), and what names it: its content
digest with its external data files (``content_digest``) and its key (``model_identity``), the one
definition of "the same model" for ModelCache, the disk cache and the DFL adapter's factory."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Dict, Hashable, List, Optional, Tuple

from dfl_perf.files import file_stamp, sha256_file
from dfl_perf.sessions.errors import InvalidModelError, ModelNotFoundError

__all__ = ["ModelSource", "resolve_model", "content_digest", "model_identity"]

log = logging.getLogger("dfl_perf.sessions")


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


#: Where a serialized ONNX tensor says its data is in another file (StringStringEntryProto key "location").
EXTERNAL_MARKER = b"\x0a\x08location"

class _MarkerScan:
    """Whether the chunks of a file, fed in order, contain ``marker`` (also across chunk borders)."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.found = False
        self._tail = b""

    def __call__(self, chunk: bytes) -> None:
        if not self.found:
            keep = len(self.marker) - 1
            self.found = self.marker in chunk or self.marker in self._tail + chunk[:keep]
            self._tail = chunk[-keep:]


def _scan_file(path: str) -> Tuple[str, bool]:
    """(sha256 of the file, whether it holds an external-data reference), in one read."""
    scan = _MarkerScan(EXTERNAL_MARKER)
    return sha256_file(path, scan), scan.found


def _external_files(path: str) -> List[str]:
    """Relative locations of the external data files a model file refers to."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    found = set()

    def visit(graph) -> None:
        tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
        for node in graph.node:
            for attr in node.attribute:
                tensors.extend([attr.t] if attr.HasField("t") else [])
                tensors.extend(attr.tensors)
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(sub)
        for tensor in tensors:
            for entry in tensor.external_data:
                if entry.key == "location":
                    found.add(entry.value)

    visit(model.graph)
    return sorted(found)


def _with_external_data(real: str, sha: str) -> Optional[str]:
    """The model file's digest combined with each external data file's; None when they cannot be listed."""
    try:
        files = _external_files(real)
    except Exception as exc:  # onnx missing or the file unreadable
        log.info("cannot list the external data of %s (%s)", real, exc)
        return None
    digest = hashlib.sha256(sha.encode())
    for name in files:
        digest.update(("%s=%s;" % (name, sha256_file(os.path.join(os.path.dirname(real), name)))).encode())
    return digest.hexdigest()


_digests: Dict[Tuple[Any, ...], str] = {}  # (real path, stamp...) -> sha256, for this process
_digests_lock = threading.Lock()
_MAX_DIGESTS = 256


def content_digest(source: ModelSource) -> Tuple[Optional[str], bool]:
    """(sha256 of the model and of its external data files, whether it has external data).

    The digest is None when it cannot be known: an in-memory model whose external data lies
    relative to an unknown folder, or data files that cannot be listed (no ``onnx`` package). A
    file without external data is hashed once per file version in this process.
    """
    if source.path is None:
        data = source.data or b""
        if EXTERNAL_MARKER in data:
            return None, True
        return hashlib.sha256(data).hexdigest(), False
    real = os.path.realpath(source.path)
    stamp = (real,) + tuple(file_stamp(os.stat(real)))
    with _digests_lock:
        known = _digests.get(stamp)
    if known is not None:
        return known, False
    sha, external = _scan_file(real)
    if external:  # never remembered: the data files can change while the .onnx file does not
        return _with_external_data(real, sha), True
    with _digests_lock:
        if len(_digests) >= _MAX_DIGESTS:
            _digests.clear()
        _digests[stamp] = sha
    return sha, False


def model_identity(source: ModelSource, by_content: bool = False) -> Hashable:
    """A hashable key that names the model, not the object that carries it.

    In-memory models: ``('sha256', digest of the bytes)``. Files: ``('file', real path, size,
    mtime_ns, ctime_ns, inode)``, so a file replaced in place (even keeping size and mtime) gets a
    new key; with ``by_content`` ``('sha256', content_digest)`` instead (the same model at two paths,
    or as bytes, then shares a key; external data files count).
    """
    if source.path is None:
        return ("sha256", hashlib.sha256(source.data or b"").hexdigest())
    if by_content:
        digest, _ = content_digest(source)
        if digest is not None:
            return ("sha256", digest)
    real = os.path.realpath(source.path)
    return ("file", real) + tuple(file_stamp(os.stat(real)))
