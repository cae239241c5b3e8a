"""Test helpers for the remote swap: a loopback HTTP server around the real ``SwapService`` (no Ray,
so the client's failure handling is tested on every Python), and ``dfl-perf serve`` as a process.

``LoopbackServer`` is not a stand-in for Ray Serve: the tests of the Serve deployment itself run a
real Serve on a local Ray (tests/test_serve_ray.py). This one lets a test make the server slow,
failing, stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, List, Optional

from dfl_perf.serve.service import BodyTooLarge, SwapService


def local_swap(model_path: Any, faces: Any, morph: Optional[float] = None) -> Any:
    """The local model's (celeb, celeb_mask, face_mask), float32, DFL's way: what remote results must equal."""
    import onnxruntime as ort

    from dfl_perf.buffers import DFMRunner

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    out = DFMRunner(session, io_binding=False).run(faces, 0.75 if morph is None else morph)
    return out.celeb_face, out.celeb_face_mask, out.face_mask


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackServer:
    """``SwapService`` over the standard library's threading HTTP server on 127.0.0.1.

    ``model``: a SwapModel. ``delay``: seconds each swap sleeps first. ``fail``: when set, swaps
    raise it (a 500). ``stop()`` and ``start()`` again reuse the port.
    """

    def __init__(self, model: Any, token: Optional[str] = None, port: Optional[int] = None) -> None:
        self.model = model
        self.token = token
        self.port = port or free_port()
        self.delay = 0.0
        self.fail: Optional[BaseException] = None
        self.requests = 0
        self._server: Optional[ThreadingHTTPServer] = None
        self._sockets: List[Any] = []  # open connections: a stopped server drops them, as a dead one would
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    async def _swap(self, request: Any) -> Any:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return self.model.swap(request.faces, request.morph), 0.0

    def start(self) -> LoopbackServer:
        info = dict(self.model.describe(), batching=False, max_batch=1, codecs=["raw", "jpeg"])
        service = SwapService(info, self.token, self._swap)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                owner._sockets.append(self.connection)

            def _any(self) -> None:
                owner.requests += 1
                headers = {k.lower(): v for k, v in self.headers.items()}

                async def read_body(limit: int) -> bytes:
                    size = int(headers.get("content-length", "0"))
                    if size > limit:
                        raise BodyTooLarge()
                    return self.rfile.read(size)

                reply = asyncio.run(service.handle(self.command, self.path, headers, read_body))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = _any

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that gave up (a timeout test) is not the server's error

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-swap-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._sockets = []
            self._thread.join(5)
            self._server = None

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ------------------------------------------------------------------------- dfl-perf serve as a process

class ServeProcess:
    """``dfl-perf serve`` run by ``python`` in its own session, with a private Ray temp dir.

    ``ray_processes()`` lists the processes of the Ray it started (found by that temp dir on their
    command lines, plus its descendants), so a test can check that none is left after it stops.
    """

    def __init__(self, python: str, model: Path, token: Optional[str] = None, extra: Optional[List[str]] = None,
                 port: Optional[int] = None, tls: bool = False) -> None:
        self.port = port or free_port()
        self.token = token
        self.temp = tempfile.mkdtemp(prefix="dflps", dir="/tmp")  # short: Ray's socket paths must fit
        self.cafile = self_signed_certificate(self.temp) if tls else None
        cmd = [python, "-m", "dfl_perf.cli", "serve", "--model", str(model), "--port", str(self.port),
               "--object-store-mb", "100"] + (["--token", token] if token else []) + list(extra or [])
        if self.cafile:
            cmd += ["--tls-cert", self.cafile, "--tls-key", os.path.join(self.temp, "key.pem")]
        env = dict(os.environ, RAY_TMPDIR=self.temp, PYTHONUNBUFFERED="1")
        env.pop("RAY_ADDRESS", None)
        self.log_path = Path(self.temp) / "serve.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def url(self) -> str:
        return "%s://127.0.0.1:%d" % ("https" if self.cafile else "http", self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 150.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dfl-perf serve exited with %s:\n%s" % (self.proc.returncode, self.log()[-3000:]))
            if "dfl-perf serve: ready at" in self.log() and self._healthy():
                return self
            time.sleep(0.5)
        raise RuntimeError("dfl-perf serve not ready within %.0f s:\n%s" % (timeout, self.log()[-3000:]))

    def _healthy(self) -> bool:
        import ssl

        request = urllib.request.Request(self.url + "/healthz")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        context = ssl.create_default_context(cafile=self.cafile) if self.cafile else None
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as reply:
                return reply.status == 200
        except OSError:
            return False

    def ray_processes(self) -> List[Any]:
        import psutil

        found = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            if any(self.temp in part for part in (proc.info["cmdline"] or [])):
                found[proc.pid] = proc
        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        return list(found.values())

    def replica_pids(self) -> List[int]:
        return [p.pid for p in self.ray_processes() if "ServeReplica" in " ".join(_cmdline(p))]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill_everything(self) -> None:
        """Last resort for a test's teardown: the server's process group and its Ray processes."""
        import psutil

        for proc in self.ray_processes():
            try:
                proc.kill()
            except psutil.Error:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def self_signed_certificate(folder: str) -> Optional[str]:
    """cert.pem and key.pem for 127.0.0.1 in ``folder`` (openssl); the certificate's path, None without openssl."""
    import shutil

    if shutil.which("openssl") is None:
        return None
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert


def _cmdline(proc: Any) -> List[str]:
    try:
        return proc.cmdline()
    except Exception:
        return []


def alive(processes: List[Any]) -> List[Any]:
    """Those of ``processes`` still running (zombies count as gone)."""
    import psutil

    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.Error:
            pass
    return left


def ray_python() -> Optional[str]:
    """An interpreter that can run ``dfl-perf serve``: this one when Ray Serve imports, else None."""
    import importlib.util

    return sys.executable if importlib.util.find_spec("ray") is not None else None


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
