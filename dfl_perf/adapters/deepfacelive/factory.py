"""The replacement for DFL's ``xlib.onnxruntime.InferenceSession_with_device``.

``make_session_factory(config)`` returns a function with DFL's signature
``InferenceSession_with_device(onnx_model_or_path, device_info) -> onnxruntime.InferenceSession`` that

- builds sessions with tuned options (CPU: an intra-op thread budget shared across DFL's model
  processes and spinning off; CUDA: HEURISTIC cuDNN search; optional TensorRT with its engine cache;
  an optimized-model disk cache),
- caches sessions per process on (model identity, provider, device index, threads), never on
  ``ORTDeviceInfo`` equality (which ignores the provider),
- falls back to CPU with a warning when the requested GPU provider is missing or fails to load.

All session building goes through ``_create_session``: the one place to switch to another builder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from dfl_perf.adapters.deepfacelive._hooks import is_module_loaded
from dfl_perf.adapters.deepfacelive.config import DFLConfig

__all__ = ["make_session_factory", "FactoryState", "SessionRecord", "CPU_PROVIDER"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

CPU_PROVIDER = "CPUExecutionProvider"
# providers whose optimized graph onnxruntime can save and reload (not DirectML, not TensorRT)
_OPTIMIZED_CACHE_PROVIDERS = (CPU_PROVIDER, "CUDAExecutionProvider")

ModelSource = Union[str, bytes]


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
    optimized_model: Optional[str] = None


@dataclass
class FactoryState:
    """The per-process state of one patched factory: config, session cache and build records."""

    config: DFLConfig
    sessions: Dict[Tuple[Any, ...], Any] = field(default_factory=dict)
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

def _model_source(onnx_model_or_path: Any) -> Tuple[ModelSource, Tuple[Any, ...], str]:
    """(what to give onnxruntime, a cache key for the model, a short label for messages)."""
    onnx_mod = sys.modules.get("onnx") if is_module_loaded("onnx") else None  # no ModelProto exists otherwise
    if onnx_mod is not None and isinstance(onnx_model_or_path, getattr(onnx_mod, "ModelProto", ())):
        onnx_model_or_path = onnx_model_or_path.SerializeToString()
    if isinstance(onnx_model_or_path, (bytes, bytearray, memoryview)):
        data = bytes(onnx_model_or_path)
        digest = hashlib.sha1(data).hexdigest()
        return data, ("bytes", digest), "<model bytes %s>" % digest[:12]
    if isinstance(onnx_model_or_path, (str, os.PathLike)):
        path = os.path.realpath(os.fspath(onnx_model_or_path))
        try:
            st = os.stat(path)
        except OSError:
            raise FileNotFoundError("model file not found: %s" % path) from None
        return path, ("file", path, st.st_size, st.st_mtime_ns), path
    raise TypeError("onnx_model_or_path must be a path, model bytes or onnx.ModelProto, got %s"
                    % type(onnx_model_or_path).__name__)


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
    source, model_key, label = _model_source(onnx_model_or_path)
    threads = state.config.threads_per_session()
    key = (model_key, ep, index, threads)
    with state.lock:
        if state.config.cache_sessions and key in state.sessions:
            sess = state.sessions[key]
            state.records.append(SessionRecord(label, ep, index, list(sess.get_providers()), threads, True))
            return sess
        sess, record = _build(state.config, source, model_key, label, ep, index, threads)
        if state.config.cache_sessions:
            state.sessions[key] = sess
        state.records.append(record)
        return sess


def _build(config: DFLConfig, source: ModelSource, model_key: Tuple[Any, ...], label: str, ep: str, index: int,
           threads: int) -> Tuple[Any, SessionRecord]:
    import onnxruntime as ort

    problem = None
    if ep != CPU_PROVIDER:
        available = list(ort.get_available_providers())
        if ep not in available:
            problem = "%s is not available in this onnxruntime (available: %s)" % (ep, ", ".join(available))
        else:
            try:
                sess, optimized = _create_session(config, source, model_key, _providers(config, ep, index, available),
                                                  ep, threads)
            except Exception as exc:  # a CUDA/cuDNN DLL that fails to load surfaces here
                problem = "%s failed to load: %s" % (ep, str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            else:
                if ep in sess.get_providers():
                    return sess, SessionRecord(label, ep, index, list(sess.get_providers()), threads, False, None,
                                               optimized)
                problem = "%s failed to load (onnxruntime fell back to %s)" % (ep, ", ".join(sess.get_providers()))
        if not config.cpu_fallback:
            raise Exception("%s for %s; check the CUDA/cuDNN install or choose the CPU device"
                            " (dfl_perf cpu_fallback is off)" % (problem, label))
        log.warning("dfl_perf: %s; running %s on CPU instead (set cpu_fallback=False to fail instead)", problem, label)
    sess, optimized = _create_session(config, source, model_key, [(CPU_PROVIDER, {})], CPU_PROVIDER, threads)
    return sess, SessionRecord(label, ep, index, list(sess.get_providers()), threads, False, problem, optimized)


def _providers(config: DFLConfig, ep: str, index: int, available: List[str]) -> List[Tuple[str, Dict[str, str]]]:
    from dfl_perf.devices import default_provider_options

    options = default_provider_options(ep, max(index, 0), _cache_dir(config) / "tensorrt")
    if ep == "CUDAExecutionProvider":
        options["cudnn_conv_algo_search"] = config.cudnn_conv_algo_search
    providers = [(ep, options)]
    if ep == "CUDAExecutionProvider" and config.tensorrt and "TensorrtExecutionProvider" in available:
        trt = default_provider_options("TensorrtExecutionProvider", max(index, 0), _cache_dir(config) / "tensorrt")
        providers.insert(0, ("TensorrtExecutionProvider", trt))
    return providers


# ------------------------------------------------------------------------------------ session building

def _create_session(config: DFLConfig, source: ModelSource, model_key: Tuple[Any, ...],
                    providers: List[Tuple[str, Dict[str, str]]], ep: str, threads: int) -> Tuple[Any, Optional[str]]:
    """Build one session (the single place that calls onnxruntime); returns (session, optimized-cache path)."""
    import onnxruntime as ort

    options = _session_options(ort, config, ep, threads)
    cached = None
    if config.optimized_model_cache and providers[0][0] in _OPTIMIZED_CACHE_PROVIDERS:
        cached = _optimized_path(config, ort, model_key, ep)
    if cached is not None and cached.is_file():
        try:
            return ort.InferenceSession(str(cached), sess_options=options, providers=providers), str(cached)
        except Exception as exc:  # stale or corrupt cache entry: drop it and build from the original
            log.warning("dfl_perf: ignoring unusable optimized-model cache %s (%s)", cached, exc)
            _remove(cached)
    partial = None
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("dfl_perf: optimized-model cache disabled, cannot create %s (%s)", cached.parent, exc)
            cached = None
        else:  # written under a per-process name, then renamed: concurrent DFL workers never read half a file
            partial = cached.with_name("%s.%d.partial" % (cached.name, os.getpid()))
            options.optimized_model_filepath = str(partial)
    sess = ort.InferenceSession(source, sess_options=options, providers=providers)
    if cached is None or partial is None:
        return sess, None
    try:
        os.replace(str(partial), str(cached))
    except OSError:
        _remove(partial)
        return sess, None
    return sess, str(cached)


def _session_options(ort: Any, config: DFLConfig, ep: str, threads: int) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    if not config.allow_spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if ep == "DmlExecutionProvider":
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options


def _cache_dir(config: DFLConfig) -> Path:
    if config.cache_dir:
        return Path(config.cache_dir)
    from dfl_perf.paths import user_cache_dir

    return user_cache_dir()


def _optimized_path(config: DFLConfig, ort: Any, model_key: Tuple[Any, ...], ep: str) -> Path:
    """Cache file for the optimized graph: keyed by model, onnxruntime version, provider and machine."""
    fingerprint = repr((model_key, ort.__version__, ep, platform.machine(), platform.processor(), os.cpu_count()))
    digest = hashlib.sha1(fingerprint.encode("utf-8")).hexdigest()[:24]
    return _cache_dir(config) / "optimized" / ("%s.onnx" % digest)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
