"""``create_session``: one onnxruntime session from a path, bytes or ModelProto, with typed errors."""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Tuple

from dfl_perf.sessions.config import COMPILING_PROVIDERS, ProviderEntry, SessionConfig
from dfl_perf.sessions.errors import (
    InvalidModelError,
    ModelLoadError,
    ModelNotFoundError,
    ProviderError,
    UnsupportedModelError,
)

__all__ = ["create_session", "create_session_with_info", "SessionInfo", "ModelSource", "resolve_model"]

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
        return self.data if self.data is not None else self.path


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
    raise TypeError("model must be a path, bytes or onnx.ModelProto, got %s" % type(model).__name__)


# ------------------------------------------------------------------------------------- error text

_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_FAILED = re.compile(r"^Load model from .*? failed:\s*")
_SOURCE_REF = re.compile(r"\S+\.(?:cc|h|cpp|hpp):\d+ ")


def _strip_signature(text: str) -> str:
    """Drop onnxruntime's '<file>:<line> <C++ signature>(...)' prefix, keeping the human message."""
    match = _SOURCE_REF.search(text)
    if not match:
        return text
    start = text.find("(", match.end())
    if start < 0:
        return text
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return (text[:match.start()] + text[index + 1:]).strip()
    return text


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error text without the code prefix, the file name and the C++ signature."""
    text = str(exc).strip()
    text = _PREFIX.sub("", text)
    text = _LOAD_FAILED.sub("", text)
    return _strip_signature(text).strip() or type(exc).__name__


def _ort_version() -> str:
    import onnxruntime as ort

    return str(ort.__version__)


def _is_model_problem(text: str) -> bool:
    return _classify(text, "")[0] is not ModelLoadError


_UNSUPPORTED_SIGNS = ("ir version", "no opset import for domain", "no op registered for",
                      "could not find an implementation", "unrecognized attribute", "is not a registered function/op")


def _classify(text: str, label: str) -> Tuple[type, str]:
    lowered = text.lower()
    if "no_suchfile" in lowered or "doesn't exist" in lowered:
        return ModelNotFoundError, "model file not found: %s" % label
    if "protobuf parsing failed" in lowered or "invalid_protobuf" in lowered or "no graph was found" in lowered:
        return InvalidModelError, ("%s is not a valid ONNX model: the file is truncated, corrupt or not ONNX"
                                   % label)
    opset = "opset" in lowered and ("under development" in lowered or "is till opset" in lowered)
    if opset or any(sign in lowered for sign in _UNSUPPORTED_SIGNS):
        return UnsupportedModelError, "%s cannot run on onnxruntime %s" % (label, _ort_version())
    if "this is an invalid model" in lowered:
        return InvalidModelError, "%s is an invalid ONNX graph" % label
    return ModelLoadError, "could not load %s" % label


_OPSET_ASKED = re.compile(r"Opset (\d+) is under development")
_OPSET_SUPPORTED = re.compile(r"is till opset (\d+)")


def _opset_summary(text: str) -> Optional[str]:
    asked, supported = _OPSET_ASKED.search(text), _OPSET_SUPPORTED.search(text)
    if not asked:
        return None
    return "the model uses opset %s; this onnxruntime supports ai.onnx up to opset %s" % (
        asked.group(1), supported.group(1) if supported else "?")


def _wrap(exc: BaseException, source: ModelSource, providers: List[str]) -> ModelLoadError:
    if isinstance(exc, ModelLoadError):
        return exc
    detail = _opset_summary(str(exc)) or ort_message(exc)
    kind, head = _classify(str(exc), source.label)
    if kind is ModelLoadError:
        head += " with providers %s" % ", ".join(providers)
    return kind("%s (onnxruntime: %s)" % (head, detail), source.path, detail)


# -------------------------------------------------------------------------------------- providers

def _usable_providers(config: SessionConfig, source: ModelSource, fallbacks: List[str]) -> List[ProviderEntry]:
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    usable = []
    for name, options in config.resolved_providers():
        if name in available:
            usable.append((name, options))
            continue
        message = ("execution provider %s is not available in onnxruntime %s (available: %s) for %s"
                   % (name, _ort_version(), ", ".join(available), source.label))
        if config.strict:
            raise ProviderError(message, source.path, "unavailable")
        log.warning("%s; falling back to the next provider", message)
        fallbacks.append(message)
    if not usable:
        raise ProviderError("no usable execution provider for %s (asked for %s, available: %s)"
                            % (source.label, ", ".join(n for n, _ in config.resolved_providers()),
                               ", ".join(available)), source.path, "unavailable")
    _prepare_provider_dirs(usable)
    return usable


def _prepare_provider_dirs(providers: List[ProviderEntry]) -> None:
    """Create TensorRT engine/timing cache folders (user-only) so TensorRT can write there."""
    from dfl_perf.paths import ensure_private_dir

    for name, options in providers:
        if name != "TensorrtExecutionProvider":
            continue
        opts = dict(options)
        for enable, key in (("trt_engine_cache_enable", "trt_engine_cache_path"),
                            ("trt_timing_cache_enable", "trt_timing_cache_path")):
            if opts.get(enable) == "1" and opts.get(key):
                ensure_private_dir(Path(opts[key]))


def _new_session(source: ModelSource, model_input: Any, so: Any, providers: List[ProviderEntry]):
    import onnxruntime as ort

    return ort.InferenceSession(model_input, sess_options=so,
                                providers=[(name, dict(options)) for name, options in providers])


def _check_active(session: Any, wanted: str, config: SessionConfig, source: ModelSource,
                  fallbacks: List[str]) -> None:
    """onnxruntime itself may fall back silently; treat that like a failed provider."""
    active = list(session.get_providers())
    if wanted in active:
        return
    message = "execution provider %s failed to initialise for %s; onnxruntime runs it on %s" % (
        wanted, source.label, ", ".join(active))
    if config.strict:
        raise ProviderError(message, source.path, "fallback")
    log.warning(message)
    fallbacks.append(message)


def _create_with_fallback(source: ModelSource, config: SessionConfig, usable: List[ProviderEntry],
                          fallbacks: List[str], model_input: Any = None):
    so, _ = config.to_session_options()
    for index in range(len(usable)):
        providers = usable[index:]
        try:
            session = _new_session(source, source.ort_input() if model_input is None else model_input, so, providers)
        except Exception as exc:
            names = [n for n, _ in providers]
            if _is_model_problem(str(exc)) or index == len(usable) - 1:
                raise _wrap(exc, source, names) from None
            message = "execution provider %s failed for %s: %s" % (names[0], source.label, ort_message(exc))
            if config.strict:
                raise ProviderError(message, source.path, ort_message(exc)) from None
            log.warning("%s; falling back to %s", message, names[1])
            fallbacks.append(message)
            continue
        _check_active(session, providers[0][0], config, source, fallbacks)
        return session
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------------------- public

def create_session_with_info(model: Any, config: Optional[SessionConfig] = None) -> SessionInfo:
    """Like ``create_session`` but returns a ``SessionInfo`` (providers used, disk-cache outcome, time)."""
    config = SessionConfig.tuned() if config is None else config
    started = time.perf_counter()
    source = resolve_model(model)
    fallbacks: List[str] = []
    usable = _usable_providers(config, source, fallbacks)
    session = None
    outcome = "off"
    if config.disk_cache:
        if usable[0][0] in COMPILING_PROVIDERS:
            outcome = "uncacheable"  # their own caches (TensorRT engines) do this job
        else:
            from dfl_perf.sessions.cached_create import create_through_disk_cache

            session, outcome = create_through_disk_cache(source, config, usable)
            if session is not None:
                _check_active(session, usable[0][0], config, source, fallbacks)
    lean = _lean_input(source) if config.lean_weights else None
    if session is None:
        session = _create_with_fallback(source, config, usable, fallbacks, lean)
    return SessionInfo(session, source, config, list(session.get_providers()), outcome,
                       time.perf_counter() - started, fallbacks, lean)


def _lean_input(source: ModelSource) -> Optional[str]:
    """The lean copy to load for ``source``; None (warned) when there is none to use."""
    if source.data is not None or source.path is None:
        log.warning("lean_weights: %s is not a file; loading it as it is", source.label)
        return None
    from dfl_perf.sessions.lean import LeanWeightsError, lean_copy

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
