"""Building one onnxruntime session: the bottom of the sessions package.

``open_session`` is the only call to ``onnxruntime.InferenceSession`` in dfl_perf's session code;
``build_with_fallback`` walks a config's providers, best first, skipping the ones that are missing
or fail (``ProviderError`` instead when the config is strict) and turning load failures into the
typed errors of ``errors``. The disk cache (``cached_create``) and ``create_session`` build on
these; nothing here imports them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, List

from dfl_perf.ortinfo import ort_message, ort_module
from dfl_perf.sessions.config import ProviderEntry, SessionConfig
from dfl_perf.sessions.errors import ProviderError, is_model_problem, load_error
from dfl_perf.sessions.source import ModelSource

__all__ = ["open_session", "usable_providers", "build_with_fallback", "check_active"]

log = logging.getLogger("dfl_perf.sessions")


def open_session(model_input: Any, options: Any, providers: List[ProviderEntry]) -> Any:
    """``onnxruntime.InferenceSession(model_input, options, providers)``; ``model_input`` is a path or bytes."""
    ort = ort_module()
    return ort.InferenceSession(model_input, sess_options=options,
                                providers=[(name, dict(opts)) for name, opts in providers])


def usable_providers(config: SessionConfig, source: ModelSource, fallbacks: List[str]) -> List[ProviderEntry]:
    """The config's providers this onnxruntime has, best first; a missing one is noted in
    ``fallbacks`` with a warning (``ProviderError`` when the config is strict, or when none is left)."""
    ort = ort_module()
    available = list(ort.get_available_providers())
    usable = []
    for name, options in config.resolved_providers():
        if name in available:
            usable.append((name, options))
            continue
        message = ("execution provider %s is not available in onnxruntime %s (available: %s) for %s"
                   % (name, ort.__version__, ", ".join(available), source.label))
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


def check_active(session: Any, wanted: str, config: SessionConfig, source: ModelSource,
                 fallbacks: List[str]) -> None:
    """onnxruntime may fall back to another provider silently; treat that like a failed provider."""
    active = list(session.get_providers())
    if wanted in active:
        return
    message = "execution provider %s failed to initialise for %s; onnxruntime runs it on %s" % (
        wanted, source.label, ", ".join(active))
    if config.strict:
        raise ProviderError(message, source.path, "fallback")
    log.warning(message)
    fallbacks.append(message)


def build_with_fallback(source: ModelSource, config: SessionConfig, usable: List[ProviderEntry],
                        fallbacks: List[str], model_input: Any = None) -> Any:
    """A session of ``source`` (or of ``model_input``, e.g. its lean copy) on the first of ``usable``
    that works; a provider that fails moves on to the next one (noted in ``fallbacks``)."""
    options = config.to_session_options()
    model_input = source.ort_input() if model_input is None else model_input
    for index in range(len(usable)):
        providers = usable[index:]
        names = [n for n, _ in providers]
        try:
            session = open_session(model_input, options, providers)
        except Exception as exc:
            if is_model_problem(exc) or index == len(usable) - 1:
                raise load_error(exc, source.label, source.path, names) from None
            message = "execution provider %s failed for %s: %s" % (names[0], source.label, ort_message(exc))
            if config.strict:
                raise ProviderError(message, source.path, ort_message(exc)) from None
            log.warning("%s; falling back to %s", message, names[1])
            fallbacks.append(message)
            continue
        check_active(session, names[0], config, source, fallbacks)
        return session
    raise AssertionError("unreachable: usable_providers never returns an empty list")  # pragma: no cover
