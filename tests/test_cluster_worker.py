"""dfl_perf.cluster.worker: a range's frames come out as the local runner's, wherever the range starts.

No Ray needed: these run on every stack.
"""

from __future__ import annotations

import glob
import os
import tempfile

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from cluster_media import FPS, SIZE, clip_frames, max_difference, read_frames, write_video  # noqa: E402

from dfl_perf.cluster.plan import FrameRange  # noqa: E402
from dfl_perf.cluster.worker import FrameSwapper, RangeCancelled, RangeReadError, encode_range  # noqa: E402
from dfl_perf.headless import open_writer  # noqa: E402

FRAMES = 12


@pytest.fixture(scope="module")
def dfm(tmp_path_factory):
    from dfl_perf.facepipe.standin import save_dfm_standin

    return save_dfm_standin(tmp_path_factory.mktemp("model") / "standin.dfm", cost="5ms")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "in.avi", clip_frames(FRAMES))


@pytest.fixture(scope="module")
def swapper(dfm):
    from dfl_perf.facepipe.models import model_path

    return FrameSwapper(model_path("yunet_n_320_320").read_bytes(), dfm)  # the embedded detector


@pytest.fixture(scope="module")
def local_frames(video, dfm):
    """What the local runner (``dfl-perf run``'s OptimizedRunner) makes of every frame."""
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload

    out = []
    with OptimizedRunner(Workload(dfm=dfm)) as runner:
        runner.run(read_frames(video), sink=lambda i, frame: out.append(frame.copy()))
    return out


def test_frames_equal_the_local_runners(video, swapper, local_frames):
    frames = [swapper(f) for f in read_frames(video)]
    assert len(frames) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames, local_frames))
    assert np.abs(frames[0].astype(int) - read_frames(video)[0].astype(int)).mean() > 0.5, "no face swapped"


@pytest.mark.parametrize("start, stop", [(0, 5), (5, 12), (7, 9)])
def test_a_range_anywhere_gives_the_local_frames(video, swapper, local_frames, start, stop):
    rng = FrameRange(0, 0, str(video), start, stop, to_end=stop == FRAMES)
    reports = []
    result = encode_range(rng, FPS, SIZE, ".avi", swapper, report=lambda n: reports.append(n) or True)
    assert result.frames == stop - start and result.order == 0 and reports[-1] == stop - start
    folder = tempfile.mkdtemp()
    path, whole = os.path.join(folder, "segment.avi"), os.path.join(folder, "whole.avi")
    with open(path, "wb") as fh:
        fh.write(result.data)
    writer = open_writer(whole, FPS, SIZE)  # the local run's writer, over every frame
    for frame in local_frames:
        writer.write(frame)
    writer.release()
    assert max_difference(read_frames(path), read_frames(whole)[start:stop]) == 0


def test_a_short_range_is_an_error_naming_video_and_frames(tmp_path, video, swapper):
    data = video.read_bytes()
    broken = tmp_path / "cut.avi"
    broken.write_bytes(data[: int(len(data) * 0.6)])  # the header still says 12 frames
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "dfl_perf_range_*")))
    with pytest.raises(RangeReadError, match=r"cut.avi, frames 4-11: only \d of 8 frames|cut.avi, frames 4-11: .*ends at"):
        encode_range(FrameRange(1, 0, str(broken), 4, 12, False), FPS, SIZE, ".avi", swapper)
    with pytest.raises(RangeReadError, match="not there on this worker"):
        encode_range(FrameRange(1, 0, str(tmp_path / "gone.avi"), 0, 4, False), FPS, SIZE, ".avi", swapper)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "dfl_perf_range_*"))) == before, "segment left behind"


def test_cancel_stops_the_range_and_leaves_no_file(video, swapper, monkeypatch):
    import dfl_perf.cluster.worker as worker

    monkeypatch.setattr(worker, "REPORT_EVERY", 0.0)  # report after every frame
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "dfl_perf_range_*")))
    with pytest.raises(RangeCancelled):
        encode_range(FrameRange(0, 0, str(video), 0, FRAMES, True), FPS, SIZE, ".avi", swapper,
                     report=lambda n: n < 3)
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "dfl_perf_range_*"))) == before


def test_segments_of_a_killed_worker_are_removed(tmp_path):
    import subprocess
    import sys

    from dfl_perf.cluster.worker import SEGMENT_DIR_PREFIX, remove_stale_segments

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tempfile.mkdtemp(prefix="%s%s_" % (SEGMENT_DIR_PREFIX, gone.stdout.strip()))
    mine = tempfile.mkdtemp(prefix="%s%d_" % (SEGMENT_DIR_PREFIX, os.getpid()))
    try:
        assert remove_stale_segments() >= 1
        assert not os.path.exists(dead) and os.path.isdir(mine)
    finally:
        os.rmdir(mine)
