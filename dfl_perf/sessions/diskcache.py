"""On-disk cache of onnxruntime's optimized graphs, shared by every process of the user.

Layout under ``dfl_perf.paths.user_cache_dir() / 'optimized'`` (created 0o700):

- ``<key>.onnx``: the optimized graph onnxruntime saved (``optimized_model_filepath``);
- ``<key>.json``: its sidecar: sha256 and size of the ``.onnx`` file, onnxruntime version,
  providers; or ``{"cacheable": false, "reason": ...}`` when onnxruntime refused to save one;
- ``locks/<key>.lock``: an operating-system file lock (``filelock``) held by the one process that is
  writing the entry (others build without saving); the system frees it when that process ends,
  however it ends, so there is no stale lock to guess about;
- ``sources/<hash of path>.json``: the sha256 of a source model, keyed by its size, mtime and inode,
  so a later process does not hash a 500 MB model again.

``<key>`` hashes the source model's content (with its external data files), the onnxruntime
version, the providers and their options, the CPU (optimized graphs hold CPU-specific layouts)
and the config fields that change the graph. Files are written to a temporary name and renamed;
a file whose sha256 does not match its sidecar, or that onnxruntime cannot load, is rebuilt. The
sha256 is recomputed only when the file's stamp (size, mtime, ctime, inode) differs from the one
recorded at writing, so an unchanged 500 MB entry costs no hashing at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from dfl_perf.files import file_stamp, sha256_file, write_atomic
from dfl_perf.ortinfo import ort_module
from dfl_perf.sessions.config import ProviderEntry, SessionConfig
from dfl_perf.sessions.source import ModelSource, content_digest

__all__ = ["OptimizedModelCache", "optimized_cache_dir", "cpu_fingerprint"]

log = logging.getLogger("dfl_perf.sessions")

FORMAT = 1
#: Hash the cached file on every load even when its stamp is unchanged (costs about 1 s per GB).
ALWAYS_VERIFY_SHA256 = False


def optimized_cache_dir() -> Path:
    """Where optimized graphs are kept (``DFL_PERF_CACHE_DIR`` overrides the root); not created here."""
    from dfl_perf.paths import user_cache_dir

    return user_cache_dir() / "optimized"


_fingerprint: Optional[str] = None


def cpu_fingerprint() -> str:
    """Machine architecture, CPU model and vector-extension flags that decide onnxruntime's kernels."""
    global _fingerprint
    if _fingerprint is None:
        parts = [platform.system(), platform.machine(), platform.processor()]
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
                text = handle.read(1 << 16)
            for line in text.splitlines():
                if line.startswith("model name"):
                    parts.append(line.split(":", 1)[1].strip())
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    parts.extend(sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c", "sse4"))))
                    break
        except OSError:
            pass
        _fingerprint = "|".join(parts)
    return _fingerprint


class _Writer:
    """The right to write one entry: a temp path for onnxruntime and ``commit``."""

    def __init__(self, cache: OptimizedModelCache, key: str) -> None:
        self.cache = cache
        self.key = key
        fd, name = tempfile.mkstemp(dir=str(cache.directory()), prefix=key + ".", suffix=".onnx.tmp")
        os.close(fd)
        self.temp_path = Path(name)

    def commit(self, meta: Dict[str, Any]) -> Path:
        """Hash the file onnxruntime wrote, rename it into place, then write the sidecar."""
        if not self.temp_path.is_file() or self.temp_path.stat().st_size == 0:
            raise OSError("onnxruntime wrote no optimized model to %s" % self.temp_path)
        os.chmod(str(self.temp_path), 0o600)
        sha = sha256_file(self.temp_path)
        target = self.cache.model_path(self.key)
        meta = dict(meta, format=FORMAT, cacheable=True, sha256=sha, size=self.temp_path.stat().st_size,
                    file=target.name, created=time.time())
        os.replace(str(self.temp_path), str(target))
        meta["stamp"] = file_stamp(target.stat())
        write_atomic(self.cache.meta_path(self.key), json.dumps(meta, indent=1, sort_keys=True).encode())
        return target

    def mark_uncacheable(self, reason: str) -> None:
        meta = {"format": FORMAT, "cacheable": False, "reason": reason, "created": time.time()}
        write_atomic(self.cache.meta_path(self.key), json.dumps(meta, sort_keys=True).encode())

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temp_path.unlink()


class OptimizedModelCache:
    """The optimized-graph folder (see the module docstring); ``root`` defaults to ``optimized_cache_dir()``."""

    def __init__(self, root: Optional[Path] = None) -> None:
        self.root = Path(root) if root is not None else optimized_cache_dir()

    def directory(self) -> Path:
        from dfl_perf.paths import ensure_private_dir

        return ensure_private_dir(self.root)

    def model_path(self, key: str) -> Path:
        return self.root / (key + ".onnx")

    def meta_path(self, key: str) -> Path:
        return self.root / (key + ".json")

    # ------------------------------------------------------------------------------ keys

    def source_digest(self, source: ModelSource) -> Tuple[Optional[str], bool]:
        """``content_digest(source)`` (sha256 of the model and its external data files, whether it has
        external data), remembered on disk by the file's stamp so a later process does not hash a
        500 MB model again. The digest is None when the model cannot be cached."""
        if source.path is None:
            return content_digest(source)
        real = os.path.realpath(source.path)
        stamp = file_stamp(os.stat(real))
        memo = self.directory() / "sources" / (hashlib.sha256(real.encode("utf-8", "replace")).hexdigest()[:32]
                                               + ".json")
        try:
            known = json.loads(memo.read_text())
            if known.get("path") == real and known.get("stamp") == stamp and not known.get("external"):
                return known["sha256"], False
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        digest, external = content_digest(source)
        if digest is not None and not external:  # never memoised: the data files can change alone
            with contextlib.suppress(OSError):
                memo.parent.mkdir(mode=0o700, exist_ok=True)
                write_atomic(memo, json.dumps({"path": real, "stamp": stamp, "sha256": digest}).encode())
        return digest, external

    @staticmethod
    def key(source_digest: str, config: SessionConfig, providers: List[ProviderEntry]) -> str:
        """The entry name for a model digest built with ``config`` on ``providers``."""
        parts = {
            "format": FORMAT, "source": source_digest, "onnxruntime": str(ort_module().__version__),
            "providers": [[name, list(map(list, options))] for name, options in providers],
            "cpu": cpu_fingerprint(), "level": config.graph_optimization,
            "free_dimensions": list(map(list, config.free_dimensions)),
            "entries": list(map(list, config.config_entries)),
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]

    # ---------------------------------------------------------------------------- lookup

    def read_meta(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            meta = json.loads(self.meta_path(key).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None

    def verified_file(self, key: str, meta: Dict[str, Any]) -> Optional[Path]:
        """The entry's model file when it matches its sidecar; None when missing or corrupt.

        The file's sha256 is checked against the sidecar unless its stamp (size, mtime, ctime,
        inode) is still the one recorded when it was written (any write, truncation or replacement
        changes the stamp); ``ALWAYS_VERIFY_SHA256`` forces the full check on every load.
        """
        path = self.model_path(key)
        try:
            stat = path.stat()
        except OSError:
            return None
        if stat.st_size != meta.get("size"):
            return None
        if not ALWAYS_VERIFY_SHA256 and meta.get("stamp") == file_stamp(stat):
            return path
        return path if sha256_file(path) == meta.get("sha256") else None

    # ---------------------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[bool]:
        """Hold the entry's lock for the block (True), or False at once when another process holds it."""
        from filelock import FileLock, Timeout

        folder = self.directory() / "locks"
        folder.mkdir(mode=0o700, exist_ok=True)
        lock = FileLock(str(folder / (key + ".lock")), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        except NotImplementedError as exc:  # a file system without locks (some network shares)
            raise OSError("cannot lock the optimized-model cache in %s: %s" % (folder, exc)) from None
        try:
            yield True
        finally:
            lock.release()

    @contextlib.contextmanager
    def writing(self, key: str) -> Iterator[Optional[_Writer]]:
        """Yield a ``_Writer`` holding the entry's lock, or None when another process holds it."""
        with self._locked(key) as held:
            if not held:
                yield None
                return
            writer = None
            try:
                self._remove_leftovers(key)
                writer = _Writer(self, key)
                yield writer
            finally:
                if writer is not None:
                    writer.discard()

    def _remove_leftovers(self, key: str) -> None:
        """Temp files of this entry left by a writer that crashed (we hold the entry's lock)."""
        for leftover in self.root.glob(key + ".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def invalidate(self, key: str) -> None:
        """Remove an entry (under its lock when free); a missing entry is fine."""
        with self._locked(key) as held:
            if not held:
                return
            for path in (self.meta_path(key), self.model_path(key)):
                with contextlib.suppress(OSError):
                    path.unlink()
