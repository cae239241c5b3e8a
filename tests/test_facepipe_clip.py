"""facepipe.clip: the reproducible test clip and the video/camera source."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.clip import ASTRONAUT_FACE_BOX, make_clip, open_source  # noqa: E402


@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_sizes_and_ground_truth(size):
    clip = make_clip(size=size, frames=120, seed=0)
    assert len(clip) == 120 and clip.boxes.shape == (120, 1, 4)
    frame = clip[0]
    assert frame.shape == (size[1], size[0], 3) and frame.dtype == np.uint8
    b = clip.boxes[:, 0]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= size[0]).all() and (b[:, 3] <= size[1]).all()
    # it really moves, scales and rotates, smoothly
    centres = (b[:, :2] + b[:, 2:]) / 2
    assert np.ptp(centres[:, 0]) > 0.05 * size[0] and np.ptp(clip.scales) > 0.2 and np.ptp(clip.angles) > 10
    steps = np.linalg.norm(np.diff(centres, axis=0, append=centres[:1]), axis=1)  # the last frame wraps
    assert steps.max() < 0.04 * size[0]
    assert make_clip(size=size, frames=30, seed=0).boxes[:30].tolist() == clip.boxes[:30].tolist()


def test_deterministic_and_seeded():
    a, b, c = make_clip(frames=10, seed=4), make_clip(frames=10, seed=4), make_clip(frames=10, seed=5)
    np.testing.assert_array_equal(a[7], b[7])
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a[7], c[7])


def test_face_pixels_follow_the_path(face_photo):
    """The centre pixel of the ground-truth box is the source face's centre pixel."""
    source = cv2.imread(str(face_photo))
    sx = int((ASTRONAUT_FACE_BOX[0] + ASTRONAUT_FACE_BOX[2]) / 2)
    sy = int((ASTRONAUT_FACE_BOX[1] + ASTRONAUT_FACE_BOX[3]) / 2)
    clip = make_clip(frames=12, seed=2)
    for i in (0, 5, 11):
        x, y = ((clip.boxes[i, 0, :2] + clip.boxes[i, 0, 2:]) / 2).round().astype(int)
        patch = clip[i][y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).astype(int)
        assert np.abs(patch - source[sy, sx].astype(int)).sum(axis=1).min() < 40


def test_several_faces_do_not_overlap():
    clip = make_clip(size=(1280, 720), frames=20, faces=4, seed=1)
    assert clip.boxes.shape == (20, 4, 4)
    for boxes in clip.boxes:
        for i in range(4):
            for j in range(i + 1, 4):
                a, b = boxes[i], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_list_cache_and_render_into_buffer():
    clip = make_clip(frames=5)
    frames = clip.to_list()
    assert clip.to_list() is frames and clip[3] is frames[3]
    buf = np.zeros_like(frames[2])
    assert clip.render(2, out=buf) is buf
    np.testing.assert_array_equal(buf, frames[2])
    pairs = list(clip)
    assert len(pairs) == 5 and pairs[1][1].shape == (1, 4)
    with pytest.raises(IndexError):
        clip.render(5)


def test_user_image_and_box(tmp_path):
    rng = np.random.RandomState(0)
    image = rng.randint(0, 255, (200, 300, 3), dtype=np.uint8)
    clip = make_clip(size=(320, 240), frames=4, image=image, face_box=(100, 50, 160, 130))
    assert clip[1].shape == (240, 320, 3)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), image)
    from_file = make_clip(size=(320, 240), frames=4, image=str(path), face_box=(100, 50, 160, 130))
    np.testing.assert_array_equal(from_file[1], clip[1])
    with pytest.raises(FileNotFoundError, match="nope.png"):
        make_clip(image=str(tmp_path / "nope.png"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read face image"):
        make_clip(image=str(tmp_path / "bad.png"))
    with pytest.raises(ValueError, match="face_box"):
        make_clip(image=image, face_box=(10, 10, 5, 20))


def test_user_image_face_found_by_detector(face_photo, monkeypatch):
    monkeypatch.delenv("DFL_PERF_MODEL_MIRROR", raising=False)  # the shipped detector: no mirror needed
    image = cv2.imread(str(face_photo))
    clip = make_clip(frames=3, image=image)  # an array: the face box comes from YuNet
    ref = make_clip(frames=3)
    assert np.abs(clip.boxes - ref.boxes).max() < 12


@pytest.mark.timeout(60)
def test_open_source_reads_a_video(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (320, 240))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    clip = make_clip(size=(320, 240), frames=6)
    for frame in clip.to_list():
        writer.write(frame)
    writer.release()
    frames = list(open_source(str(path)))
    assert len(frames) == 6 and frames[0].shape == (240, 320, 3)
    assert np.abs(frames[3].astype(int) - clip[3].astype(int)).mean() < 10
    assert len(list(open_source(path, loop=True, max_frames=15))) == 15
    assert len(list(open_source(path, max_frames=2))) == 2


def test_open_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        next(open_source(str(tmp_path / "missing.mp4")))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="junk.mp4"):
        next(open_source(str(junk)))
