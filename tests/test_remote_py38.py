"""DeepFaceLive's Python 3.8 client against a ``dfl-perf serve`` started from a newer Python.

Ray does not run on 3.8, so the server comes from the interpreter named by ``DFL_PERF_SERVE_PYTHON``
(CI points it at the 3.11 job's environment). The server is stopped with SIGINT, as Ctrl-C would,
and must leave no process behind.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np
import pytest

from tests.serve_harness import ServeProcess, alive, local_swap, wait_for

SERVE_PYTHON = os.environ.get("DFL_PERF_SERVE_PYTHON")
pytestmark = [
    pytest.mark.skipif(sys.version_info >= (3, 10), reason="this check is for DFL's Python 3.8 client; on this "
                       "Python test_serve_ray.py runs the client against its own Ray Serve"),
    pytest.mark.skipif(not SERVE_PYTHON, reason="set DFL_PERF_SERVE_PYTHON to a Python >= 3.10 with "
                       "dfl_perf[serve] to run this 3.8 client against its server (CI does)"),
]

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.remote import RemoteSwapError, RemoteSwapper  # noqa: E402


def test_py38_client_against_a_server_from_a_newer_python(tmp_path):
    model = save_dfm_standin(tmp_path / "standin.dfm", resolution=224, cost="5ms", seed=3)
    server = ServeProcess(SERVE_PYTHON, model, token="py38-token")
    try:
        server.wait_ready()
        processes = server.ray_processes()
        faces = np.random.RandomState(0).randint(0, 256, (2, 224, 224, 3), dtype=np.uint8)
        local = local_swap(model, faces)
        with RemoteSwapper(server.url, token="py38-token") as client:
            remote = client.swap(faces)
            assert client.info()["protocol"] == "dfl-perf-swap/1"
        for r, loc in zip(remote, local):
            assert np.abs(r - loc).max() * 255 <= 1.0
        with RemoteSwapper(server.url, token="nope") as client:
            with pytest.raises(RemoteSwapError) as info:
                client.swap(faces)
            assert info.value.http_status == 401
        assert server.stop(signal.SIGINT) == 0, server.log()[-2000:]
        assert wait_for(lambda: not alive(processes), 15), [p.pid for p in alive(processes)]
    finally:
        server.stop()
        server.kill_everything()
