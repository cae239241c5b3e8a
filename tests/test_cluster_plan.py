"""dfl_perf.cluster.plan: sources and folders, one output each, frame ranges, clear errors for bad videos.

No Ray needed: these run on every stack.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("cv2")

from dfl_perf.cluster.plan import (  # noqa: E402
    MAX_RANGE_FRAMES,
    MIN_RANGE_FRAMES,
    ClusterJobError,
    VideoPlan,
    default_range_frames,
    expand_sources,
    output_paths,
    probe_video,
    split_ranges,
)

WRITABLE = [".avi", ".mkv", ".mov", ".mp4"]


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_folder_expands_to_its_videos_sorted(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.mp4", "a.AVI", "notes.txt", "c.mkv"):
        _touch(folder / name)
    (folder / "sub.mp4").mkdir()
    single = _touch(tmp_path / "z.mov")
    assert [p.name for p in expand_sources([str(folder), str(single)])] == ["a.AVI", "b.mp4", "c.mkv", "z.mov"]


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "missing.mp4"), "video file not found"),
    (lambda tmp: (tmp / "empty").mkdir() or str(tmp / "empty"), "holds no video"),
])
def test_bad_sources_are_named(tmp_path, make, message):
    with pytest.raises(ClusterJobError, match=message):
        expand_sources([make(tmp_path)])


def test_outputs_one_file_or_a_folder(tmp_path):
    a, b = _touch(tmp_path / "a.avi"), _touch(tmp_path / "b.webm")
    assert output_paths([a], str(tmp_path / "out.mp4"), WRITABLE) == [tmp_path / "out.mp4"]
    assert output_paths([a, b], str(tmp_path / "out"), WRITABLE) == [tmp_path / "out" / "a.avi",
                                                                     tmp_path / "out" / "b.mp4"]
    with pytest.raises(ClusterJobError, match="need --output to be a folder"):
        output_paths([a, b], str(tmp_path / "out.mp4"), WRITABLE)
    other = tmp_path / "x"
    other.mkdir()
    with pytest.raises(ClusterJobError, match="two sources would be written"):
        output_paths([a, _touch(other / "a.avi")], str(tmp_path / "out"), WRITABLE)
    with pytest.raises(ClusterJobError, match="overwrite its source"):
        output_paths([a, b], str(tmp_path), WRITABLE)


def _video(frames: int, index: int = 0, capped: bool = False) -> VideoPlan:
    return VideoPlan(index, "v%d.mp4" % index, "o%d.mp4" % index, frames, 30.0, (64, 64), capped)


@pytest.mark.parametrize("frames, size", [(1, 8), (7, 8), (8, 8), (9, 8), (100, 16), (100, 1000)])
def test_ranges_cover_every_frame_once_in_order(frames, size):
    ranges = split_ranges([_video(frames)], size)
    covered = [i for r in ranges for i in range(r.start, r.stop)]
    assert covered == list(range(frames))
    assert [r.order for r in ranges] == list(range(len(ranges)))
    assert [r.to_end for r in ranges] == [False] * (len(ranges) - 1) + [True]


def test_ranges_of_several_videos_and_a_capped_one():
    ranges = split_ranges([_video(10, 0), _video(5, 1, capped=True)], 4)
    assert [(r.video, r.start, r.stop) for r in ranges] == [(0, 0, 4), (0, 4, 8), (0, 8, 10), (1, 0, 4), (1, 4, 5)]
    assert [r.to_end for r in ranges] == [False, False, True, False, False]  # --max-frames: never past it
    assert ranges[1].describe() == "video v0.mp4, frames 4-7"


def test_default_range_frames_is_bounded():
    assert default_range_frames(10, 2) == MIN_RANGE_FRAMES
    assert default_range_frames(10 ** 7, 2) == MAX_RANGE_FRAMES
    assert default_range_frames(800, 2) == 100  # four ranges per worker


def test_probe_reads_count_rate_size(tmp_path):
    from cluster_media import clip_frames, write_video

    pytest.importorskip("onnxruntime")
    path = write_video(tmp_path / "v.avi", clip_frames(5))
    plan = probe_video(0, path, tmp_path / "o.avi")
    assert (plan.frames, plan.fps, plan.size, plan.capped) == (5, 30.0, (320, 240), False)
    assert probe_video(0, path, tmp_path / "o.avi", max_frames=3).frames == 3


@pytest.mark.parametrize("content, message", [
    (b"", "cannot open video file|no readable frame"),
    (b"this is not a video" * 100, "cannot open video file|no readable frame"),
])
def test_probe_names_a_corrupt_video(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(ClusterJobError, match=message) as info:
        probe_video(0, path, tmp_path / "o.mp4")
    assert str(path) in str(info.value)
