"""``dfl-perf serve`` on a real Ray Serve on a local Ray (no mocks of Ray), with the real client.

One server for the module (a ``dfl-perf serve`` process with its own Ray: 2 CPUs, small object
store, no dashboard); the last test stops it mid-stream and checks that no process is left.
Ray needs Python >= 3.10: on DFL's 3.8 these skip, and tests/test_remote_py38.py runs the 3.8
client against a server started from a newer Python when one is given.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.serve_harness import ServeProcess, alive, local_swap, ray_python, wait_for

PYTHON = ray_python()
if PYTHON is None:  # one skip for the module
    pytest.skip("Ray Serve needs Python >= 3.10 and dfl_perf[serve]; the client is tested on this Python by "
                "test_remote_client.py (and test_remote_py38.py against a newer Python's server)",
                allow_module_level=True)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.remote import RemoteSwapError, RemoteSwapper  # noqa: E402

TOKEN = "test-token-1234"
RES = 224


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("serve") / "standin.dfm", resolution=RES, cost="5ms", seed=11)


@pytest.fixture(scope="module")
def served(model_path):
    # TLS and a token: what README asks for off this machine (plain HTTP only if there is no openssl)
    server = ServeProcess(PYTHON, model_path, token=TOKEN, extra=["--max-batch", "4"],
                          tls=True)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        server.kill_everything()


def _faces(n=1, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, RES, RES, 3), dtype=np.uint8)


def _smooth_faces(n=1, seed=0):
    """Photo-like faces (blurred noise): what the lossy codec is for."""
    return np.stack([cv2.GaussianBlur(face, (0, 0), 6) for face in _faces(n, seed)])


def _post(served, path, body=b"", headers=None, method="POST"):
    import ssl

    request = urllib.request.Request(served.url + path, data=body if method == "POST" else None, method=method,
                                     headers=headers or {})
    context = ssl.create_default_context(cafile=served.cafile) if served.cafile else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as reply:
            return reply.status, reply.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def test_remote_outputs_equal_local_ones_on_the_same_faces(served, model_path):
    faces = _smooth_faces(3, seed=1)
    local = local_swap(model_path, faces)
    with RemoteSwapper(served.url, token=TOKEN, cafile=served.cafile) as client:
        assert client.info()["batching"] is True and client.resolution == RES
        raw = client.swap(faces)
        timing = client.last_server_timing()
        assert 0 < timing["model"] <= timing["replica"]
    with RemoteSwapper(served.url, token=TOKEN, codec="jpeg", cafile=served.cafile) as client:
        jpeg = client.swap(faces)
        assert client.stats()["bytes_per_face"] < 100_000
    for remote, here in zip(raw, local):
        assert np.abs(remote - here).max() * 255 <= 1.0  # the raw codec: within a level
    for remote, here in zip(jpeg, local):
        assert np.abs(remote - here).mean() * 255 < 3  # lossy


def _status_of_partial_upload(served, headers, declared, sent):
    """Send a request that declares ``declared`` body bytes but sends only ``sent``; the reply's status."""
    import socket
    import ssl

    lines = ["POST /swap HTTP/1.1", "Host: 127.0.0.1", "Content-Length: %d" % declared]
    lines += ["%s: %s" % item for item in headers.items()]
    with socket.create_connection(("127.0.0.1", served.port), timeout=20) as raw:
        sock = ssl.create_default_context(cafile=served.cafile).wrap_socket(raw, server_hostname="127.0.0.1") \
            if served.cafile else raw
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"\0" * sent)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
            chunk = sock.recv(4096)  # with TLS the head and the body come in separate records
            if not chunk:
                break
            reply += chunk
        reply = reply.decode("latin-1")
    return int(reply.split(" ", 2)[1]), reply


def _length(head):
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_any_path_without_the_right_token_is_401_before_the_body_is_read(served):
    garbage = b"\0" * 1000  # a 400 (truncated) if the body were looked at first
    for path, method in (("/swap", "POST"), ("/info", "GET"), ("/healthz", "GET"), ("/anything/else", "GET")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic " + TOKEN},
                        {"Authorization": "Bearer " + TOKEN[:-1]}):
            status, text = _post(served, path, garbage, dict(headers, **{"X-Faces": "1"}), method)
            assert status == 401, (path, headers, status, text)
            assert "unauthorized" in text
    # 20 MB declared, 64 KB sent: the refusal comes without waiting for the rest of the body
    status, reply = _status_of_partial_upload(served, {"Authorization": "Bearer wrong"}, 20 << 20, 65536)
    assert status == 401, reply
    status, _ = _post(served, "/healthz", headers={"Authorization": "Bearer " + TOKEN}, method="GET")
    assert status == 200


def test_bad_bodies_get_400_naming_the_problem_and_the_server_keeps_serving(served):
    from dfl_perf.remote.wire import encode_request

    headers, body = encode_request(_faces(2))
    headers["Authorization"] = "Bearer " + TOKEN
    cases = [
        (dict(headers, **{"X-Resolution": "256"}), body, "wrong size: faces are 256x256, this model takes 224x224"),
        (dict(headers, **{"X-Dtype": "float32"}), body, "wrong dtype 'float32'"),
        (headers, body[:1000], "truncated body: got 1000 bytes, expected 301056"),
        (headers, body + body, "oversized body: got 602112 bytes, expected 301056"),
        (dict(headers, **{"X-Codec": "jpeg", "X-Parts": "5,5"}), b"0123456789", "face 0: not a decodable JPEG"),
    ]
    for case_headers, case_body, message in cases:
        status, text = _post(served, "/swap", case_body, case_headers)
        assert status == 400 and message in text, (status, text)
    auth = {"Authorization": "Bearer " + TOKEN}
    status, reply = _status_of_partial_upload(served, dict(headers, **auth), 20 << 20, 65536)
    assert status == 400 and "oversized body: Content-Length 20971520 is over this server's limit" in reply
    with RemoteSwapper(served.url, token=TOKEN, cafile=served.cafile) as client:
        assert client.swap(_faces())[0].shape == (1, RES, RES, 3)
        assert client.info(refresh=True)["rejected"] >= len(cases) + 1


def test_faces_from_several_clients_share_model_runs(served):
    with RemoteSwapper(served.url, token=TOKEN, cafile=served.cafile) as probe:
        before = probe.info(refresh=True)
    clients = [RemoteSwapper(served.url, token=TOKEN, cafile=served.cafile) for _ in range(4)]
    try:
        def stream(client, seed):
            for i in range(6):
                client.swap_uint8(_faces(1, seed * 100 + i))

        threads = [threading.Thread(target=stream, args=(c, i)) for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        after = clients[0].info(refresh=True)
    finally:
        for c in clients:
            c.close()
    faces = after["faces"] - before["faces"]
    runs = after["runs"] - before["runs"]
    assert faces == 24
    assert runs < faces, "no two requests shared a model run (%d runs for %d faces)" % (runs, faces)


def test_tls_with_serves_own_options(served):
    if served.cafile is None:
        pytest.skip("openssl not found: the module's server runs plain HTTP, so TLS is not checked")
    with RemoteSwapper(served.url, token=TOKEN, cafile=served.cafile) as client:
        assert client.swap(_faces())[0].shape == (1, RES, RES, 3)
    with RemoteSwapper(served.url, token=TOKEN) as client:  # a private certificate, not trusted by default
        with pytest.raises(RemoteSwapError, match="CERTIFICATE_VERIFY_FAILED"):
            client.info()
    with RemoteSwapper(served.url.replace("https", "http"), token=TOKEN) as client:  # no plain HTTP on that port
        with pytest.raises(RemoteSwapError):
            client.info()


def _stream(client, stop, results, period=0.05):
    """Swap one face every ``period`` s until ``stop``; every frame's (status, reason) into ``results``."""
    i = 0
    while not stop.is_set():
        future = client.submit(_faces(1, i % 5), deadline=2.0)
        result = future.result(10)
        results.append((result.status, result.reason))
        i += 1
        stop.wait(period)


def test_a_killed_replica_is_restarted_by_serve_and_the_stream_resumes(served):
    import os

    replicas = served.replica_pids()
    assert len(replicas) == 1, served.ray_processes()
    results, stop = [], threading.Event()
    with RemoteSwapper(served.url, token=TOKEN, timeout=2.0, retry_interval=0.2, cafile=served.cafile) as client:
        thread = threading.Thread(target=_stream, args=(client, stop, results))
        thread.start()
        try:
            assert wait_for(lambda: len(results) >= 5, 30)
            os.kill(replicas[0], signal.SIGKILL)
            killed_at = len(results)
            replaced = wait_for(lambda: served.replica_pids() not in ([], replicas), 90)
            back_at = len(results)
            restarted = replaced and wait_for(lambda: sum(s == "ok" for s, _ in results[back_at:]) >= 5, 60)
        finally:
            stop.set()
            thread.join(30)
    assert replaced, served.ray_processes()
    assert restarted, results[killed_at:][-10:]
    failed = [r for r in results if r[0] != "ok"]
    assert all(reason for _, reason in failed)  # every frame that failed says why
    assert all(status in ("ok", "error", "late") for status, _ in results)


def _clip(count):
    from dfl_perf.facepipe.clip import make_clip

    return make_clip(size=(320, 240), frames=count).to_list()


def test_the_pipeline_with_the_remote_swap_gives_the_local_pipelines_frames(served, model_path, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from dfl_perf.facepipe.optimized import OptimizedRunner
    from dfl_perf.facepipe.workload import Workload
    from dfl_perf.remote.runner import RemoteDFM

    frames, workload = _clip(8), Workload(dfm=model_path)
    outputs = {}
    for mode in ("local", "remote"):
        dfm = RemoteDFM.connect(served.url, TOKEN, live=False, cafile=served.cafile) if mode == "remote" else None
        got = outputs[mode] = {}
        try:
            with OptimizedRunner(workload, dfm=dfm, swap_workers=dfm.connections if dfm else 2) as runner:
                runner.run(frames, sink=lambda i, frame, into=got: into.__setitem__(i, frame.copy()))
        finally:
            if dfm is not None:
                dfm.close()
    assert len(outputs["remote"]) == len(frames)
    assert max(int(np.abs(outputs["remote"][i].astype(int) - outputs["local"][i]).max()) for i in range(8)) <= 2
    source, out, summary = str(tmp_path / "clip.avi"), str(tmp_path / "out.avi"), str(tmp_path / "run.json")
    writer = cv2.VideoWriter(source, cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    env = dict(os.environ, DFL_PERF_SERVE_CAFILE=served.cafile or "", DFL_PERF_SERVE_TOKEN=TOKEN)
    done = subprocess.run([sys.executable, "-m", "dfl_perf.cli", "run", "--remote", served.url, "--source", source,
                           "--output", out, "--json", summary, "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(open(summary).read())
    assert report["frames"] == len(frames) and report["failed"] == 0


def test_server_stopped_mid_run_frames_get_errors_and_nothing_is_left(served, model_path):
    """Last in this module: stops the shared server (SIGTERM) while the live pipeline runs on it."""
    from dfl_perf.facepipe.optimized import OptimizedRunner
    from dfl_perf.facepipe.workload import Workload, paced_frames
    from dfl_perf.remote.runner import RemoteDFM

    processes = served.ray_processes()
    assert len(processes) >= 4  # the command, gcs, raylet, workers: the test below must see them go
    stopped = {}

    def stop_server():
        served.proc.send_signal(signal.SIGTERM)
        stopped["code"] = served.proc.wait(60)

    with RemoteDFM.connect(served.url, TOKEN, live=True, cafile=served.cafile) as dfm:
        with OptimizedRunner(Workload(dfm=model_path), live=True, deadline=1.0, dfm=dfm,
                             swap_workers=dfm.connections) as runner:
            timer = threading.Timer(2.0, stop_server)
            timer.start()
            start = time.perf_counter()
            stats = runner.run(paced_frames(_clip(30), 15.0, 8.0))
            elapsed = time.perf_counter() - start
            timer.join(60)
    counts = stats.accounting
    assert elapsed < 20.0  # the source's 8 s and a little: no hang
    assert stopped["code"] == 0, served.log()[-2000:]
    assert stats.frames > 0 and counts["error"] > 0, counts
    assert counts["submitted"] == counts["done"] + counts["dropped"] + counts["late"] + counts["error"]
    assert any("RemoteSwapError" in e for e in stats.errors), stats.errors
    assert wait_for(lambda: not alive(processes), 15), ["%d %s" % (p.pid, p.name()) for p in alive(processes)]
