"""``dfl-perf dfl --remote-swap URL``: DeepFaceLive's FaceSwapDFM runs its model on a ``dfl-perf serve``.

DFL's UI is unchanged. Its model list (``modelhub.DFLive.get_available_models_info``) gets one more
entry first, the server's model (``'<model> @ host:port'``); choosing it makes
``DFMModel_from_info`` hand FaceSwapDFM a ``RemoteDFMModel`` through DFL's usual initializer events
(initializing, then initialized or an error that DFL shows), and every ``convert`` of that model is
a request to the server: the same inputs and returns as DFL's ``DFMModel.convert`` (any image size
and dtype; DFL's resizing around the model), through ``FastDFM`` around the client. Every other
model in the list stays local.

A frame whose swap fails (server down, timeout, 5xx) goes on unswapped: the celeb face is the input
and both masks are zero, so DFL's merger keeps the camera's face; the reason is logged (the first
failure, then a count every ``_LOG_EVERY`` s) and the client reconnects when the server is back.
Standard library and numpy: it runs in DFL's own Python 3.8 worker.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple
from urllib.parse import urlsplit

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR

__all__ = ["patch_model_list", "RemoteDFMModel", "REMOTE_SUFFIX"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

REMOTE_SUFFIX = ".remote-dfm"  # the model path of the list entry: how the entry is known again after a restart
_INFO_TIMEOUT = 2.0
_LOG_EVERY = 10.0


def _netloc(url: str) -> str:
    parts = urlsplit(url if "://" in url else "http://" + url)
    return "%s:%s" % (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def _server_model(url: str) -> Optional[str]:
    """The server's model name, or None when it cannot be reached right now."""
    from dfl_perf.remote import RemoteSwapError, RemoteSwapper

    try:
        with RemoteSwapper(url, timeout=_INFO_TIMEOUT) as client:
            return client.model_name
    except RemoteSwapError as exc:
        log.warning("dfl_perf: remote swap server %s: %s", url, exc)
        return None


def remote_entry(info_class: Any, models_path: Any, url: str) -> Any:
    """DFL's DFMModelInfo for the server's model."""
    model = _server_model(url)
    name = "%s @ %s" % (model, _netloc(url)) if model else "remote model @ %s (unreachable)" % _netloc(url)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in _netloc(url))
    return info_class(name=name, model_path=Path(models_path) / ("%s%s" % (safe, REMOTE_SUFFIX)))


def is_remote(info: Any) -> bool:
    try:
        return str(info.get_model_path()).endswith(REMOTE_SUFFIX)
    except AttributeError:
        return False


class _Events:
    """The fields FaceSwapDFM reads from DFL's ``DFMModelInitializer.Events``."""

    def __init__(self) -> None:
        for when in ("prev", "new"):
            for status in ("initializing", "downloading", "initialized", "error"):
                setattr(self, "%s_status_%s" % (when, status), False)
        self.download_progress: Optional[float] = None
        self.error: Optional[str] = None
        self.dfm_model: Any = None


class RemoteModelInitializer:
    """DFL's initializer protocol (``process_events()`` once per tick) for the server's model."""

    def __init__(self, info: Any, url: str, codec: str) -> None:
        self._steps = self._run(info, url, codec)

    def process_events(self) -> _Events:
        return next(self._steps)

    @staticmethod
    def _run(info: Any, url: str, codec: str) -> Any:
        events = _Events()
        events.new_status_initializing = True
        yield events
        events = _Events()
        events.prev_status_initializing = True
        try:
            events.dfm_model = RemoteDFMModel(info.get_model_path(), url, codec)
            events.new_status_initialized = True
        except Exception as exc:  # shown in DFL's UI, as a model that fails to load is
            events.new_status_error = True
            events.error = "remote swap server %s: %s" % (url, exc)
        yield events
        while True:
            yield _Events()


class RemoteDFMModel:
    """DFL's ``DFMModel`` interface, its ``convert`` done by the server."""

    def __init__(self, model_path: Any, url: str, codec: str = "raw") -> None:
        from dfl_perf.adapters.deepfacelive.dfm import FastDFM
        from dfl_perf.remote.runner import RemoteDFM

        self._model_path = Path(model_path)
        self.runner = RemoteDFM.connect(url, codec=codec, live=True)
        self._fast = FastDFM(None, runner=self.runner)
        self._failures = 0
        self._logged = 0.0
        self._lock = threading.Lock()

    def get_model_path(self) -> Path:
        return self._model_path

    def get_input_res(self) -> Tuple[int, int]:
        return self.runner.resolution, self.runner.resolution

    def has_morph_value(self) -> bool:
        return self.runner.has_morph_value

    def convert(self, img: np.ndarray, morph_factor: float = DEFAULT_MORPH_FACTOR) -> Tuple[np.ndarray, ...]:
        """DFL's ``convert``: (celeb NHW3, celeb_mask NHW1, face_mask NHW1) in ``img``'s size and dtype."""
        from dfl_perf.remote import RemoteSwapError

        try:
            return self._fast.convert(img, morph_factor)
        except RemoteSwapError as exc:
            self._failed(exc)
            return _unswapped(img)

    def convert_batch(self, images: List[np.ndarray], morph_factor: float = DEFAULT_MORPH_FACTOR) -> List[Any]:
        from dfl_perf.remote import RemoteSwapError

        try:
            return self._fast.convert_batch(images, morph_factor)
        except RemoteSwapError as exc:
            self._failed(exc)
            return [_unswapped(img) for img in images]

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._failures += 1
            now = time.monotonic()
            if now - self._logged < _LOG_EVERY:
                return
            self._logged = now
            failures, self._failures = self._failures, 0
        log.warning("dfl_perf: remote swap failed for %d frame(s), shown unswapped: %s", failures, exc)

    def close(self) -> None:
        self._fast.close()


def _unswapped(img: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What keeps the camera's face: the input as the celeb face, zero masks; DFL's shapes and dtype."""
    from dfl_perf.adapters.deepfacelive.dfm import _as_nhwc, _channels

    faces = _as_nhwc(img)
    zeros = np.zeros(faces.shape[:3] + (1,), faces.dtype)
    return np.array(_channels(faces, 3)), zeros, zeros.copy()


def patch_model_list(module: Any, patcher: Any, url: str, codec: str = "raw") -> None:
    """Add the server's model to ``modelhub.DFLive``'s model list, and load it as a RemoteDFMModel."""
    listing = getattr(module, "get_available_models_info", None)
    from_info = getattr(module, "DFMModel_from_info", None)
    info_class = getattr(module, "DFMModelInfo", None)
    if listing is None or from_info is None or info_class is None:
        log.warning("dfl_perf: %s lacks the model list functions; --remote-swap is not installed", module.__name__)
        return

    def get_available_models_info(models_path: Any) -> List[Any]:
        return [remote_entry(info_class, models_path, url)] + list(listing(models_path))

    def DFMModel_from_info(dfm_model_info: Any, device: Any = None) -> Any:  # noqa: N802 - DFL's name
        if is_remote(dfm_model_info):
            return RemoteModelInitializer(dfm_model_info, url, codec)
        return from_info(dfm_model_info, device)

    get_available_models_info.__doc__ = listing.__doc__
    DFMModel_from_info.__doc__ = from_info.__doc__
    patcher.replace(module, "get_available_models_info", get_available_models_info)
    patcher.replace(module, "DFMModel_from_info", DFMModel_from_info)
