"""The remote swap's wire format, shared by the client (``dfl_perf.remote``) and the server
(``dfl_perf.serve``). Standard library and numpy only (OpenCV for the ``jpeg`` codec), Python 3.8.

One HTTP exchange per group of faces (the faces of one frame)::

    POST /swap                       GET /info  -> JSON: model, resolution, morph, batching, codecs
    Authorization: Bearer TOKEN      (every path needs the token when the server has one)
    X-Codec: raw | jpeg
    X-Faces: N
    X-Resolution: R
    X-Dtype: uint8
    X-Morph: 0.75                    (AMP models; optional)
    X-Parts: l1,l2,...               (jpeg: the byte length of each face's JPEG)
    body: N aligned BGR faces, R x R x 3 uint8 (raw: N*R*R*3 bytes; jpeg: N JPEGs back to back)

    200, X-Codec, X-Faces, X-Resolution, X-Parts (jpeg: celeb, celeb mask, face mask)
    body: celeb faces (N,R,R,3) then celeb masks (N,R,R) then face masks (N,R,R), uint8
          (raw: N*R*R*5 bytes; jpeg: three JPEGs, each the N faces stacked vertically)

Errors are plain text naming the problem: 400 (the request), 401 (the token), 404/405, 5xx.
Outputs are quantised to uint8 as the reference pipeline quantises the swapped face (x*255 rounded
to nearest, saturated): the celeb face arrives exactly as the pipeline would have made it, the
masks within half a level.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "WireError", "SwapRequest", "SwapReply", "CODECS", "PROTOCOL", "MAX_FACES", "MAX_RESOLUTION",
    "encode_request", "decode_request", "encode_reply", "decode_reply", "request_limit", "quantise",
]

PROTOCOL = "dfl-perf-swap/1"
CODECS = ("raw", "jpeg")
MAX_FACES = 16  # faces in one request (one frame's faces)
MAX_RESOLUTION = 1024
JPEG_QUALITY = 90
_SCALE = np.float32(255.0)


class WireError(ValueError):
    """A request or reply that does not follow the wire format; the message names the problem."""


class SwapRequest(NamedTuple):
    faces: np.ndarray  # (N, R, R, 3) uint8 BGR
    morph: Optional[float]
    codec: str


class SwapReply(NamedTuple):
    """The three DFM outputs as uint8 (x * 255, rounded): DFL's ``convert`` order."""

    celeb: np.ndarray  # (N, R, R, 3) BGR
    celeb_mask: np.ndarray  # (N, R, R)
    face_mask: np.ndarray  # (N, R, R)


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _int_header(headers: Mapping[str, str], name: str, low: int, high: int) -> int:
    text = _header(headers, name)
    if text is None:
        raise WireError("missing header %s" % name)
    try:
        value = int(text)
    except ValueError:
        raise WireError("header %s must be an integer, got %r" % (name, text[:40])) from None
    if not low <= value <= high:
        raise WireError("header %s must be within %d..%d, got %d" % (name, low, high, value))
    return value


def _parts_header(headers: Mapping[str, str], count: int) -> List[int]:
    text = _header(headers, "X-Parts")
    if text is None:
        raise WireError("missing header X-Parts (the byte length of each JPEG)")
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise WireError("header X-Parts must be comma-separated integers, got %r" % text[:80]) from None
    if len(parts) != count or any(p < 1 for p in parts):
        raise WireError("header X-Parts must give %d positive lengths, got %r" % (count, text[:80]))
    return parts


def request_limit(resolution: int, codec: str = "raw") -> int:
    """The largest body a server accepts for one request at ``resolution`` (MAX_FACES raw faces)."""
    return MAX_FACES * resolution * resolution * 3 + (4096 if codec == "jpeg" else 0)


def quantise(x: np.ndarray, out: np.ndarray, scratch: Optional[np.ndarray] = None) -> np.ndarray:
    """float 0..1 -> uint8 ``x * 255`` rounded to nearest (half to even) and saturated, into ``out``.

    The same as ``cv2.convertScaleAbs(x, alpha=255)`` for values in 0..1 (the reference pipeline's).
    """
    if scratch is None:
        scratch = np.empty(x.shape, np.float32)
    np.multiply(x, _SCALE, out=scratch)
    np.rint(scratch, out=scratch)
    np.clip(scratch, 0, 255, out=scratch)
    np.copyto(out, scratch, casting="unsafe")
    return out


# ------------------------------------------------------------------------------------- codecs

def _cv2():
    try:
        import cv2
    except ImportError:
        raise WireError("the jpeg codec needs OpenCV (pip install opencv-python-headless); "
                        "use codec 'raw' without it") from None
    return cv2


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = _cv2().imencode(".jpg", image, [_cv2().IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise WireError("OpenCV could not encode a JPEG of shape %s" % (image.shape,))
    return data.tobytes()


def _unjpeg(data: memoryview, shape: Tuple[int, ...], what: str) -> np.ndarray:
    cv2 = _cv2()
    flag = cv2.IMREAD_COLOR if len(shape) == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise WireError("%s: not a decodable JPEG (%d bytes)" % (what, len(data)))
    if image.shape != shape:
        raise WireError("%s: JPEG is %s, expected %s" % (what, "x".join(map(str, image.shape)),
                                                          "x".join(map(str, shape))))
    return image


def _split(body: memoryview, parts: Sequence[int], what: str) -> List[memoryview]:
    total = sum(parts)
    if len(body) != total:
        problem = "truncated" if len(body) < total else "oversized"
        raise WireError("%s %s: got %d bytes, X-Parts adds up to %d" % (problem, what, len(body), total))
    pieces, start = [], 0
    for size in parts:
        pieces.append(body[start:start + size])
        start += size
    return pieces


# ------------------------------------------------------------------------------------- request

def encode_request(faces: np.ndarray, morph: Optional[float] = None, codec: str = "raw",
                   quality: int = JPEG_QUALITY) -> Tuple[Dict[str, str], bytes]:
    """(headers, body) for ``faces`` (N, R, R, 3) uint8 BGR."""
    if codec not in CODECS:
        raise ValueError("codec must be one of %s, got %r" % (CODECS, codec))
    if not isinstance(faces, np.ndarray) or faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[3] != 3:
        raise ValueError("faces must be a (N, R, R, 3) uint8 array, got %s %s"
                         % (getattr(faces, "dtype", type(faces).__name__), getattr(faces, "shape", "")))
    headers = {"X-Codec": codec, "X-Faces": str(faces.shape[0]), "X-Resolution": str(faces.shape[1]),
               "X-Dtype": "uint8", "Content-Type": "application/octet-stream"}
    if morph is not None:
        headers["X-Morph"] = repr(float(morph))
    if codec == "raw":
        return headers, np.ascontiguousarray(faces).tobytes()
    blobs = [_jpeg(face, quality) for face in faces]
    headers["X-Parts"] = ",".join(str(len(b)) for b in blobs)
    return headers, b"".join(blobs)


def decode_request(headers: Mapping[str, str], body: bytes, resolution: int) -> SwapRequest:
    """The faces of a swap request for a model of ``resolution``; WireError naming what is wrong."""
    codec = _header(headers, "X-Codec") or "raw"
    if codec not in CODECS:
        raise WireError("header X-Codec must be one of %s, got %r" % (", ".join(CODECS), codec[:40]))
    dtype = _header(headers, "X-Dtype") or "uint8"
    if dtype != "uint8":
        raise WireError("wrong dtype %r: faces must be uint8 BGR 0..255" % dtype[:40])
    count = _int_header(headers, "X-Faces", 1, MAX_FACES)
    res = _int_header(headers, "X-Resolution", 1, MAX_RESOLUTION)
    if res != resolution:
        raise WireError("wrong size: faces are %dx%d, this model takes %dx%d" % (res, res, resolution, resolution))
    morph = _morph(headers)
    shape = (count, res, res, 3)
    view = memoryview(body)
    if codec == "raw":
        expected = count * res * res * 3
        if len(view) != expected:
            problem = "truncated" if len(view) < expected else "oversized"
            raise WireError("%s body: got %d bytes, expected %d (%d faces of %dx%dx3 uint8)"
                            % (problem, len(view), expected, count, res, res))
        return SwapRequest(np.frombuffer(view, np.uint8).reshape(shape), morph, codec)
    pieces = _split(view, _parts_header(headers, count), "body")
    faces = np.empty(shape, np.uint8)
    for i, piece in enumerate(pieces):
        faces[i] = _unjpeg(piece, shape[1:], "face %d" % i)
    return SwapRequest(faces, morph, codec)


def _morph(headers: Mapping[str, str]) -> Optional[float]:
    text = _header(headers, "X-Morph")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise WireError("header X-Morph must be a number, got %r" % text[:40]) from None
    if not 0.0 <= value <= 1.0:
        raise WireError("header X-Morph must be within 0..1, got %r" % value)
    return value


# --------------------------------------------------------------------------------------- reply

def encode_reply(reply: SwapReply, codec: str = "raw", quality: int = JPEG_QUALITY) -> Tuple[Dict[str, str], bytes]:
    """(headers, body) of a 200 reply."""
    n, res = reply.celeb.shape[0], reply.celeb.shape[1]
    headers = {"X-Codec": codec, "X-Faces": str(n), "X-Resolution": str(res),
               "Content-Type": "application/octet-stream"}
    if codec == "raw":
        return headers, b"".join((reply.celeb.tobytes(), reply.celeb_mask.tobytes(), reply.face_mask.tobytes()))
    blobs = [_jpeg(reply.celeb.reshape(n * res, res, 3), quality),
             _jpeg(reply.celeb_mask.reshape(n * res, res), quality),
             _jpeg(reply.face_mask.reshape(n * res, res), quality)]
    headers["X-Parts"] = ",".join(str(len(b)) for b in blobs)
    return headers, b"".join(blobs)


def decode_reply(headers: Mapping[str, str], body: bytes, count: int, resolution: int) -> SwapReply:
    """The outputs of a 200 reply to a request of ``count`` faces; WireError when it does not fit."""
    codec = _header(headers, "X-Codec") or "raw"
    got = (_int_header(headers, "X-Faces", 0, MAX_FACES), _int_header(headers, "X-Resolution", 1, MAX_RESOLUTION))
    if got != (count, resolution):
        raise WireError("reply is for %d faces of %d, expected %d of %d" % (got + (count, resolution)))
    n, res = count, resolution
    view = memoryview(body)
    if codec == "raw":
        face, mask = n * res * res * 3, n * res * res
        if len(view) != face + 2 * mask:
            raise WireError("reply body is %d bytes, expected %d" % (len(view), face + 2 * mask))
        data = np.frombuffer(view, np.uint8)
        return SwapReply(data[:face].reshape(n, res, res, 3), data[face:face + mask].reshape(n, res, res),
                         data[face + mask:].reshape(n, res, res))
    if codec != "jpeg":
        raise WireError("reply codec %r is unknown" % codec[:40])
    celeb, cmask, fmask = _split(view, _parts_header(headers, 3), "reply")
    return SwapReply(_unjpeg(celeb, (n * res, res, 3), "reply celeb").reshape(n, res, res, 3),
                     _unjpeg(cmask, (n * res, res), "reply celeb mask").reshape(n, res, res),
                     _unjpeg(fmask, (n * res, res), "reply face mask").reshape(n, res, res))
