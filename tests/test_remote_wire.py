"""dfl_perf.remote.wire: the request/reply format and its error messages (both Pythons, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_perf.remote.wire import (
    MAX_FACES,
    SwapReply,
    WireError,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    quantise,
    request_limit,
)


def _faces(n=2, res=32, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, res, res, 3), dtype=np.uint8)


def _smooth_faces(n=2, res=64):
    """Image-like faces (smooth gradients) for the lossy codec."""
    y, x = np.mgrid[0:res, 0:res].astype(np.float32) / res
    face = np.stack([x * 200 + 20, y * 180 + 30, (x + y) * 90 + 10], axis=-1).astype(np.uint8)
    return np.stack([face] * n)


def test_raw_request_round_trip_is_exact():
    faces = _faces()
    headers, body = encode_request(faces, morph=0.5)
    assert len(body) == faces.size
    request = decode_request(headers, body, 32)
    assert np.array_equal(request.faces, faces)
    assert request.morph == 0.5 and request.codec == "raw"


def test_headers_are_read_case_insensitively_as_servers_hand_them():
    faces = _faces(1)
    headers, body = encode_request(faces)
    lower = {k.lower(): v for k, v in headers.items()}
    assert np.array_equal(decode_request(lower, body, 32).faces, faces)


def test_jpeg_request_round_trip_is_close():
    pytest.importorskip("cv2")
    faces = _smooth_faces()
    headers, body = encode_request(faces, codec="jpeg")
    assert len(body) < faces.size / 4
    got = decode_request(headers, body, 64).faces
    assert got.shape == faces.shape
    assert np.abs(got.astype(int) - faces).mean() < 3


@pytest.mark.parametrize("codec", ["raw", "jpeg"])
def test_reply_round_trip(codec):
    if codec == "jpeg":
        pytest.importorskip("cv2")
    faces = _smooth_faces(3)
    reply = SwapReply(faces, faces[..., 0].copy(), faces[..., 1].copy())
    headers, body = encode_reply(reply, codec)
    got = decode_reply(headers, body, 3, 64)
    tolerance = 0 if codec == "raw" else 3
    for a, b in zip(got, reply):
        assert a.shape == b.shape and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() <= tolerance


@pytest.mark.parametrize("change, message", [
    (lambda h, b: (dict(h, **{"X-Dtype": "float32"}), b), "wrong dtype 'float32'"),
    (lambda h, b: (dict(h, **{"X-Resolution": "48"}), b), "wrong size: faces are 48x48, this model takes 32x32"),
    (lambda h, b: (h, b[:-10]), "truncated body: got 6134 bytes, expected 6144"),
    (lambda h, b: (h, b + b"extra"), "oversized body: got 6149 bytes, expected 6144"),
    (lambda h, b: (dict(h, **{"X-Faces": "0"}), b), "X-Faces must be within 1..%d" % MAX_FACES),
    (lambda h, b: (dict(h, **{"X-Faces": "two"}), b), "X-Faces must be an integer"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-Faces"}, b), "missing header X-Faces"),
    (lambda h, b: (dict(h, **{"X-Morph": "1.5"}), b), "X-Morph must be within 0..1"),
    (lambda h, b: (dict(h, **{"X-Codec": "png"}), b), "X-Codec must be one of raw, jpeg"),
])
def test_bad_requests_name_the_problem(change, message):
    headers, body = change(*encode_request(_faces()))
    with pytest.raises(WireError) as info:
        decode_request(headers, body, 32)
    assert message in str(info.value)


def test_bad_jpeg_names_the_face():
    pytest.importorskip("cv2")
    headers, body = encode_request(_smooth_faces(2, 32), codec="jpeg")
    first = int(headers["X-Parts"].split(",")[0])
    broken = body[:first] + b"\0" * (len(body) - first)
    with pytest.raises(WireError, match="face 1: not a decodable JPEG"):
        decode_request(headers, broken, 32)
    with pytest.raises(WireError, match="truncated body: got"):
        decode_request(headers, body[:-5], 32)


def test_quantise_matches_the_pipelines_convert_scale_abs():
    cv2 = pytest.importorskip("cv2")
    x = np.random.RandomState(3).rand(4, 16, 16, 3).astype(np.float32)
    x[0, 0, 0] = [0.0, 1.0, 0.5 / 255]  # the edges and a tie
    ours = quantise(x, np.empty(x.shape, np.uint8))
    theirs = np.stack([cv2.convertScaleAbs(face, alpha=255.0) for face in x])
    assert np.array_equal(ours, theirs)


def test_request_limit_allows_the_most_faces_and_no_more():
    assert request_limit(224) == MAX_FACES * 224 * 224 * 3
