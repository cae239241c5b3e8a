"""``create_session``: one onnxruntime session from a path, bytes or ModelProto, with typed errors.

The top of the build path: it picks the disk cache (``cached_create``), a lean copy (``lean``) or a
plain build (``build``) for a config; ``ModelCache`` calls it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional

from dfl_perf.sessions.build import build_with_fallback, check_active, usable_providers
from dfl_perf.sessions.cached_create import create_through_disk_cache
from dfl_perf.sessions.config import COMPILING_PROVIDERS, SessionConfig
from dfl_perf.sessions.lean import LeanWeightsError, lean_copy
from dfl_perf.sessions.source import ModelSource, resolve_model

__all__ = ["create_session", "create_session_with_info", "SessionInfo"]

log = logging.getLogger("dfl_perf.sessions")


@dataclass
class SessionInfo:
    """What ``create_session_with_info`` did: the session, the providers it really runs on, the
    disk cache outcome ('off', 'hit', 'stored', 'busy' (another process is writing it),
    'uncacheable', 'failed') and the seconds it took."""

    session: Any
    source: ModelSource
    config: SessionConfig
    providers: List[str]
    disk_cache: str = "off"
    seconds: float = 0.0
    fallbacks: List[str] = field(default_factory=list)
    lean_copy: Optional[str] = None  # the lean copy loaded (config.lean_weights), None if not used


# ----------------------------------------------------------------------------------------- public

def create_session_with_info(model: Any, config: Optional[SessionConfig] = None) -> SessionInfo:
    """Like ``create_session`` but returns a ``SessionInfo`` (providers used, disk-cache outcome, time)."""
    config = SessionConfig.tuned() if config is None else config
    started = time.perf_counter()
    source = resolve_model(model)
    fallbacks: List[str] = []
    usable = usable_providers(config, source, fallbacks)
    session = None
    outcome = "off"
    if config.disk_cache:
        if usable[0][0] in COMPILING_PROVIDERS:
            outcome = "uncacheable"  # their own caches (TensorRT engines) do this job
        else:
            session, outcome = create_through_disk_cache(source, config, usable)
            if session is not None:
                check_active(session, usable[0][0], config, source, fallbacks)
    lean = _lean_input(source) if config.lean_weights else None
    if session is None:
        session = build_with_fallback(source, config, usable, fallbacks, lean)
    return SessionInfo(session, source, config, list(session.get_providers()), outcome,
                       time.perf_counter() - started, fallbacks, lean)


def _lean_input(source: ModelSource) -> Optional[str]:
    """The lean copy to load for ``source``; None (warned) when there is none to use."""
    if source.data is not None or source.path is None:
        log.warning("lean_weights: %s is not a file; loading it as it is", source.label)
        return None
    try:
        return str(lean_copy(source.path))
    except (LeanWeightsError, OSError) as exc:
        log.warning("lean_weights: %s; loading the model as it is", exc)
        return None


def create_session(model: Any, config: Optional[SessionConfig] = None):
    """An ``onnxruntime.InferenceSession`` for ``model`` (a path, bytes or ``onnx.ModelProto``).

    ``config`` defaults to ``SessionConfig.tuned()``. Providers that are unavailable or fail to
    initialise are skipped with a warning (``ProviderError`` instead when ``config.strict``). With
    ``config.disk_cache`` the optimized graph is saved under ``user_cache_dir()/'optimized'`` and
    loaded by later creations, in this process or another.

    Raises ``ModelNotFoundError`` (missing path, a directory), ``InvalidModelError`` (empty,
    truncated, not ONNX), ``UnsupportedModelError`` (opset/IR/operator this onnxruntime lacks),
    ``ProviderError``; all are ``ModelLoadError`` with ``.path`` and name the file.
    """
    return create_session_with_info(model, config).session
