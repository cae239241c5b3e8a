"""The replacement for DFL's ``xlib.onnxruntime.InferenceSession_with_device``.

``make_session_factory(config)`` returns a function with DFL's signature
``InferenceSession_with_device(onnx_model_or_path, device_info) -> onnxruntime.InferenceSession`` that

- builds sessions through ``dfl_perf.sessions`` with tuned options (CPU: an intra-op thread budget
  shared across DFL's model processes and spinning off; CUDA: HEURISTIC cuDNN search; optional
  TensorRT with its engine cache; the optimized-model disk cache shared by all processes),
- shares sessions within a process on (model identity, provider, device index, threads), never on
  ``ORTDeviceInfo`` equality (which ignores the provider), for as long as DFL holds them,
- falls back to CPU with a warning when the requested GPU provider is missing or fails to load.

All session building goes through ``_create_session``: the one place to switch to another builder.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from dfl_perf.adapters.deepfacelive.config import DFLConfig

__all__ = ["make_session_factory", "FactoryState", "SessionRecord", "CPU_PROVIDER"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

CPU_PROVIDER = "CPUExecutionProvider"
#: ``lean_weights="auto"``: model files this big load from their lean copy on the CPU (DFMs: 100-700 MB)
LEAN_AUTO_BYTES = 64 * 1000 * 1000


@dataclass
class SessionRecord:
    """What the factory built for one request (kept for diagnostics and tests)."""

    model: str
    requested_provider: str
    device_index: int
    providers: List[str]
    intra_op_threads: int
    cached: bool
    fallback_reason: Optional[str] = None
    disk_cache: str = "off"


@dataclass
class FactoryState:
    """The per-process state of one patched factory: config, session cache and build records."""

    config: DFLConfig
    # weak: a session DFL has dropped is not kept alive (a DFM can hold gigabytes); it is shared while in use
    sessions: Any = field(default_factory=weakref.WeakValueDictionary)
    records: List[SessionRecord] = field(default_factory=list)
    lock: Any = field(default_factory=threading.RLock)

    def clear(self) -> None:
        """Forget every cached session (they are freed when DFL drops its own references)."""
        with self.lock:
            self.sessions.clear()


def make_session_factory(config: Optional[DFLConfig] = None) -> Callable[[Any, Any], Any]:
    """A drop-in ``InferenceSession_with_device(onnx_model_or_path, device_info)`` using ``config``.

    The returned function carries its ``FactoryState`` as the attribute ``dfl_perf_state``.
    """
    state = FactoryState(config or DFLConfig())

    def InferenceSession_with_device(onnx_model_or_path, device_info):  # noqa: N802 - DFL's name
        """Construct an onnxruntime.InferenceSession for this device (dfl_perf tuned; can raise Exception)."""
        return _session_for(state, onnx_model_or_path, device_info)

    InferenceSession_with_device.dfl_perf_state = state  # type: ignore[attr-defined]
    return InferenceSession_with_device


# ------------------------------------------------------------------------------------ model identity

def _model_source(onnx_model_or_path: Any) -> Tuple[Any, Hashable]:
    """(the checked model as a ``dfl_perf.sessions`` ModelSource, its identity for the session cache)."""
    from dfl_perf.sessions.errors import ModelNotFoundError
    from dfl_perf.sessions.source import model_identity, resolve_model

    try:
        source = resolve_model(onnx_model_or_path)
    except ModelNotFoundError as exc:  # what DFL's own factory raises for a missing file
        raise FileNotFoundError(str(exc)) from None
    return source, model_identity(source)


def _device(device_info: Any) -> Tuple[str, int]:
    get_ep = getattr(device_info, "get_execution_provider", None)
    get_index = getattr(device_info, "get_index", None)
    if not callable(get_ep) or not callable(get_index):
        raise TypeError("device_info must be an ORTDeviceInfo (with get_execution_provider() and get_index()), got %r"
                        % (device_info,))
    ep = get_ep()
    if not ep:
        raise ValueError("device_info %r names no execution provider" % (device_info,))
    index = get_index()
    return str(ep), int(index if index is not None else -1)


# ----------------------------------------------------------------------------------------- the factory

def _session_for(state: FactoryState, onnx_model_or_path: Any, device_info: Any) -> Any:
    ep, index = _device(device_info)
    source, model_key = _model_source(onnx_model_or_path)
    label = source.label
    threads = state.config.threads_per_session()
    key = (model_key, ep, index, threads)
    with state.lock:
        started = time.time()
        if state.config.cache_sessions and key in state.sessions:
            sess = state.sessions[key]
            record = SessionRecord(label, ep, index, list(sess.get_providers()), threads, True,
                                   disk_cache="in-process")
        else:
            sess, record = _build(state.config, source, label, ep, index, threads)
            if state.config.cache_sessions:
                state.sessions[key] = sess
        state.records.append(record)
        if state.config.startup_folder():
            from dfl_perf.adapters.deepfacelive.startup import record_session

            record_session(label, started, time.time(), record.disk_cache, record.providers)
        return sess


def _build(config: DFLConfig, source: Any, label: str, ep: str, index: int,
           threads: int) -> Tuple[Any, SessionRecord]:
    import onnxruntime as ort

    problem = None
    if ep != CPU_PROVIDER:
        available = list(ort.get_available_providers())
        if ep not in available:
            problem = "%s is not available in this onnxruntime (available: %s)" % (ep, ", ".join(available))
        else:
            try:
                info = _create_session(config, source, _providers(config, ep, index, available), threads)
            except Exception as exc:
                if not _is_provider_failure(exc):
                    raise
                problem = "%s failed to load: %s" % (ep, _first_line(exc))
            else:
                return info.session, _record(info, label, ep, index, threads, None)
        if not config.cpu_fallback or _fallback_excluded(config, label):
            why = "cpu_fallback is off" if not config.cpu_fallback else "this model is not run on the CPU"
            raise Exception("%s for %s; check the CUDA/cuDNN install or choose the CPU device"
                            " (dfl_perf: %s)" % (problem, label, why))
        log.warning("dfl_perf: %s; running %s on CPU instead (set cpu_fallback=False to fail instead)", problem, label)
    info = _create_session(config, source, [(CPU_PROVIDER, {})], threads)
    return info.session, _record(info, label, ep, index, threads, problem)


def _fallback_excluded(config: DFLConfig, label: str) -> bool:
    stem = os.path.splitext(os.path.basename(label))[0].lower()
    return any(stem == name.lower() for name in config.cpu_fallback_exclude)


def _record(info: Any, label: str, ep: str, index: int, threads: int, problem: Optional[str]) -> SessionRecord:
    return SessionRecord(label, ep, index, list(info.providers), threads, False, problem, info.disk_cache)


def _is_provider_failure(exc: BaseException) -> bool:
    """A provider that is missing or fails to start, as opposed to a model that cannot load anywhere."""
    from dfl_perf.sessions import ModelLoadError
    from dfl_perf.sessions.errors import ProviderError

    return isinstance(exc, ProviderError) or type(exc) is ModelLoadError


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _providers(config: DFLConfig, ep: str, index: int, available: List[str]) -> List[Tuple[str, Dict[str, str]]]:
    from dfl_perf.devices import default_provider_options

    options = default_provider_options(ep, max(index, 0))
    if ep == "CUDAExecutionProvider":
        options["cudnn_conv_algo_search"] = config.cudnn_conv_algo_search
    providers = [(ep, options)]
    if ep == "CUDAExecutionProvider" and config.tensorrt and "TensorrtExecutionProvider" in available:
        providers.insert(0, ("TensorrtExecutionProvider", default_provider_options("TensorrtExecutionProvider",
                                                                                   max(index, 0))))
    return providers


# ------------------------------------------------------------------------------------ session building

def _lean(config: DFLConfig, providers: List[Tuple[str, Dict[str, str]]], source: Any) -> bool:
    """Lean weights for this session: as set, or with ``"auto"`` for model files of ``LEAN_AUTO_BYTES`` or more on the CPU."""
    if config.lean_weights != "auto":
        return bool(config.lean_weights)
    path = getattr(source, "path", None)
    if providers[0][0] != CPU_PROVIDER or path is None or getattr(source, "data", None) is not None:
        return False  # only model files (a lean copy is made from a file)
    try:
        return os.path.getsize(path) >= LEAN_AUTO_BYTES
    except OSError:
        return False


def session_config(config: DFLConfig, providers: List[Tuple[str, Dict[str, str]]], threads: int,
                   source: Any = None) -> Any:
    """The ``dfl_perf.sessions.SessionConfig`` for one DFL session (strict: the adapter does the fallback)."""
    from dfl_perf.sessions import SessionConfig

    spinning = None if config.allow_spinning else False
    lean = _lean(config, providers, source)
    return SessionConfig.tuned(threads=threads, providers=providers).replace(
        intra_op_spinning=spinning, inter_op_spinning=spinning, lean_weights=lean,
        disk_cache=bool(config.optimized_model_cache) and not lean, strict=True)


def _create_session(config: DFLConfig, source: Any, providers: List[Tuple[str, Dict[str, str]]],
                    threads: int) -> Any:
    """Build one session (the single place that calls the session builder); returns its ``SessionInfo``."""
    from dfl_perf.sessions import create_session_with_info

    return create_session_with_info(source, session_config(config, providers, threads, source))
