"""facepipe.align: similarity transform, template, warp and its inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.align import (  # noqa: E402
    TEMPLATE_5PT,
    align_matrix,
    invert_affine,
    similarity_transform,
    template_points,
    transform_points,
    warp_face,
)


def _similarity(scale, angle, tx, ty):
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(0.2, 5.0), angle=st.floats(-math.pi, math.pi), tx=st.floats(-500, 500), ty=st.floats(-500, 500))
def test_recovers_a_known_similarity(scale, angle, tx, ty):
    M = _similarity(scale, angle, tx, ty)
    src = TEMPLATE_5PT * 3.0 + 17.0
    np.testing.assert_allclose(similarity_transform(src, transform_points(src, M)), M, atol=1e-6 * max(1.0, abs(tx) + abs(ty)))


def test_least_squares_with_noise_and_no_reflection():
    rng = np.random.RandomState(0)
    M = _similarity(1.7, 0.3, 40, -10)
    src = TEMPLATE_5PT
    dst = transform_points(src, M) + rng.normal(0, 0.5, size=src.shape)
    est = similarity_transform(src, dst)
    assert np.abs(est[:, :2] - M[:, :2]).max() < 0.05
    sse = lambda A: ((transform_points(src, A) - dst) ** 2).sum()  # noqa: E731
    assert sse(est) <= sse(M)  # least squares: no similarity fits better, the true one included
    for angle in (0.01, -0.01):  # nor a slightly turned one
        turned = _similarity(1.0, angle, 0, 0)[:, :2] @ est
        assert sse(est) <= sse(turned)
    mirrored = src * [-1, 1]
    est = similarity_transform(src, mirrored)  # best fit without a reflection
    assert np.linalg.det(est[:, :2]) > 0


def test_invert_affine_and_transform_points():
    M = _similarity(2.5, -0.7, 100, 30)
    M[0, 1] += 0.2  # a general affine, not only a similarity
    pts = np.array([[0, 0], [10, 5], [-3, 7.5]])
    back = transform_points(transform_points(pts, M), invert_affine(M))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    np.testing.assert_allclose(invert_affine(M), cv2.invertAffineTransform(M), atol=1e-12)


def test_template_scales_with_coverage_and_is_cached():
    a, b = template_points(224, 2.2), template_points(224, 4.4)
    assert a is template_points(224, 2.2) and not a.flags.writeable
    np.testing.assert_allclose(a.mean(axis=0), [112, 112])
    spread = lambda p: np.linalg.norm(p - p.mean(axis=0), axis=1).mean()  # noqa: E731
    assert spread(a) == pytest.approx(2 * spread(b))
    assert spread(template_points(320, 2.2)) == pytest.approx(spread(a) * 320 / 224)
    with pytest.raises(ValueError):
        template_points(224, 0)


@pytest.mark.parametrize("resolution", [224, 320])
def test_align_puts_keypoints_on_the_template(resolution):
    M0 = _similarity(0.8, 0.25, 300, 120)
    keypoints = transform_points(template_points(resolution), invert_affine(M0))
    M = align_matrix(keypoints, resolution)
    np.testing.assert_allclose(transform_points(keypoints, M), template_points(resolution), atol=1e-6)


def test_warp_round_trip_on_a_real_face(face_photo, yunet_n):
    from dfl_perf.facepipe.detector import FaceDetector

    frame = cv2.imread(str(face_photo))
    face = FaceDetector(str(yunet_n)).detect(frame)[0]
    M = align_matrix(face.keypoints, 224)
    crop = warp_face(frame, M, 224)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    # the detected keypoints land within a few pixels of the template
    assert np.abs(transform_points(face.keypoints, M) - template_points(224)).max() < 6
    back = cv2.warpAffine(crop, invert_affine(M), (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)
    x1, y1, x2, y2 = (int(v) for v in face.box)
    diff = np.abs(back[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2].astype(int))
    assert diff.mean() < 6.0, diff.mean()


def test_warp_into_buffer_is_identical_and_checked():
    rng = np.random.RandomState(1)
    frame = rng.randint(0, 255, (480, 640, 3), dtype=np.uint8)
    M = align_matrix(np.array([[300, 200], [350, 200], [325, 230], [305, 260], [345, 260]], float), 224)
    buf = np.full((224, 224, 3), 9, np.uint8)
    out = warp_face(frame, M, 224, out=buf)
    assert out is buf
    np.testing.assert_array_equal(buf, warp_face(frame, M, 224))
    with pytest.raises(ValueError, match="contiguous"):
        warp_face(frame, M, 224, out=np.zeros((224, 224, 3), np.float32))


def test_bad_points():
    with pytest.raises(ValueError, match="same N"):
        similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="same point"):
        similarity_transform(np.ones((5, 2)), np.zeros((5, 2)))
