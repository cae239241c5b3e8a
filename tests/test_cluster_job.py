"""``dfl-perf run --ray`` on real Ray (no mocks): a local Ray it starts, and a simulated two-node cluster
(``ray.cluster_utils.Cluster``, 1 CPU per node). Output equal to a local ``dfl-perf run``, several sources
and a folder, audio, a worker killed mid-job, a range that keeps failing, Ctrl-C, and the errors.

Ray runs in a private temp dir (RAY_TMPDIR) so no other Ray on this machine is seen or touched.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest

if sys.version_info < (3, 10):
    pytest.skip("Ray needs Python 3.10+ (the [ray] extra installs it there); this is %d.%d" % sys.version_info[:2],
                allow_module_level=True)
import ray  # noqa: E402  (no skip on 3.10+: the test extra installs Ray there, and a missing one must fail)

pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from cluster_media import clip_frames, max_difference, read_frames, write_video, write_video_with_audio  # noqa: E402

from dfl_perf.cli import main  # noqa: E402
from dfl_perf.cluster.command import RayRunOptions, run_on_ray  # noqa: E402
from dfl_perf.cluster.plan import ClusterJobError  # noqa: E402
from dfl_perf.headless import HeadlessOptions, run_headless  # noqa: E402

FRAMES = 24
LONG = 120  # two ranges of 60: each worker busy for a second or more, long enough to be killed mid-range
STORE = 80 * 2 ** 20


def _segment_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "dfl_perf_range_*")))


@pytest.fixture(scope="module")
def ray_tmp():
    """A short private RAY_TMPDIR (socket paths must stay short), removed afterwards."""
    folder = tempfile.mkdtemp(prefix="dflray", dir="/tmp")
    old = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    yield folder
    if old is None:
        os.environ.pop("RAY_TMPDIR", None)
    else:
        os.environ["RAY_TMPDIR"] = old
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(ray_tmp):
    """A simulated two-node cluster, 1 CPU each; jobs join it by address and leave it after."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=STORE)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def client_address(two_nodes):
    """Ray Client's proxy in front of the two-node cluster (what ``ray start --head`` runs on port 10001)."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ray.util.client.server", "--address", two_nodes.address,
                               "--host", "127.0.0.1", "--port", str(port), "--mode", "proxy"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline and server.poll() is None, "Ray Client server did not start"
            time.sleep(0.1)
    yield "ray://127.0.0.1:%d" % port
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    from dfl_perf.facepipe.standin import save_dfm_standin

    return {"dfm": save_dfm_standin(folder / "standin.dfm", cost="5ms"),
            "a": write_video(folder / "a.avi", clip_frames(FRAMES, seed=0)),
            "b": write_video(folder / "b.avi", clip_frames(FRAMES // 2, seed=1)),
            "long": write_video(folder / "long.avi", clip_frames(LONG, seed=3)),
            "talk": write_video_with_audio(folder / "talk.mp4", clip_frames(FRAMES, seed=2)),
            "folder": folder}


@pytest.fixture(scope="module")
def local_outputs(media, tmp_path_factory):
    """A local ``dfl-perf run`` of each test video."""
    folder = tmp_path_factory.mktemp("local")
    outputs = {}
    for name in ("a", "b", "long"):
        out = folder / ("%s.avi" % name)
        run_headless(HeadlessOptions(model=media["dfm"], source=str(media[name]), output=str(out), progress=False))
        outputs[name] = read_frames(out)
    return outputs


def _options(media, cluster, **kw):
    base = dict(model=media["dfm"], sources=[str(media["a"])], output="", address=cluster and cluster.address,
                range_frames=8, progress=False)
    base.update(kw)
    return RayRunOptions(**base)


@pytest.mark.timeout(240)
def test_local_ray_gives_the_local_runs_frames(media, local_outputs, tmp_path, ray_tmp):
    out = tmp_path / "a.avi"
    summary = run_on_ray(RayRunOptions(model=media["dfm"], sources=[str(media["a"])], output=str(out),
                                       range_frames=7, local_cpus=2, object_store_mb=100, progress=False))
    assert not ray.is_initialized(), "the job must shut down the Ray it started"
    assert summary["frames"] == FRAMES and summary["ranges"] == 4 and len(summary["workers"]) == 2
    assert summary["peak_ranges_held"] <= 3 * 2  # back-pressure: (DEPTH + 1) ranges per worker at most
    assert max_difference(read_frames(out), local_outputs["a"]) <= 2
    assert summary["startup_seconds"] > 0 and len(summary["range_seconds"]) == 4


@pytest.mark.timeout(240)
def test_two_nodes_several_sources_a_folder_and_audio(media, local_outputs, two_nodes, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(str(media["a"]), str(folder / "a.avi"))
    shutil.copy(str(media["talk"]), str(folder / "talk.mp4"))
    out = tmp_path / "out"
    code = main(["run", "--ray", two_nodes.address, "--model", media["dfm"], "--source", str(folder),
                 "--source", str(media["b"]), "--output", str(out), "--range-frames", "8", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "2 workers on 2 nodes" in printed and "frames %d" % (FRAMES * 2 + FRAMES // 2) in printed
    assert sorted(p.name for p in out.iterdir()) == ["a.avi", "b.avi", "talk.mp4"]
    assert max_difference(read_frames(out / "a.avi"), local_outputs["a"]) <= 2
    assert max_difference(read_frames(out / "b.avi"), local_outputs["b"]) <= 2
    talk = read_frames(out / "talk.mp4")
    assert len(talk) == FRAMES
    assert "audio carried over (aac)" in printed
    import av

    with av.open(str(out / "talk.mp4")) as container:
        assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"


@pytest.mark.timeout(240)
def test_a_worker_killed_mid_job_the_job_still_completes(media, local_outputs, two_nodes, tmp_path):
    killed = []

    def kill_one(status):
        if not killed and status.frames_done > 0:
            pid = status.workers[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    out = tmp_path / "long.avi"
    before = _segment_dirs()
    summary = run_on_ray(_options(media, two_nodes, sources=[str(media["long"])], output=str(out),
                                  range_frames=LONG // 2, on_status=kill_one))
    assert killed, "no worker was killed: the job ended before the first progress report"
    assert _segment_dirs() <= before, "the killed worker's segment was left (its restart removes it)"
    assert summary["frames"] == LONG and summary["retried"] >= 1, summary
    assert max_difference(read_frames(out), local_outputs["long"]) <= 2


@pytest.mark.timeout(240)
def test_a_range_that_fails_again_fails_the_job_naming_it(media, two_nodes, tmp_path):
    data = media["a"].read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.6)])  # the header still says 24 frames; the rest is gone
    out = tmp_path / "out.avi"
    with pytest.raises(ClusterJobError, match=r"video .*cut\.avi, frames \d+-\d+ failed 2 times") as info:
        run_on_ray(_options(media, two_nodes, sources=[str(cut)], output=str(out), retries=1))
    assert "decoded" in str(info.value) or "ends at frame" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.avi"], "a partial output was left"


@pytest.mark.timeout(240)
def test_ctrl_c_cancels_and_removes_partial_outputs(media, two_nodes, tmp_path):
    def interrupt(status):
        if status.frames_done > 0:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does to the driver

    out = tmp_path / "out"
    before = _segment_dirs()
    with pytest.raises(KeyboardInterrupt):
        run_on_ray(_options(media, two_nodes, sources=[str(media["a"]), str(media["b"])], output=str(out),
                            range_frames=4, on_status=interrupt))
    assert list(out.iterdir()) == [], "partial outputs were left: %s" % list(out.iterdir())
    assert _segment_dirs() <= before, "a worker's partial segment was left"
    assert not ray.is_initialized()


def test_bad_address_and_unreadable_video_are_said(media, tmp_path, ray_tmp):
    with pytest.raises(ClusterJobError, match="cannot reach Ray at 127.0.0.1:9"):
        run_on_ray(RayRunOptions(model=media["dfm"], sources=[str(media["a"])], output=str(tmp_path / "o.avi"),
                                 address="127.0.0.1:9"))
    with pytest.raises(ClusterJobError, match="bad Ray address 'nowhere'"):
        run_on_ray(RayRunOptions(model=media["dfm"], sources=[str(media["a"])], output=str(tmp_path / "o.avi"),
                                 address="nowhere"))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(ClusterJobError, match="cannot open video file .*corrupt.mp4"):
        run_on_ray(RayRunOptions(model=media["dfm"], sources=[str(corrupt)], output=str(tmp_path / "o.mp4")))


@pytest.mark.timeout(240)
def test_ray_client_address(media, local_outputs, client_address, tmp_path):
    out = tmp_path / "a.avi"
    statuses = []
    summary = run_on_ray(_options(media, None, address=client_address, output=str(out), on_status=statuses.append))
    assert summary["frames"] == FRAMES and summary["nodes"] == 2
    assert max_difference(read_frames(out), local_outputs["a"]) <= 2
    done = [s.frames_done for s in statuses]
    assert done == sorted(done) and all(s.frames_total == FRAMES and s.fps >= 0 for s in statuses)
    cut = tmp_path / "cut.avi"
    data = media["a"].read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ClusterJobError, match=r"cut\.avi, frames \d+-\d+ failed 2 times"):
        run_on_ray(_options(media, None, address=client_address, sources=[str(cut)], output=str(tmp_path / "c.avi"),
                            retries=1))
