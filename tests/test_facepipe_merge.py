"""facepipe.merge: feathered mask, inverse warp, blend inside the face's rectangle only."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.align import align_matrix, invert_affine, template_points, transform_points, warp_face  # noqa: E402
from dfl_perf.facepipe.merge import face_rect, feather_mask, merge_face, merge_faces  # noqa: E402

RES = 224


def _frame(seed=0, size=(480, 640)):
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (size[0] // 16, size[1] // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def _matrix(cx=320.0, cy=240.0, scale=0.6, angle=0.2):
    """An alignment matrix for a face centred at (cx, cy)."""
    c, s = np.cos(angle) / scale, np.sin(angle) / scale
    to_frame = np.array([[c, -s, 0], [s, c, 0]])
    pts = transform_points(template_points(RES) - RES / 2, to_frame) + [cx, cy]
    return align_matrix(pts, RES)


def test_feather_mask_shape_range_and_border():
    m = feather_mask(np.ones((RES, RES, 1), np.float32))
    assert m.shape == (RES, RES) and m.dtype == np.float32
    assert m.min() >= 0 and m.max() <= 1
    assert m[0].max() < 0.05 and m[:, -1].max() < 0.05  # faded to the crop border
    assert m[RES // 2, RES // 2] == pytest.approx(1.0)
    square = np.zeros((100, 100), np.float32)
    square[40:60, 40:60] = 1
    eroded = feather_mask(square, erode=5, blur=0)
    assert eroded[45:55, 45:55].min() == 1 and eroded[40:45].max() == 0 and eroded[:, 55:].max() == 0
    np.testing.assert_allclose(feather_mask((square * 255).astype(np.uint8), 5, 0), eroded)


def test_zero_mask_leaves_the_frame_exactly():
    frame = _frame()
    celeb = np.zeros((RES, RES, 3), np.float32)
    celeb[..., 2] = 1.0
    out = merge_face(frame, celeb, np.zeros((RES, RES, 1), np.float32), _matrix())
    assert out is not frame
    np.testing.assert_array_equal(out, frame)


def test_face_lands_inside_its_rect_only():
    frame = _frame(1)
    M = _matrix(300, 200)
    celeb = np.zeros((RES, RES, 3), np.float32)
    celeb[..., 2] = 1.0  # pure red in BGR
    out = merge_face(frame, celeb, np.ones((RES, RES), np.float32), M)
    x0, y0, x1, y1 = face_rect(M, RES, frame.shape)
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out[outside], frame[outside])
    cx, cy = transform_points([[RES / 2, RES / 2]], invert_affine(M))[0].astype(int)
    assert out[cy, cx].tolist() == [0, 0, 255]
    assert (out[y0:y1, x0:x1] != frame[y0:y1, x0:x1]).any()


def test_round_trip_restores_the_face():
    frame = _frame(2)
    M = _matrix(330, 250, scale=0.8)
    celeb = warp_face(frame, M, RES).astype(np.float32) / 255.0
    out = merge_face(frame, celeb, np.ones((RES, RES, 1), np.float32), M, erode=0, blur=0)
    x0, y0, x1, y1 = face_rect(M, RES, frame.shape)
    diff = np.abs(out[y0:y1, x0:x1].astype(int) - frame[y0:y1, x0:x1].astype(int))
    assert diff.mean() < 2.0, diff.mean()


def test_out_buffer_in_place_and_uint8_celeb_agree():
    frame = _frame(3)
    M = _matrix()
    rng = np.random.RandomState(0)
    celeb = rng.rand(RES, RES, 3).astype(np.float32)
    mask = rng.rand(RES, RES, 1).astype(np.float32)
    fresh = merge_face(frame, celeb, mask, M)
    buf = np.zeros_like(frame)
    assert merge_face(frame, celeb, mask, M, out=buf) is buf
    np.testing.assert_array_equal(buf, fresh)
    inplace = frame.copy()
    assert merge_face(inplace, celeb, mask, M, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, fresh)
    np.testing.assert_array_equal(merge_face(frame, cv2.convertScaleAbs(celeb, alpha=255.0), mask, M), fresh)


def test_merge_faces_equals_one_after_another():
    frame = _frame(4, (720, 1280))
    mats = [_matrix(300, 300), _matrix(900, 400, angle=-0.3)]
    rng = np.random.RandomState(5)
    celebs = [rng.rand(RES, RES, 3).astype(np.float32) for _ in mats]
    masks = [np.ones((RES, RES, 1), np.float32) for _ in mats]
    both = merge_faces(frame, celebs, masks, mats)
    step = merge_face(merge_face(frame, celebs[0], masks[0], mats[0]), celebs[1], masks[1], mats[1])
    np.testing.assert_array_equal(both, step)
    with pytest.raises(ValueError, match="as many"):
        merge_faces(frame, celebs, masks[:1], mats)


def test_face_outside_the_frame_changes_nothing():
    frame = _frame(5)
    M = _matrix(-2000, -2000)
    assert face_rect(M, RES, frame.shape) is None
    out = merge_face(frame, np.ones((RES, RES, 3), np.float32), np.ones((RES, RES), np.float32), M)
    np.testing.assert_array_equal(out, frame)


def test_bad_arguments():
    frame = _frame()
    M = _matrix()
    good_celeb, good_mask = np.ones((RES, RES, 3), np.float32), np.ones((RES, RES), np.float32)
    with pytest.raises(ValueError, match="frame must be"):
        merge_face(frame.astype(np.float32), good_celeb, good_mask, M)
    with pytest.raises(ValueError, match="celeb must be"):
        merge_face(frame, np.ones((RES, RES, 4), np.float32), good_mask, M)
    with pytest.raises(ValueError, match="mask must be"):
        merge_face(frame, good_celeb, np.ones((100, 100), np.float32), M)
    with pytest.raises(ValueError, match="out must be"):
        merge_face(frame, good_celeb, good_mask, M, out=np.zeros((10, 10, 3), np.uint8))


def test_matches_a_full_frame_blend():
    """Blending only under the mask's bounding box equals the same blend done over the whole frame."""
    frame = _frame(6)
    M = _matrix(350, 220, angle=0.4)
    # a smooth face: the warp's fixed-point coordinates (1/32 px) differ between a rectangle and the
    # whole frame, which moves sharp noise by several levels but a smooth image by at most one
    celeb = cv2.resize(np.random.RandomState(2).rand(8, 8, 3).astype(np.float32), (RES, RES))
    mask = np.zeros((RES, RES), np.float32)
    mask[90:150, 70:130] = 1.0  # a small mask: the tight rectangle is much smaller than the crop's
    ours = merge_face(frame, celeb, mask, M)
    h, w = frame.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face = cv2.warpAffine(cv2.convertScaleAbs(celeb, alpha=255.0), M, (w, h), flags=flags)
    alpha = cv2.warpAffine(feather_mask(mask), M, (w, h), flags=flags)
    reference = cv2.blendLinear(face, frame, alpha, 1.0 - alpha)
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1
    changed = alpha > 0
    np.testing.assert_array_equal(ours[~changed], frame[~changed])
    assert changed.sum() > 1000
