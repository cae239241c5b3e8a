"""The remote swap as the reference pipeline's swap step (``OptimizedRunner(dfm=RemoteDFM)``, ``dfl-perf
run --remote``), against the real SwapService on a loopback server (no Ray; both Pythons).

tests/test_serve_ray.py runs the same pipeline against a real Ray Serve.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.clip import make_clip  # noqa: E402
from dfl_perf.facepipe.optimized import OptimizedRunner  # noqa: E402
from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.facepipe.workload import Workload, paced_frames  # noqa: E402
from dfl_perf.headless import HeadlessError, HeadlessOptions, run_headless  # noqa: E402
from dfl_perf.remote import RemoteSwapError, RemoteSwapper  # noqa: E402
from dfl_perf.remote.runner import RemoteDFM  # noqa: E402
from dfl_perf.serve.model import SwapModel  # noqa: E402
from tests.serve_harness import LoopbackServer  # noqa: E402


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("m") / "celeb.dfm", resolution=224, cost="5ms", seed=5)


@pytest.fixture(scope="module")
def model(model_path):
    swap_model = SwapModel(model_path, "cpu", threads=1)
    yield swap_model
    swap_model.close()


@pytest.fixture(scope="module")
def frames():
    return make_clip(size=(320, 240), frames=12).to_list()


@pytest.fixture
def server(model):
    with LoopbackServer(model) as running:
        yield running


def _outputs(workload, frames, dfm=None, swap_workers=None):
    out = {}
    with OptimizedRunner(workload, live=False, dfm=dfm, swap_workers=swap_workers) as runner:
        stats = runner.run(frames, sink=lambda i, frame: out.__setitem__(i, frame.copy()))
    return [out[i] for i in range(len(frames))], stats


def test_remote_swap_step_gives_the_local_pipelines_frames(server, model_path, frames):
    workload = Workload(dfm=model_path)
    local, _ = _outputs(workload, frames, swap_workers=2)
    with RemoteDFM(RemoteSwapper(server.url)) as dfm:
        assert dfm.resolution == 224 and dfm.connections == 4
        remote, stats = _outputs(workload, frames, dfm=dfm, swap_workers=dfm.connections)
    assert stats.frames == len(frames) and stats.not_done == 0
    worst = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(remote, local))
    assert worst <= 2, "remote frames differ from local ones by %d levels" % worst


def test_live_run_with_the_server_stopped_mid_run_gives_errors_and_finishes(server, model_path, frames):
    workload = Workload(dfm=model_path)
    with RemoteDFM(RemoteSwapper(server.url, timeout=0.5, retry_interval=0.2)) as dfm:
        with OptimizedRunner(workload, live=True, deadline=1.0, dfm=dfm, swap_workers=dfm.connections) as runner:
            threading.Timer(1.0, server.stop).start()
            start = time.perf_counter()
            stats = runner.run(paced_frames(frames, 15.0, 3.0))
            elapsed = time.perf_counter() - start
    counts = stats.accounting
    assert elapsed < 6.0  # no hang: the source's 3 s and a little
    assert stats.frames > 0 and counts["error"] > 0
    assert counts["submitted"] == counts["done"] + counts["dropped"] + counts["late"] + counts["error"]
    assert any("RemoteSwapError" in e and "127.0.0.1" in e for e in stats.errors), stats.errors


def test_files_wait_for_a_server_that_comes_back(server, model_path, frames):
    workload = Workload(dfm=model_path)
    with RemoteDFM(RemoteSwapper(server.url, timeout=0.5, retry_interval=0.1), patience=10.0) as dfm:
        server.stop()
        threading.Timer(1.0, server.start).start()
        remote, stats = _outputs(workload, frames[:4], dfm=dfm, swap_workers=1)
        assert dfm.retries > 0
    assert stats.frames == 4 and stats.not_done == 0


def test_files_stop_with_the_reason_when_the_server_stays_away(server, model_path, frames):
    workload = Workload(dfm=model_path)
    with RemoteDFM(RemoteSwapper(server.url, timeout=0.5, retry_interval=0.1), patience=0.5) as dfm:
        server.stop()
        with pytest.raises(RuntimeError, match=r"failed in stage swap: RemoteSwapError.*retried for 0 s|retried"):
            _outputs(workload, frames[:3], dfm=dfm, swap_workers=1)


def test_a_4xx_is_not_retried(model):
    with LoopbackServer(model, token="tok") as locked:
        swapper = RemoteSwapper(locked.url, token="tok")
        with RemoteDFM(swapper, patience=30.0) as dfm:
            swapper.token = "stale"  # the server's token changed under a running job
            start = time.perf_counter()
            with pytest.raises(RemoteSwapError, match="HTTP 401"):
                dfm.run(np.zeros((1, 224, 224, 3), np.uint8))
            assert time.perf_counter() - start < 5 and dfm.retries == 0


def _clip_file(tmp_path, frames):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (320, 240))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_dfl_perf_run_remote_on_a_file(server, frames, tmp_path):
    options = HeadlessOptions(model=None, source=_clip_file(tmp_path, frames), output=str(tmp_path / "out.avi"),
                              progress=False, remote=server.url)
    summary = run_headless(options)
    assert summary["frames"] == len(frames) and summary["failed"] == 0
    assert summary["accounting"]["done"] == len(frames)
    assert cv2.VideoCapture(options.output).get(cv2.CAP_PROP_FRAME_COUNT) == len(frames)


def test_dfl_perf_run_remote_errors_in_words(model_path, frames, tmp_path):
    source = _clip_file(tmp_path, frames[:2])
    both = HeadlessOptions(model=model_path, source=source, output=str(tmp_path / "o.avi"), remote="http://127.0.0.1:9")
    with pytest.raises(HeadlessError, match="give --model or --remote, not both"):
        run_headless(both)
    down = HeadlessOptions(model=None, source=source, output=str(tmp_path / "o.avi"), remote="http://127.0.0.1:9")
    with pytest.raises(HeadlessError, match="remote swap server http://127.0.0.1:9: cannot connect"):
        run_headless(down)
