"""dfl_perf.cluster.assemble: segments joined in order into one file (nothing re-encoded), audio carried over,
a partial output removed on abort."""

from __future__ import annotations

import sys

import pytest

if sys.version_info < (3, 10):
    pytest.skip("the [ray] extra (Ray, PyAV) needs Python 3.10+; this is %d.%d" % sys.version_info[:2],
                allow_module_level=True)
av = pytest.importorskip("av")
pytest.importorskip("cv2")

from cluster_media import FPS, clip_frames, max_difference, read_frames, write_video, write_video_with_audio  # noqa: E402

from dfl_perf.cluster.assemble import SegmentJoiner, partial_path  # noqa: E402

FRAMES = 30


@pytest.fixture(scope="module")
def frames():
    return clip_frames(FRAMES)


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v"), (".mkv", "XVID")])
def test_segments_join_in_order(tmp_path, frames, suffix, fourcc):
    cuts = [(0, 8), (8, 16), (16, 29), (29, 30)]
    segments = [write_video(tmp_path / ("s%d%s" % (a, suffix)), frames[a:b], fourcc) for a, b in cuts]
    out = tmp_path / ("out" + suffix)
    joiner = SegmentJoiner(str(out), FPS)
    for path, (a, b) in zip(segments, cuts):
        joiner.add(path.read_bytes(), b - a)
    assert joiner.close() == str(out) and not (tmp_path / partial_path(str(out))).exists()
    joined = read_frames(out)
    decoded = [f for path in segments for f in read_frames(path)]  # packets copied: each segment's own pixels
    assert max_difference(joined, decoded) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.frames in (0, FRAMES)  # 0: the container does not say
        assert abs(float(stream.average_rate or FPS) - FPS) < 0.01


def test_audio_is_carried_over(tmp_path, frames):
    source = write_video_with_audio(tmp_path / "talk.mp4", frames)
    seg = write_video(tmp_path / "seg.mp4", frames, "mp4v")
    out = tmp_path / "out.mp4"
    joiner = SegmentJoiner(str(out), FPS, str(source))
    joiner.add(seg.read_bytes(), FRAMES)
    joiner.close()
    assert joiner.audio_note == "audio carried over (aac)"
    with av.open(str(out)) as container, av.open(str(source)) as original:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
        expected = sum(frame.samples for frame in original.decode(original.streams.audio[0]))
    assert abs(samples - expected) <= 2048, "audio %d samples, the source has %d" % (samples, expected)
    assert len(read_frames(out)) == FRAMES


def test_no_audio_said_and_abort_removes_the_partial_output(tmp_path, frames):
    source = write_video(tmp_path / "silent.avi", frames[:4])
    out = tmp_path / "out.avi"
    joiner = SegmentJoiner(str(out), FPS, str(source))
    assert joiner.audio_note == "the source has no audio"
    joiner.add(source.read_bytes(), 4)
    assert (tmp_path / "out.partial.avi").exists()
    joiner.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["silent.avi"]
