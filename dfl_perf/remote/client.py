"""``RemoteSwapper``: the DFM swap step on a ``dfl-perf serve`` server, over plain HTTP keep-alive.

Standard library and numpy only (OpenCV for ``codec='jpeg'``), Python 3.8: it runs inside
DeepFaceLive's own process. Nothing here imports Ray.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union
from urllib.parse import urlsplit

import numpy as np

from dfl_perf.remote.wire import CODECS, SwapReply, WireError, decode_reply, encode_request, quantise

__all__ = ["RemoteSwapper", "RemoteSwapError", "SwapResult", "TOKEN_ENV", "CAFILE_ENV"]

#: environment variable holding the token (client and server)
TOKEN_ENV = "DFL_PERF_SERVE_TOKEN"
#: environment variable naming a CA bundle for an https:// server with a private certificate
CAFILE_ENV = "DFL_PERF_SERVE_CAFILE"
Faces = Union[np.ndarray, Sequence[np.ndarray]]
_INV255 = np.float32(1.0 / 255.0)


class RemoteSwapError(RuntimeError):
    """A remote swap that did not return faces. ``status`` is 'error' or 'late' (the frame statuses);
    ``reason`` says why (server down, timeout, HTTP status and the server's message); ``http_status``
    is the HTTP status when the server answered."""

    def __init__(self, reason: str, status: str = "error", http_status: Optional[int] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.http_status = http_status


class SwapResult(NamedTuple):
    """What ``submit`` resolves to (never an exception): ``status`` 'ok', 'error' or 'late'."""

    status: str
    reply: Optional[SwapReply]  # uint8 outputs when ok
    reason: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def outputs(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(celeb, celeb_mask, face_mask) float32 0..1, as ``RemoteSwapper.swap`` returns them."""
        if self.reply is None:
            raise RemoteSwapError(self.reason, self.status)
        return as_float(self.reply)


def as_float(reply: SwapReply) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 outputs to DFL's float32 0..1 (celeb (N,R,R,3), celeb_mask (N,R,R,1), face_mask (N,R,R,1))."""
    return (np.multiply(reply.celeb, _INV255, dtype=np.float32),
            np.multiply(reply.celeb_mask[..., None], _INV255, dtype=np.float32),
            np.multiply(reply.face_mask[..., None], _INV255, dtype=np.float32))


class _Endpoint:
    """Where the server is, and how to open a connection to it."""

    def __init__(self, url: str, cafile: Optional[str]) -> None:
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("remote swap URL must look like http://HOST:PORT (or https://), got %r" % url)
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.url = "%s://%s:%d%s" % (self.scheme, self.host, self.port, self.prefix)
        self._context = ssl.create_default_context(cafile=cafile) if self.scheme == "https" else None

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = self.faces = self.ok = self.errors = self.late = 0
        self.bytes_sent = self.bytes_received = 0
        self.ok_faces = self.sent_ok = self.received_ok = 0  # over successful swaps: bytes per face
        self.reconnects = 0
        self.last_error = ""

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            faces = max(self.ok_faces, 1)
            return {"requests": self.requests, "faces": self.faces, "ok": self.ok, "errors": self.errors,
                    "late": self.late, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                    "sent_per_face": self.sent_ok / faces, "received_per_face": self.received_ok / faces,
                    "bytes_per_face": (self.sent_ok + self.received_ok) / faces,
                    "connections_opened": self.reconnects, "last_error": self.last_error}


class RemoteSwapper:
    """The DFM swap on a remote ``dfl-perf serve``: ``swap(faces) -> (celeb, celeb_mask, face_mask)``.

    The call shape of DFL's ``DFMModel.convert`` on aligned faces: aligned BGR faces in (one
    (R, R, 3), a batch (N, R, R, 3) or a list; uint8, or float32 0..1 sent as uint8); celeb face,
    celeb mask, face mask out, float32 0..1 (``RemoteDFM`` gives the local ``DFMRunner``'s shape).
    ``swap_uint8`` returns the outputs as they travel (uint8, no conversion); ``submit`` runs a
    swap on a worker thread and returns a Future that always resolves to a ``SwapResult``.

    ``token``: the server's token (default: ``DFL_PERF_SERVE_TOKEN``). ``timeout``: seconds for a
    whole exchange. ``codec``: 'raw' (exact; 150 KB up per 224 face) or 'jpeg' (about 10x fewer
    bytes, needs OpenCV). ``connections``: keep-alive connections, so that many requests can be in
    flight at once (from several threads, or through ``submit``). ``cafile``: a CA bundle for an
    ``https://`` server with a private certificate (default: ``DFL_PERF_SERVE_CAFILE``). When the server cannot be reached, calls fail
    at once for ``retry_interval`` seconds (no pile-up of frames waiting on a dead host), then the
    next call connects again.

    Every failure is a ``RemoteSwapError`` (``status`` 'error' or 'late', ``reason``): the server
    is down, the exchange timed out, the server answered 4xx/5xx (its message included). Nothing
    hangs longer than ``timeout``. ``stats()`` reports requests, failures and bytes per face.
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 2.0, codec: str = "raw",
                 connections: int = 4, jpeg_quality: int = 90, cafile: Optional[str] = None,
                 retry_interval: float = 0.5) -> None:
        import os

        if codec not in CODECS:
            raise ValueError("codec must be one of %s, got %r" % (CODECS, codec))
        if not timeout > 0:
            raise ValueError("timeout must be > 0 seconds, got %r" % (timeout,))
        if connections < 1:
            raise ValueError("connections must be >= 1, got %r" % (connections,))
        self.endpoint = _Endpoint(url, cafile if cafile is not None else (os.environ.get(CAFILE_ENV) or None))
        self.url = self.endpoint.url
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.timeout = float(timeout)
        self.codec = codec
        self.jpeg_quality = int(jpeg_quality)
        self.connections = int(connections)
        self.retry_interval = float(retry_interval)
        self._idle: List[http.client.HTTPConnection] = []
        self._slots = threading.BoundedSemaphore(self.connections)
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._down_reason = ""
        self._info: Optional[Dict[str, Any]] = None
        self._stats = _Stats()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._closed = False
        self._local = threading.local()

    # -- what the server runs -----------------------------------------------------------------

    def info(self, refresh: bool = False) -> Dict[str, Any]:
        """The server's model: ``{'model', 'resolution', 'morph', 'max_batch', 'codecs', ...}`` (cached)."""
        if self._info is None or refresh:
            status, _, body = self._exchange("GET", "/info", None, {}, self.timeout)
            if status != 200:
                raise RemoteSwapError(_http_reason(status, body), http_status=status)
            try:
                info = json.loads(body.decode("utf-8"))
                int(info["resolution"])
            except (ValueError, KeyError, TypeError):
                raise RemoteSwapError("%s/info did not return the server's model description" % self.url) from None
            self._info = info
        return self._info

    @property
    def resolution(self) -> int:
        return int(self.info()["resolution"])

    @property
    def has_morph(self) -> bool:
        return bool(self.info().get("morph"))

    @property
    def model_name(self) -> str:
        return str(self.info().get("model", "remote model"))

    # -- swapping -----------------------------------------------------------------------------

    def swap(self, faces: Faces, morph_factor: Optional[float] = None,
             timeout: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(celeb (N,R,R,3), celeb_mask (N,R,R,1), face_mask (N,R,R,1)) float32 0..1, DFL's convert order."""
        return as_float(self.swap_uint8(faces, morph_factor, timeout))

    def swap_uint8(self, faces: Faces, morph_factor: Optional[float] = None,
                   timeout: Optional[float] = None) -> SwapReply:
        """The outputs as uint8 (x * 255 rounded): celeb (N,R,R,3), celeb_mask (N,R,R), face_mask (N,R,R)."""
        batch = self._as_batch(faces)
        headers, body = encode_request(batch, morph_factor, self.codec, self.jpeg_quality)
        with self._stats.lock:
            self._stats.requests += 1
            self._stats.faces += len(batch)
        try:
            status, reply_headers, data = self._exchange("POST", "/swap", body, headers,
                                                         self.timeout if timeout is None else timeout)
            if status != 200:
                raise RemoteSwapError(_http_reason(status, data), http_status=status)
            try:
                reply = decode_reply(reply_headers, data, len(batch), batch.shape[1])
            except WireError as exc:
                raise RemoteSwapError("bad reply from %s: %s" % (self.url, exc)) from None
        except RemoteSwapError as exc:
            with self._stats.lock:
                if exc.status == "late":
                    self._stats.late += 1
                else:
                    self._stats.errors += 1
                self._stats.last_error = exc.reason
            raise
        self._local.server_timing = parse_server_timing(reply_headers.get("server-timing", ""))
        self._local.replica = reply_headers.get("x-replica", "")
        with self._stats.lock:
            self._stats.ok += 1
            self._stats.ok_faces += len(batch)
            self._stats.sent_ok += len(body)
            self._stats.received_ok += len(data)
            self._stats.bytes_sent += len(body)
            self._stats.bytes_received += len(data)
        return reply

    def submit(self, faces: Faces, morph_factor: Optional[float] = None,
               deadline: Optional[float] = None) -> Future:
        """Swap on a worker thread (up to ``connections`` in flight); the Future gives a ``SwapResult``.

        ``deadline``: seconds from now; a swap that cannot finish by then is 'late' (not sent if it
        is already late when a connection frees up).
        """
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.connections, thread_name_prefix="dfl-perf-remote")
            executor = self._executor
        due = None if deadline is None else time.perf_counter() + deadline
        return executor.submit(self._swap_result, faces, morph_factor, due)

    def _swap_result(self, faces: Faces, morph_factor: Optional[float], due: Optional[float]) -> SwapResult:
        start = time.perf_counter()
        if self._closed:
            return SwapResult("error", None, "the RemoteSwapper was closed before this swap was sent", 0.0)
        timeout = self.timeout
        if due is not None:
            left = due - start
            if left <= 0:
                return SwapResult("late", None, "not sent: its deadline passed while it waited for a connection", 0.0)
            timeout = min(timeout, left)
        try:
            reply = self.swap_uint8(faces, morph_factor, timeout)
        except RemoteSwapError as exc:
            status = "late" if due is not None and exc.reason.startswith("timeout") else exc.status
            return SwapResult(status, None, exc.reason, time.perf_counter() - start)
        except Exception as exc:  # a bad face: still a result, with the reason
            return SwapResult("error", None, "%s: %s" % (type(exc).__name__, exc), time.perf_counter() - start)
        return SwapResult("ok", reply, "", time.perf_counter() - start)

    def _as_batch(self, faces: Faces) -> np.ndarray:
        if isinstance(faces, np.ndarray):
            batch = faces[None] if faces.ndim == 3 else faces
        elif isinstance(faces, (list, tuple)) and faces:
            batch = np.stack(faces)
        else:
            raise TypeError("faces must be a numpy array or a non-empty list of arrays, got %r" % (type(faces).__name__,))
        if batch.ndim != 4 or batch.shape[3] != 3 or batch.shape[1] != batch.shape[2] or batch.shape[0] < 1:
            raise ValueError("faces must be aligned BGR faces (N, R, R, 3), got shape %s" % (faces_shape(faces),))
        if self._info is not None and batch.shape[1] != self.resolution:
            raise ValueError("faces are %dx%d, the server's model %s takes %dx%d"
                             % (batch.shape[1], batch.shape[2], self.model_name, self.resolution, self.resolution))
        if batch.dtype == np.float32:
            batch = quantise(batch, np.empty(batch.shape, np.uint8))
        elif batch.dtype != np.uint8:
            raise TypeError("faces must be uint8 BGR 0..255 or float32 0..1, got %s" % batch.dtype)
        return batch

    # -- HTTP ---------------------------------------------------------------------------------

    def _exchange(self, method: str, path: str, body: Optional[bytes], headers: Dict[str, str],
                  timeout: float) -> Tuple[int, Dict[str, str], bytes]:
        """One request on a keep-alive connection: (status, headers, body); RemoteSwapError on failure."""
        if self._closed:
            raise RemoteSwapError("the RemoteSwapper is closed")
        if self.token:
            headers = dict(headers, Authorization="Bearer " + self.token)
        start = time.perf_counter()
        self._check_reachable()
        if not self._slots.acquire(timeout=timeout):
            raise RemoteSwapError("timeout: all %d connections stayed busy for %.0f ms"
                                  % (self.connections, timeout * 1e3), "late")
        try:
            for attempt in (0, 1):
                conn, reused = self._connection(timeout)
                try:
                    return self._request(conn, method, path, body, headers, start + timeout)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                    conn.close()
                    if reused and attempt == 0 and time.perf_counter() - start < timeout:
                        continue  # the server closed an idle keep-alive connection: once more on a new one
                    raise RemoteSwapError("connection to %s lost: %s" % (self.url, _describe(exc))) from None
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    raise self._failure(exc, timeout) from None
            raise AssertionError("unreachable")
        finally:
            self._slots.release()

    def _check_reachable(self) -> None:
        left = self._down_until - time.perf_counter()
        if left > 0:
            raise RemoteSwapError("server unreachable: %s (next try in %.0f ms)" % (self._down_reason, left * 1e3))

    def _connection(self, timeout: float) -> Tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        conn = self.endpoint.connection(timeout)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            reason = "cannot connect to %s: %s" % (self.url, _describe(exc))
            with self._lock:
                self._down_until = time.perf_counter() + self.retry_interval
                self._down_reason = reason
            raise RemoteSwapError(reason) from None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._stats.lock:
            self._stats.reconnects += 1
        return conn, False

    def _request(self, conn: http.client.HTTPConnection, method: str, path: str, body: Optional[bytes],
                 headers: Dict[str, str], due: float) -> Tuple[int, Dict[str, str], bytes]:
        conn.sock.settimeout(max(due - time.perf_counter(), 0.001))
        conn.request(method, self.endpoint.prefix + path, body=body, headers=headers)
        conn.sock.settimeout(max(due - time.perf_counter(), 0.001))
        response = conn.getresponse()
        data = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)
        return response.status, reply_headers, data

    def _failure(self, exc: BaseException, timeout: float) -> RemoteSwapError:
        if isinstance(exc, socket.timeout):
            return RemoteSwapError("timeout: no reply from %s within %.0f ms" % (self.url, timeout * 1e3))
        return RemoteSwapError("exchange with %s failed: %s" % (self.url, _describe(exc)))

    # -- bookkeeping --------------------------------------------------------------------------

    def last_server_timing(self) -> Dict[str, float]:
        """The server's ``Server-Timing`` of this thread's last successful swap, in ms:
        ``model`` (the model run that served it) and ``replica`` (the server's whole handling)."""
        return dict(getattr(self._local, "server_timing", {}))

    def last_replica(self) -> str:
        """The server replica that answered this thread's last successful swap ('' if none said)."""
        return getattr(self._local, "replica", "")

    def stats(self) -> Dict[str, Any]:
        """Requests, faces, ok/errors/late, body bytes sent and received (in total and per face swapped)."""
        return self._stats.snapshot()

    def close(self) -> None:
        """Finish the swaps in flight (later ones resolve as errors), close the connections. Idempotent."""
        self._closed = True
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> RemoteSwapper:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def parse_server_timing(text: str) -> Dict[str, float]:
    """``'model;dur=12.5, replica;dur=14'`` -> ``{'model': 12.5, 'replica': 14.0}`` (unparsable parts skipped)."""
    timing = {}
    for part in text.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                try:
                    timing[name] = float(value)
                except ValueError:
                    pass
    return timing


def faces_shape(faces: Any) -> Any:
    return getattr(faces, "shape", None) or [getattr(f, "shape", type(f).__name__) for f in faces]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, http.client.HTTPException) else "%s (%s)" % (text, type(exc).__name__)


def _http_reason(status: int, body: bytes) -> str:
    message = body[:300].decode("utf-8", "replace").strip()
    return "HTTP %d: %s" % (status, message or http.client.responses.get(status, "error"))
