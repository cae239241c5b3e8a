"""Building a session through the on-disk optimized-model cache (see ``diskcache`` for the layout)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dfl_perf.sessions.config import ProviderEntry, SessionConfig
from dfl_perf.sessions.diskcache import OptimizedModelCache, _Writer, optimized_cache_dir

__all__ = ["create_through_disk_cache", "CACHED_LOAD_LEVEL"]

log = logging.getLogger("dfl_perf.sessions")

#: Graph optimisation level used to load a cached optimized graph: the work is already done, and
#: benchmarks/bench_sessions.py (disk-cache section) measures this as the fastest start.
CACHED_LOAD_LEVEL = "disable"

_caches: Dict[str, OptimizedModelCache] = {}
_caches_lock = threading.Lock()


def _cache_for_root(root: Path) -> OptimizedModelCache:
    with _caches_lock:
        cache = _caches.get(str(root))
        if cache is None:
            cache = _caches[str(root)] = OptimizedModelCache(root)
        return cache


def create_through_disk_cache(source, config: SessionConfig, providers: List[ProviderEntry]):
    """(session, outcome) through the disk cache; session None tells the caller to build it plainly."""
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
    result: List[Any] = [None, "failed"]
    try:
        with cache.writing(key) as writer:
            if writer is None:
                return None, "busy"
            if state == "absent":  # another process may have written it while we looked
                hit, _ = _load_cached(cache, key, cache.read_meta(key), source, config, providers)
                if hit is not None:
                    return hit, "hit"
            _build_and_store(writer, digest, source, config, providers, result, external)
    except OSError as exc:
        log.warning("could not write the optimized-model cache in %s: %s", cache.root, exc)
        if result[1] == "stored":
            result[1] = "failed"
    return result[0], result[1]


def _build_and_store(writer: _Writer, digest: str, source, config: SessionConfig,
                     providers: List[ProviderEntry], result: List[Any], external: bool) -> None:
    """Build the session saving its optimized graph; fill ``result`` = [session, outcome] as it goes."""
    from dfl_perf.sessions.create import _is_model_problem, _new_session, _wrap, ort_message

    if external:
        source = _inlined(source)
        if source is None:
            result[1] = "uncacheable"
            return
    so, _ = config.to_session_options()
    so.optimized_model_filepath = str(writer.temp_path)
    try:
        result[0] = _new_session(source, source.ort_input(), so, providers)
    except Exception as exc:
        if _is_model_problem(str(exc)):
            raise _wrap(exc, source, [n for n, _ in providers]) from None
        result[0] = _retry_unsaved(source, config, providers)
        if result[0] is None:
            return  # the provider itself fails: the caller's fallback chain handles it
        log.info("onnxruntime cannot save an optimized model of %s with %s: %s", source.label,
                 providers[0][0], ort_message(exc))
        result[1] = "uncacheable"
        writer.mark_uncacheable(ort_message(exc))
        return
    result[1] = "stored"
    writer.commit({"providers": [n for n, _ in providers], "source_sha256": digest, "source": source.path})


def _inlined(source):
    """The model with its external data read in, as bytes: onnxruntime then saves a self-contained
    optimized file. None when that is impossible (no onnx module, over protobuf's 2 GB)."""
    from dfl_perf.sessions.create import ModelSource

    try:
        import onnx

        return ModelSource(source.path, onnx.load(source.path).SerializeToString())
    except Exception as exc:
        log.info("not caching %s: cannot inline its external data (%s)", source.label, exc)
        return None


def _retry_unsaved(source, config: SessionConfig, providers: List[ProviderEntry]):
    from dfl_perf.sessions.create import _new_session

    try:
        return _new_session(source, source.ort_input(), config.to_session_options()[0], providers)
    except Exception:
        return None


def _load_cached(cache: OptimizedModelCache, key: str, meta: Optional[Dict[str, Any]], source,
                 config: SessionConfig, providers: List[ProviderEntry]) -> Tuple[Any, str]:
    """(session, 'hit') from the entry, or (None, 'absent' | 'corrupt' | 'unloadable').

    A bad entry is left in place: the writer that rebuilds it replaces it under the entry's lock.
    """
    from dfl_perf.sessions.create import _new_session, ort_message

    if meta is None or not meta.get("cacheable", True):
        return None, "absent"
    path = cache.verified_file(key, meta)
    if path is None:
        log.warning("optimized-model cache entry %s for %s is missing or corrupt (sha256 mismatch); rebuilding it",
                    cache.model_path(key), source.label)
        return None, "corrupt"
    so, _ = config.replace(graph_optimization=CACHED_LOAD_LEVEL).to_session_options()
    try:
        return _new_session(source, str(path), so, providers), "hit"
    except Exception as exc:
        log.warning("cached optimized model %s for %s does not load (%s); rebuilding it from the model",
                    path, source.label, ort_message(exc))
        return None, "unloadable"
