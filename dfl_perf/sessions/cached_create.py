"""Building a session through the on-disk optimized-model cache (see ``diskcache`` for the layout).

Sits above ``build`` (which opens sessions) and ``diskcache`` (which stores the files); only
``create`` calls it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dfl_perf.ortinfo import ort_message
from dfl_perf.sessions.build import open_session
from dfl_perf.sessions.config import ProviderEntry, SessionConfig
from dfl_perf.sessions.diskcache import OptimizedModelCache, optimized_cache_dir
from dfl_perf.sessions.errors import is_model_problem, load_error
from dfl_perf.sessions.source import ModelSource

__all__ = ["create_through_disk_cache", "CACHED_LOAD_LEVEL"]

log = logging.getLogger("dfl_perf.sessions")

#: Graph optimisation level used to load a cached optimized graph: the work is already done, and
#: benchmarks/bench_sessions.py (disk-cache section) measures this as the fastest start.
CACHED_LOAD_LEVEL = "disable"

_caches: Dict[str, OptimizedModelCache] = {}
_caches_lock = threading.Lock()

Built = Tuple[Any, str]  # (session or None, outcome)


def _cache_for_root(root: Path) -> OptimizedModelCache:
    with _caches_lock:
        cache = _caches.get(str(root))
        if cache is None:
            cache = _caches[str(root)] = OptimizedModelCache(root)
        return cache


def create_through_disk_cache(source: ModelSource, config: SessionConfig, providers: List[ProviderEntry]) -> Built:
    """(session, outcome) through the disk cache; outcome is 'hit', 'stored', 'busy', 'uncacheable'
    or 'failed'. A session of None tells the caller to build it the plain way."""
    cache = _cache_for_root(optimized_cache_dir())
    try:
        digest, external = cache.source_digest(source)
    except OSError as exc:
        log.warning("optimized-model cache unavailable for %s: %s", source.label, exc)
        return None, "failed"
    if digest is None:
        return None, "uncacheable"
    key = cache.key(digest, config, providers)
    meta = cache.read_meta(key)
    if meta is not None and not meta.get("cacheable", True):
        return None, "uncacheable"
    hit, state = _load_cached(cache, key, meta, source, config, providers)
    if hit is not None:
        return hit, "hit"
    session = None
    try:
        with cache.writing(key) as writer:
            if writer is None:
                return None, "busy"
            if state == "absent":  # another process may have written it while we looked
                hit, _ = _load_cached(cache, key, cache.read_meta(key), source, config, providers)
                if hit is not None:
                    return hit, "hit"
            if external:
                source = _inlined(source)
                if source is None:
                    return None, "uncacheable"
            session, reason = _build_saving(writer.temp_path, source, config, providers)
            if session is None:
                return None, "failed"  # the provider itself fails: the caller's fallback chain handles it
            if reason is not None:
                writer.mark_uncacheable(reason)
                return session, "uncacheable"
            writer.commit({"providers": [n for n, _ in providers], "source_sha256": digest, "source": source.path})
            return session, "stored"
    except OSError as exc:
        log.warning("could not write the optimized-model cache in %s: %s", cache.root, exc)
        return session, "failed"


def _build_saving(target: Path, source: ModelSource, config: SessionConfig,
                  providers: List[ProviderEntry]) -> Tuple[Any, Optional[str]]:
    """(session, None) with its optimized graph saved at ``target``; (session, why) when onnxruntime
    cannot save one (the session is built without saving); (None, None) when the provider fails."""
    options = config.to_session_options()
    options.optimized_model_filepath = str(target)
    try:
        return open_session(source.ort_input(), options, providers), None
    except Exception as exc:
        if is_model_problem(exc):
            raise load_error(exc, source.label, source.path, [n for n, _ in providers]) from None
        reason = ort_message(exc)
    try:
        session = open_session(source.ort_input(), config.to_session_options(), providers)
    except Exception:
        return None, None
    log.info("onnxruntime cannot save an optimized model of %s with %s: %s", source.label, providers[0][0], reason)
    return session, reason


def _inlined(source: ModelSource) -> Optional[ModelSource]:
    """The model with its external data read in, as bytes: onnxruntime then saves a self-contained
    optimized file. None when that is impossible (no onnx module, over protobuf's 2 GB)."""
    try:
        import onnx

        return ModelSource(source.path, onnx.load(source.path).SerializeToString())
    except Exception as exc:
        log.info("not caching %s: cannot inline its external data (%s)", source.label, exc)
        return None


def _load_cached(cache: OptimizedModelCache, key: str, meta: Optional[Dict[str, Any]], source: ModelSource,
                 config: SessionConfig, providers: List[ProviderEntry]) -> Tuple[Any, str]:
    """(session, 'hit') from the entry, or (None, 'absent' | 'corrupt' | 'unloadable').

    A bad entry is left in place: the writer that rebuilds it replaces it under the entry's lock.
    """
    if meta is None or not meta.get("cacheable", True):
        return None, "absent"
    path = cache.verified_file(key, meta)
    if path is None:
        log.warning("optimized-model cache entry %s for %s is missing or corrupt (sha256 mismatch); rebuilding it",
                    cache.model_path(key), source.label)
        return None, "corrupt"
    options = config.replace(graph_optimization=CACHED_LOAD_LEVEL).to_session_options()
    try:
        return open_session(str(path), options, providers), "hit"
    except Exception as exc:
        log.warning("cached optimized model %s for %s does not load (%s); rebuilding it from the model",
                    path, source.label, ort_message(exc))
        return None, "unloadable"
