"""Sessions: how to build them (``SessionConfig``), building one (``create_session``), keeping them
(``ModelCache``) and keeping onnxruntime's optimized graphs on disk between processes.

Importing this package does not import onnxruntime; building a session does.
"""

from __future__ import annotations

from dfl_perf.sessions.cache import ModelCache
from dfl_perf.sessions.config import (
    COMPILING_PROVIDERS,
    GPU_PROVIDERS,
    MEM_PATTERN_OFF_PROVIDERS,
    SessionConfig,
)
from dfl_perf.sessions.create import SessionInfo, create_session, create_session_with_info
from dfl_perf.sessions.diskcache import OptimizedModelCache, optimized_cache_dir
from dfl_perf.sessions.errors import (
    InvalidModelError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderError,
    UnsupportedModelError,
)
from dfl_perf.sessions.source import resolve_model
from dfl_perf.sessions.warmup import warmup_session, zero_inputs

__all__ = [
    "SessionConfig", "create_session", "create_session_with_info", "SessionInfo", "resolve_model",
    "ModelCache", "OptimizedModelCache", "optimized_cache_dir", "warmup_session", "zero_inputs",
    "ModelLoadError", "ModelNotFoundError", "InvalidModelError", "UnsupportedModelError", "ProviderError",
    "GPU_PROVIDERS", "COMPILING_PROVIDERS", "MEM_PATTERN_OFF_PROVIDERS",
]
