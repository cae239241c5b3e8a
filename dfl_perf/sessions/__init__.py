"""Sessions: how to build them (``SessionConfig``), building one (``create_session``), keeping them
(``ModelCache``) and keeping onnxruntime's optimized graphs on disk between processes.

Modules, lowest first (none imports one above it): ``errors`` (typed errors: ``ModelLoadError``
and its subclasses), ``config`` (``SessionConfig``), ``source`` (``resolve_model``,
``model_identity``), ``build`` (opens one session: providers, fallback), ``lean`` and
``diskcache`` (lean copies, the optimized-graph store), ``cached_create`` (a build through the
disk cache), ``create`` (``create_session``), ``measure`` and ``warmup``, ``cache`` (``ModelCache``).
Importing this package does not import onnxruntime; building a session does.
"""

from __future__ import annotations

from dfl_perf.sessions.cache import ModelCache
from dfl_perf.sessions.config import SessionConfig
from dfl_perf.sessions.create import create_session, create_session_with_info
from dfl_perf.sessions.errors import ModelLoadError
from dfl_perf.sessions.warmup import warmup_session

__all__ = ["SessionConfig", "create_session", "create_session_with_info", "ModelCache", "warmup_session",
           "ModelLoadError"]
