"""``ModelCache``: a thread-safe, single-flight LRU of onnxruntime sessions with byte accounting."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Optional, Tuple

from dfl_perf.listeners import Listeners
from dfl_perf.sessions.config import GPU_PROVIDERS, SessionConfig
from dfl_perf.sessions.create import create_session_with_info
from dfl_perf.sessions.measure import clamp_measured, estimate_bytes, measured_create
from dfl_perf.sessions.source import ModelSource, model_identity, resolve_model
from dfl_perf.sessions.warmup import warmup_session

__all__ = ["ModelCache"]

_STAT_NAMES = ("hits", "misses", "waits", "loads", "load_failures", "evictions", "trimmed")


@dataclass
class _Entry:
    key: Hashable
    session: Any
    bytes: int
    memory_kind: str
    label: str
    config: SessionConfig
    load_seconds: float
    pins: int = 0


def _free_unless_held(entry: _Entry) -> bool:
    """Drop the cache's reference to the entry's session; True when that freed it.

    A session that a lease pins or a caller still references stays alive, and the cache takes its
    reference back: "held" is decided by a weak reference, not by counting references (where
    objects are not freed at once, as on PyPy, a session then counts as held until collected).
    """
    if entry.pins:
        return False
    ref = weakref.ref(entry.session)
    entry.session = None
    entry.session = ref()
    return entry.session is None


def _device_id(config: SessionConfig) -> Optional[int]:
    name, options = config.resolved_providers()[0]
    if name not in GPU_PROVIDERS:
        return None
    try:
        return int(dict(options).get("device_id", "0"))
    except ValueError:
        return 0


class ModelCache:
    """An LRU of sessions keyed by model identity and ``SessionConfig``.

    - Model identity: (real path, size, mtime_ns, ctime_ns, inode) for files, so a replacement that
      keeps size and mtime (cp -p, rsync -t, unzip) is still seen; the sha256 of the content for bytes and
      ModelProto, and for files too with ``hash_keys=True`` (the same model at two paths then shares).
    - Single-flight: threads asking for the same key at once share one load; a failed load raises
      in every waiter and is not cached.
    - ``max_models``/``max_bytes`` evict least recently used entries, whether or not a caller still
      holds the session (a held session keeps working; its memory is freed when the caller drops it).
      ``trim`` frees only sessions nobody holds (not leased, no reference outside the cache).
    - ``on_grow``: ``Listeners`` called after a load adds a session (a ``MemoryManager`` the cache
      is registered with enforces its budget then).
    - Bytes per session: process RSS delta around creation ('host' entries) or NVML's per-process
      GPU memory delta ('device' entries: first active provider is a GPU one), clamped to
      [file size, 3x file size + 32 MiB]; ``file size * 1.5`` when it cannot be measured or with
      ``measure=False``. Concurrent loads blur the measurement.
    - ``memory_kind`` is the kind of the cache's default config ('host' or 'device'); each entry has
      its own, and ``bytes_held(kind)`` counts one kind.

    ``config`` defaults to ``SessionConfig.tuned()``. Starts a thread only for ``preload``; call
    ``close()`` or use it as a context manager.
    """

    def __init__(self, max_models: Optional[int] = None, max_bytes: Optional[int] = None,
                 config: Optional[SessionConfig] = None, hash_keys: bool = False, measure: bool = True) -> None:
        if max_models is not None and max_models < 1:
            raise ValueError("max_models must be >= 1 or None, got %r" % (max_models,))
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 or None, got %r" % (max_bytes,))
        self.max_models = max_models
        self.max_bytes = max_bytes
        self.config = config if config is not None else SessionConfig.tuned()
        self.hash_keys = hash_keys
        self.measure = measure
        self._lock = threading.Lock()
        self._entries: OrderedDict = OrderedDict()
        self._pending: Dict[Hashable, Future] = {}
        self._stats: Dict[str, float] = dict.fromkeys(_STAT_NAMES, 0)
        self._stats["load_seconds"] = 0.0
        self._executor: Optional[ThreadPoolExecutor] = None
        self._submitted: List[Future] = []
        self._closed = False
        self.on_grow = Listeners()

    @property
    def memory_kind(self) -> str:
        """'device' when the default config's first provider is a GPU one, else 'host'."""
        return self.config.memory_kind

    # ------------------------------------------------------------------------------------- keys

    def _key(self, model: Any, config: Optional[SessionConfig]) -> Tuple[Hashable, ModelSource, SessionConfig]:
        config = self.config if config is None else config
        source = resolve_model(model)
        return (model_identity(source, by_content=self.hash_keys), config), source, config

    # ------------------------------------------------------------------------------------- get

    def get(self, model: Any, config: Optional[SessionConfig] = None):
        """The session for ``model`` (path, bytes or ModelProto) built with ``config`` (default: the cache's)."""
        return self._get_entry(model, config)[1]

    def _get_entry(self, model: Any, config: Optional[SessionConfig]) -> Tuple[_Entry, Any]:
        """(entry, its session): the session is read under the lock, so a trim cannot free it between."""
        key, source, config = self._key(model, config)
        with self._lock:
            if self._closed:
                raise RuntimeError("ModelCache is closed")
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._stats["hits"] += 1
                return entry, entry.session
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
                self._stats["misses"] += 1
            else:
                self._stats["waits"] += 1
        if not owner:
            return pending.result()
        return self._load(key, source, config, pending)

    def _load(self, key: Hashable, source: ModelSource, config: SessionConfig, pending: Future) -> Tuple[_Entry, Any]:
        try:
            entry = self._create_entry(key, source, config)
        except BaseException as exc:
            with self._lock:
                del self._pending[key]
                self._stats["load_failures"] += 1
            pending.set_exception(exc)
            raise
        loaded = (entry, entry.session)
        with self._lock:
            del self._pending[key]
            self._entries[key] = entry
            self._entries.move_to_end(key)
            self._stats["loads"] += 1
            self._stats["load_seconds"] += entry.load_seconds
            self._enforce_limits(keep=key)
        pending.set_result(loaded)
        self.on_grow.notify()
        return loaded

    def _create_entry(self, key: Hashable, source: ModelSource, config: SessionConfig) -> _Entry:
        started = time.perf_counter()
        info, host, device = measured_create(lambda: create_session_with_info(source, config),
                                             device_id=_device_id(config), measure=self.measure)
        seconds = time.perf_counter() - started
        kind = "device" if info.providers and info.providers[0] in GPU_PROVIDERS else "host"
        size = source.size
        if not self.measure:
            nbytes = estimate_bytes(size)
        else:
            nbytes = clamp_measured(device if kind == "device" else host, size)
        return _Entry(key, info.session, nbytes, kind, source.label, config, seconds)

    @contextlib.contextmanager
    def lease(self, model: Any, config: Optional[SessionConfig] = None) -> Iterator[Any]:
        """Yield the session pinned: ``trim`` will not evict it while the block runs."""
        entry, session = self._get_entry(model, config)
        with self._lock:
            entry.pins += 1
        try:
            yield session
        finally:
            with self._lock:
                entry.pins -= 1

    # --------------------------------------------------------------------------------- preload

    def preload(self, models: Iterable[Any], background: bool = True,
                config: Optional[SessionConfig] = None) -> List[Future]:
        """Load ``models``; return one Future per model (its result is the session, or its error).

        With ``background`` the loads run one after another on a worker thread (session creation
        holds the GIL, so more threads would not load faster); otherwise here, before returning.
        A Future you keep holds its session, so ``trim`` counts that session as held.
        """
        futures: List[Future] = []
        for model in models:
            if background:
                with self._lock:
                    if self._closed:
                        raise RuntimeError("ModelCache is closed")
                    if self._executor is None:
                        self._executor = ThreadPoolExecutor(1, thread_name_prefix="dfl_perf-preload")
                    future = self._executor.submit(self.get, model, config)
                    self._submitted = [f for f in self._submitted if not f.done()] + [future]
            else:
                future = Future()
                try:
                    future.set_result(self.get(model, config))
                except Exception as exc:
                    future.set_exception(exc)
            futures.append(future)
        return futures

    def warmup(self, session: Any, runs: int = 1) -> List[float]:
        """Run ``session`` ``runs`` times on zero inputs of its declared shapes; symbolic dimensions
        come from the config it was loaded with (``free_dimensions``), else 1. Returns run seconds."""
        dims: Dict[str, int] = {}
        with self._lock:
            for entry in self._entries.values():
                if entry.session is session:
                    dims = dict(entry.config.free_dimensions)
                    break
            else:
                dims = dict(self.config.free_dimensions)
        return warmup_session(session, runs, dims)

    # -------------------------------------------------------------------------------- eviction

    def _drop(self, key: Hashable) -> _Entry:
        entry = self._entries.pop(key)
        self._stats["evictions"] += 1
        return entry

    def _total_bytes(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def _enforce_limits(self, keep: Hashable) -> None:
        """Evict LRU entries (held or not) until within max_models and max_bytes; never ``keep``."""
        while True:
            over_count = self.max_models is not None and len(self._entries) > self.max_models
            over_bytes = self.max_bytes is not None and self._total_bytes() > self.max_bytes
            victims = [k for k in self._entries if k != keep]
            if not (over_count or over_bytes) or not victims:
                return
            self._drop(victims[0])

    def evict(self, model: Any, config: Optional[SessionConfig] = None) -> bool:
        """Drop ``model``'s session built with ``config``; True when there was one."""
        key, _, _ = self._key(model, config)
        with self._lock:
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    def trim(self, max_bytes_to_free: Optional[int] = None) -> int:
        """Evict least recently used sessions nobody holds until ``max_bytes_to_free`` bytes are freed
        (all of them when None); return the bytes freed. Held sessions are skipped."""
        freed = 0
        with self._lock:
            for key in list(self._entries):
                if max_bytes_to_free is not None and freed >= max_bytes_to_free:
                    break
                entry = self._entries[key]
                if not _free_unless_held(entry):
                    continue
                freed += self._drop(key).bytes
                self._stats["trimmed"] += 1
        return freed

    def clear(self) -> None:
        """Drop every session (loads in flight still finish and are cached)."""
        with self._lock:
            self._stats["evictions"] += len(self._entries)
            self._entries.clear()

    # ----------------------------------------------------------------------------------- state

    def bytes_held(self, kind: Optional[str] = None) -> int:
        """Bytes of the cached sessions ('host' or 'device' entries only, when ``kind`` is given)."""
        with self._lock:
            return sum(e.bytes for e in self._entries.values() if kind is None or e.memory_kind == kind)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, model: Any) -> bool:
        key, _, _ = self._key(model, None)
        with self._lock:
            return key in self._entries

    def stats(self) -> Dict[str, Any]:
        """Counters (hits, misses, waits, loads, load_failures, evictions, trimmed, load_seconds) and
        the current models, bytes, bytes_host, bytes_device, max_models, max_bytes."""
        with self._lock:
            out: Dict[str, Any] = {k: (v if k == "load_seconds" else int(v)) for k, v in self._stats.items()}
            entries = list(self._entries.values())
        out.update(models=len(entries), bytes=sum(e.bytes for e in entries),
                   bytes_host=sum(e.bytes for e in entries if e.memory_kind == "host"),
                   bytes_device=sum(e.bytes for e in entries if e.memory_kind == "device"),
                   max_models=self.max_models, max_bytes=self.max_bytes)
        return out

    def close(self) -> None:
        """Stop the preload thread (queued preloads are cancelled) and drop every session."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            submitted, self._submitted = self._submitted, []
        for future in submitted:
            future.cancel()
        if executor is not None:
            executor.shutdown(wait=True)
        self.clear()

    def __enter__(self) -> ModelCache:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
