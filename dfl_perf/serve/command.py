"""``dfl-perf serve``: deploy a DFM on Ray Serve until Ctrl-C or SIGTERM, then leave nothing behind.

Settings are checked (model file, host and token, numbers) before Ray is imported, so a mistake is
a one-line error, also on a Python that has no Ray. With no ``--address`` a local Ray is started
for this command alone (its own processes, never another user's cluster) and stopped at the end;
with one, only this command's Serve application is removed at the end.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, List, Optional

from dfl_perf.serve.auth import ServeSetupError, resolve_token
from dfl_perf.serve.settings import APP_NAME, ServeSettings

__all__ = ["serve_main", "settings_from_args", "Server"]

log = logging.getLogger("dfl_perf.serve")
#: a request or reply (150 KB up, 250 KB down for a raw 224 face) goes between the proxy and the replica
#: inline in the RPC, not through the object store (Ray's default cut is 100 KB): 11 -> 8 ms hop p50 measured
DIRECT_CALL_BYTES = 4 << 20
_QUIET = {"enable_access_log": False, "log_level": "WARNING"}
_RAY_MISSING = ("dfl-perf serve needs Ray Serve, which needs Python 3.10 or newer: "
                "pip install 'dfl_perf[serve]' on such a Python (%s)")


def _replicas(text: str) -> Any:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--replicas takes a count or 'auto', got %r" % text) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``dfl-perf serve`` (cli.py builds the subcommand with them)."""
    p.add_argument("--model", required=True, metavar="M.dfm", help="the DFM (or DFM-shaped ONNX) model to serve")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--replicas", type=_replicas, default=1, metavar="N|auto",
                   help="model replicas, or 'auto' to scale with the load (default 1)")
    p.add_argument("--max-batch", type=int, default=8, metavar="B",
                   help="requests batched into one model run (1: no batching; default 8)")
    p.add_argument("--batch-wait-ms", type=float, default=0.0, metavar="W",
                   help="also hold a batch that is not full this long for more requests (default 0: requests "
                        "that arrive while the model is busy share its next run; an idle model never waits)")
    p.add_argument("--provider", help="execution provider of the replicas: cuda, cpu, ... (default: best available)")
    p.add_argument("--token", help="clients must send it (default: DFL_PERF_SERVE_TOKEN; required off 127.0.0.1)")
    p.add_argument("--address", metavar="auto|ray://HOST:PORT",
                   help="an existing Ray cluster (default: start a local Ray for this command)")
    p.add_argument("--threads", type=int, help="intra-op threads per CPU replica (default: the cores split between them)")
    p.add_argument("--tls-cert", metavar="CERT.pem", help="serve HTTPS with this certificate (and --tls-key)")
    p.add_argument("--tls-key", metavar="KEY.pem", help="the certificate's private key")
    p.add_argument("--object-store-mb", type=int, default=256,
                   help="object store of the local Ray this command starts (default 256 MB)")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(model_path=args.model, host=args.host, port=args.port, replicas=args.replicas,
                         max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, provider=args.provider,
                         token=resolve_token(args.token), address=args.address, threads=args.threads,
                         tls_cert=args.tls_cert, tls_key=args.tls_key, object_store_mb=args.object_store_mb)


class Server:
    """Ray (started or joined), Serve, the application; ``stop()`` undoes exactly what ``start()`` did."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.started_ray = False
        self.started_serve = False
        self.info: dict = {}

    def start(self, after_init: Any = None) -> None:
        """Start or join Ray, start Serve, deploy. ``after_init`` runs right after ``ray.init``
        (which installs its own SIGTERM handler: the caller puts its own back)."""
        import ray
        from ray import serve

        s = self.settings
        if s.address is None:
            # replicas on every node share the load (Serve's proxy prefers its own node's replicas)
            os.environ.setdefault("RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING", "0")
            ray.init(address="local", object_store_memory=s.object_store_mb << 20, include_dashboard=False,
                     logging_level=logging.WARNING, log_to_driver=False, configure_logging=False,
                     _system_config={"max_direct_call_object_size": DIRECT_CALL_BYTES})
            self.started_ray = True
        else:
            ray.init(address=s.address, logging_level=logging.WARNING, log_to_driver=False)
        if after_init is not None:
            after_init()
        http = {"host": s.host, "port": s.port}
        if s.tls_cert:
            http.update(ssl_certfile=s.tls_cert, ssl_keyfile=s.tls_key)
        self.started_serve = not _serve_running()
        serve.start(http_options=http, proxy_location="HeadOnly", logging_config=_QUIET)
        self.deploy(s)

    def deploy(self, settings: ServeSettings) -> None:
        """Deploy (or redeploy in place) the application with ``settings``' model and batching."""
        import ray
        from ray import serve

        from dfl_perf.serve.app import build_app

        resources = ray.cluster_resources()
        app = build_app(settings, resources.get("GPU", 0.0), resources.get("CPU", 0.0))
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False, logging_config=_QUIET)

    def stop(self) -> None:
        """Remove the application, then Serve and Ray when this command started them."""
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                if self.started_serve or self.started_ray:
                    serve.shutdown()
                else:
                    serve.delete(APP_NAME)
        except Exception as exc:  # Ray going down under us (a signal to the whole group): finish anyway
            log.warning("dfl-perf serve: Serve shutdown: %s", exc)
        finally:
            if ray.is_initialized():
                ray.shutdown()


def _serve_running() -> bool:
    from ray import serve

    try:
        serve.status()
    except Exception:
        return False
    return True


def _describe(settings: ServeSettings) -> str:
    from dfl_perf.remote.client import RemoteSwapError, RemoteSwapper

    try:
        with RemoteSwapper(settings.url, token=settings.token, timeout=30.0, cafile=settings.tls_cert) as client:
            info = client.info()
    except RemoteSwapError as exc:
        return "(could not read /info: %s)" % exc
    return "model %s, %dx%d, %s, batching %s (max %s)" % (
        info.get("model"), info["resolution"], info["resolution"], info.get("provider"),
        "on" if info.get("batching") else "off", info.get("max_batch"))


def run_server(settings: ServeSettings, stop: Optional[threading.Event] = None) -> int:
    """Serve until ``stop`` is set (SIGINT/SIGTERM set it); always tears down what it started."""
    stop = stop or threading.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def catch() -> None:
        for sig in signals:
            signal.signal(sig, lambda *_: stop.set())

    catch()
    server = Server(settings)
    try:
        server.start(after_init=catch)
        if not stop.is_set():
            print("dfl-perf serve: ready at %s: %s" % (settings.url, _describe(settings)), flush=True)
            print("dfl-perf serve: Ctrl-C or SIGTERM stops it", flush=True)
        stop.wait()
        print("dfl-perf serve: stopping", flush=True)
        return 0
    finally:
        for sig in signals:  # a second Ctrl-C must not cut the teardown short
            signal.signal(sig, signal.SIG_IGN)
        try:
            server.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve_main(argv: List[str]) -> int:
    """Entry point of ``dfl-perf serve``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="dfl-perf serve", description="Serve a DFM on Ray Serve for remote swaps.")
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        settings = settings_from_args(args)
    except ServeSetupError as exc:
        print("dfl-perf serve: %s" % exc, file=sys.stderr)
        return 2
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        print("dfl-perf serve: " + _RAY_MISSING % exc, file=sys.stderr)
        return 2
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    return run_server(settings)
