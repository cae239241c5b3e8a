"""dfl_perf.remote.RemoteSwapper against the real SwapService and model on a loopback HTTP server.

No Ray here (tests/test_serve_ray.py runs the client against a real Ray Serve): these run on both
Pythons and make the server slow, failing, stopped and restarted, which a client must survive.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.remote import RemoteSwapError, RemoteSwapper  # noqa: E402
from dfl_perf.serve.model import SwapModel  # noqa: E402
from tests.serve_harness import LoopbackServer, local_swap  # noqa: E402

RES = 64


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("m") / "standin.dfm", resolution=RES, cost="5ms", seed=4)


@pytest.fixture(scope="module")
def model(model_path):
    swap_model = SwapModel(model_path, "cpu", threads=1)
    yield swap_model
    swap_model.close()


@pytest.fixture
def server(model):
    with LoopbackServer(model, token="tok") as running:
        yield running


def _faces(n=1, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def test_same_call_shape_and_outputs_as_the_local_swapper(server, model_path):
    faces = _faces(2)
    with RemoteSwapper(server.url, token="tok") as client:
        assert client.resolution == RES and client.model_name == "standin"
        remote = client.swap(faces)
        assert client.swap(list(faces))[0].shape == (2, RES, RES, 3)
        assert client.swap(faces[0])[0].shape == (1, RES, RES, 3)
    local = local_swap(model_path, faces)
    for r, loc, channels in zip(remote, local, (3, 1, 1)):
        assert r.shape == loc.shape == (2, RES, RES, channels) and r.dtype == np.float32
        assert np.abs(r - loc).max() <= 1.0 / 255 + 1e-6  # half a level each way, from uint8 on the wire


def test_keep_alive_and_bytes_per_face(server):
    with RemoteSwapper(server.url, token="tok") as client:
        for seed in range(5):
            client.swap_uint8(_faces(1, seed))
        stats = client.stats()
    assert stats["connections_opened"] == 1
    assert stats["ok"] == 5 and stats["errors"] == 0
    assert stats["sent_per_face"] == RES * RES * 3
    assert stats["received_per_face"] == RES * RES * 5


def test_jpeg_codec_sends_fewer_bytes(server, model_path):
    y, x = np.mgrid[0:RES, 0:RES].astype(np.float32) / RES
    face = np.stack([x * 200 + 20, y * 180 + 30, (x + y) * 90 + 10], axis=-1).astype(np.uint8)[None]
    with RemoteSwapper(server.url, token="tok", codec="jpeg") as client:
        celeb, _, face_mask = client.swap(face)
        stats = client.stats()
    assert stats["sent_per_face"] < RES * RES * 3 / 4
    local_celeb, _, local_mask = local_swap(model_path, face)
    assert np.abs(celeb - local_celeb).mean() < 4 / 255
    assert np.abs(face_mask - local_mask).mean() < 4 / 255


def test_wrong_or_missing_token_is_refused_with_the_reason(server):
    for token in (None, "wrong"):
        with RemoteSwapper(server.url, token=token) as client:
            with pytest.raises(RemoteSwapError) as info:
                client.swap(_faces())
        assert info.value.http_status == 401 and "unauthorized" in info.value.reason
        assert info.value.status == "error"


def test_a_face_of_the_wrong_size_gets_the_servers_reason(server):
    with RemoteSwapper(server.url, token="tok") as client:
        with pytest.raises(RemoteSwapError, match=r"HTTP 400: 400 bad request: wrong size: faces are 32x32, this model takes 64x64"):
            client.swap(np.zeros((1, 32, 32, 3), np.uint8))
        assert client.swap(_faces())[0].shape[0] == 1  # and it goes on


def test_timeout_is_an_error_with_the_reason_and_no_hang(server):
    server.delay = 1.0
    with RemoteSwapper(server.url, token="tok", timeout=0.2) as client:
        start = time.perf_counter()
        with pytest.raises(RemoteSwapError, match="timeout: no reply from .* within 200 ms"):
            client.swap(_faces())
        assert time.perf_counter() - start < 0.6
        server.delay = 0.0
        assert client.swap(_faces(), timeout=10)[0].shape[0] == 1  # a new connection: the slow one was dropped


def test_server_errors_are_errors_with_the_servers_message(server):
    server.fail = RuntimeError("out of GPU memory")
    with RemoteSwapper(server.url, token="tok") as client:
        with pytest.raises(RemoteSwapError, match="HTTP 500: 500 swap failed: RuntimeError: out of GPU memory") as info:
            client.swap(_faces())
        assert info.value.http_status == 500
        server.fail = None
        assert client.swap(_faces())[0].shape[0] == 1


def test_server_down_fails_fast_then_reconnects_when_it_is_back(model):
    server = LoopbackServer(model, token="tok").start()
    with RemoteSwapper(server.url, token="tok", retry_interval=0.3) as client:
        client.swap(_faces())
        server.stop()
        start = time.perf_counter()
        reasons = []
        for _ in range(3):
            with pytest.raises(RemoteSwapError) as info:
                client.swap(_faces())
            reasons.append(info.value.reason)
        assert time.perf_counter() - start < 0.5  # refused, then failing fast without piling up
        assert "cannot connect" in reasons[0] or "lost" in reasons[0] or "failed" in reasons[0]
        assert any("server unreachable" in r for r in reasons[1:])
        server.start()
        time.sleep(0.35)
        assert client.swap(_faces())[0].shape[0] == 1
    server.stop()


def test_several_requests_in_flight_through_submit(server):
    server.delay = 0.2
    with RemoteSwapper(server.url, token="tok", connections=4) as client:
        start = time.perf_counter()
        futures = [client.submit(_faces(1, i)) for i in range(4)]
        results = [f.result(5) for f in futures]
        elapsed = time.perf_counter() - start
    assert all(r.ok for r in results), [r.reason for r in results]
    assert elapsed < 0.6  # four 0.2 s swaps at once, not one after another
    assert results[0].outputs()[0].shape == (1, RES, RES, 3)


def test_submit_always_resolves_with_a_status(server):
    server.delay = 0.5
    with RemoteSwapper(server.url, token="tok", connections=1, timeout=2.0) as client:
        futures = [client.submit(_faces(), deadline=0.3) for _ in range(3)]
        results = [f.result(5) for f in futures]
    for result in results:  # the first times out; the others wait for the one connection past their deadline
        assert result.status == "late", result
        assert result.reason.startswith(("timeout", "not sent: its deadline passed")), result
    with RemoteSwapper("http://127.0.0.1:9", timeout=0.5) as down:
        result = down.submit(_faces()).result(5)
    assert result.status == "error" and "cannot connect" in result.reason


def test_close_stops_every_thread(server, no_thread_leak):
    client = RemoteSwapper(server.url, token="tok")
    for future in [client.submit(_faces()) for _ in range(3)]:
        assert future.result(5).ok
    client.close()
    client.close()
    with pytest.raises(RemoteSwapError, match="closed"):
        client.swap(_faces())


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="codec"):
        RemoteSwapper("http://h:1", codec="png")
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        RemoteSwapper("ftp://h:1")
    client = RemoteSwapper("http://127.0.0.1:9")
    with pytest.raises(ValueError, match=r"aligned BGR faces \(N, R, R, 3\)"):
        client.swap(np.zeros((4, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8 BGR 0..255 or float32 0..1"):
        client.swap(np.zeros((1, 8, 8, 3), np.int16))


def test_threads_share_the_connections(server):
    errors = []
    with RemoteSwapper(server.url, token="tok", connections=2) as client:
        def work(seed):
            try:
                for i in range(5):
                    client.swap_uint8(_faces(1, seed * 10 + i))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        stats = client.stats()
    assert not errors
    assert stats["ok"] == 20 and stats["connections_opened"] <= 2
