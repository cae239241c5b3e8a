"""Merge a swapped face back into the frame: feathered mask, inverse warp, blend.

Footprint: DFL's FaceMerger turns the *whole frame* into float32 and warps the face and mask into
full-frame float32 buffers (about 4 x 24.9 MB allocations per 1080p frame). Here only the frame
rectangle under the mask's non-zero part (its bounding box in the crop, mapped to the frame) is
warped and blended (uint8 face and float32 weights through
``cv2.blendLinear``: a few hundred KB for a typical face); the rest of the frame is copied as uint8,
or not touched at all with ``out=frame``. The celeb face is quantised to uint8 in crop space before
the warp, so results differ from a float32 blend by at most one level.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from dfl_perf.facepipe.align import invert_affine, transform_points

__all__ = ["feather_mask", "face_rect", "merge_face", "merge_faces"]


@lru_cache(maxsize=32)
def _erode_kernel(erode: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))


class _Scratch(threading.local):
    """Per-thread work buffers that grow to the largest size asked and are reused: the merge's
    temporaries (feathered mask, warped face and weights) cost no allocation in steady state."""

    def __init__(self) -> None:
        self.buffers: dict = {}

    def view(self, name: str, shape: Tuple[int, ...], dtype: Any) -> np.ndarray:
        size = int(np.prod(shape))
        key = (name, np.dtype(dtype).str)
        buf = self.buffers.get(key)
        if buf is None or buf.size < size:
            buf = self.buffers[key] = np.empty(size, dtype)
        return buf[:size].reshape(shape)


def _fresh() -> _Scratch:
    """Scratch that is used once: the public ``feather_mask`` returns arrays the caller owns."""
    return _Scratch()


_SCRATCH = _Scratch()


def feather_mask(mask: np.ndarray, erode: int = 5, blur: int = 25) -> np.ndarray:
    """Shrink the mask by ``erode`` px, fade it to 0 at the crop border, then blur it over ``blur`` px.

    ``mask`` (res, res) or (res, res, 1), float32 0..1 (or uint8 0..255). Returns (res, res) float32 0..1.
    """
    return _feather(mask, erode, blur, _fresh())


def _feather(mask: np.ndarray, erode: int, blur: int, scratch: _Scratch) -> np.ndarray:
    import cv2

    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[:, :, 0]
    if m.ndim != 2:
        raise ValueError("mask must be (res, res) or (res, res, 1), got %s" % (np.shape(mask),))
    work = scratch.view("mask", m.shape, np.float32)
    if m.dtype == np.uint8:
        np.multiply(m, np.float32(1.0 / 255.0), out=work, casting="unsafe")
    else:
        np.copyto(work, m, casting="unsafe")
    if erode > 0:
        work = cv2.erode(work, _erode_kernel(int(erode)), dst=scratch.view("eroded", m.shape, np.float32))
    if blur > 0:
        half = int(blur) // 2
        border = min(half + 1, m.shape[0] // 2, m.shape[1] // 2)
        work[:border, :] = 0
        work[-border:, :] = 0
        work[:, :border] = 0
        work[:, -border:] = 0
        work = cv2.GaussianBlur(work, (2 * half + 1, 2 * half + 1), 0, dst=scratch.view("blurred", m.shape, np.float32))
    np.clip(work, 0.0, 1.0, out=work)
    return work


def face_rect(M: np.ndarray, resolution: int, frame_shape: Sequence[int],
              crop_box: Optional[Tuple[float, float, float, float]] = None) -> Optional[Tuple[int, int, int, int]]:
    """The frame rectangle (x0, y0, x1, y1) covered by the aligned crop of matrix ``M`` (or by the
    part ``crop_box`` (x0, y0, x1, y1) of it); None when it misses the frame."""
    bx0, by0, bx1, by1 = crop_box if crop_box is not None else (0.0, 0.0, float(resolution), float(resolution))
    corners = transform_points(np.array([[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]], dtype=np.float64),
                               invert_affine(M))
    h, w = int(frame_shape[0]), int(frame_shape[1])
    x0 = max(0, int(np.floor(corners[:, 0].min())))
    y0 = max(0, int(np.floor(corners[:, 1].min())))
    x1 = min(w, int(np.ceil(corners[:, 0].max())) + 1)
    y1 = min(h, int(np.ceil(corners[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def _prepare_out(frame: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError("frame must be (H, W, 3) uint8 BGR, got %s %s" % (frame.shape, frame.dtype))
    if out is None:
        return frame.copy()
    if out.shape != frame.shape or out.dtype != np.uint8:
        raise ValueError("out must be uint8 %s, got %s %s" % (frame.shape, out.dtype, out.shape))
    if out is not frame:
        np.copyto(out, frame)
    return out


def merge_face(frame: np.ndarray, celeb: np.ndarray, mask: np.ndarray, M: np.ndarray,
               erode: int = 5, blur: int = 25, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend one swapped face into ``frame`` (H, W, 3) uint8 BGR; returns the merged uint8 frame.

    ``celeb`` (res, res, 3) float32 0..1 (or uint8), ``mask`` (res, res[, 1]) 0..1, ``M`` the forward
    2x3 matrix frame -> aligned crop (from ``align_matrix``). ``out``: where to write the result
    (``out=frame`` merges in place); by default a new array. DFL's default mask is
    ``face_mask * celeb_mask``; pass whichever mask you want.
    """
    out = _prepare_out(frame, out)
    _blend_one(out, celeb, mask, M, erode, blur)
    return out


def merge_faces(frame: np.ndarray, celebs: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                matrices: Sequence[np.ndarray], erode: int = 5, blur: int = 25,
                out: Optional[np.ndarray] = None) -> np.ndarray:
    """``merge_face`` for several faces, one after another, into one output frame."""
    if not len(celebs) == len(masks) == len(matrices):
        raise ValueError("need as many masks and matrices as faces: %d, %d, %d" % (len(celebs), len(masks), len(matrices)))
    out = _prepare_out(frame, out)
    for celeb, mask, M in zip(celebs, masks, matrices):
        _blend_one(out, celeb, mask, M, erode, blur)
    return out


def _blend_one(out: np.ndarray, celeb: np.ndarray, mask: np.ndarray, M: np.ndarray, erode: int, blur: int) -> None:
    import cv2

    res = celeb.shape[0]
    if celeb.shape != (res, res, 3) or celeb.dtype not in (np.float32, np.uint8):
        raise ValueError("celeb must be (res, res, 3) float32 0..1 or uint8, got %s %s" % (celeb.shape, celeb.dtype))
    if np.shape(mask)[:2] != (res, res):
        raise ValueError("mask must be (%d, %d[, 1]) like the celeb face, got %s" % (res, res, np.shape(mask)))
    scratch = _SCRATCH
    alpha_crop = _feather(mask, erode, blur, scratch)
    # blend only where the mask is not 0: its bounding box in the crop (+1 px for the bilinear
    # warp's reach), mapped to the frame; outside it the warped mask is exactly 0
    nonzero = np.greater(alpha_crop, 0, out=scratch.view("nonzero", alpha_crop.shape, np.bool_))
    bx, by, bw, bh = cv2.boundingRect(nonzero.view(np.uint8))
    if bw == 0 or bh == 0:
        return
    rect = face_rect(M, res, out.shape, (bx - 1.0, by - 1.0, bx + bw + 1.0, by + bh + 1.0))
    if rect is None:
        return
    x0, y0, x1, y1 = rect
    M = np.asarray(M, dtype=np.float64)
    to_rect = M.copy()
    to_rect[:, 2] += M[:, :2] @ np.array([x0, y0], dtype=np.float64)  # rect pixel -> crop pixel
    size, shape = (x1 - x0, y1 - y0), (y1 - y0, x1 - x0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    if celeb.dtype == np.float32:  # quantise in crop space (res x res), cheaper than in the frame
        celeb = cv2.convertScaleAbs(celeb, dst=scratch.view("celeb", celeb.shape, np.uint8), alpha=255.0)
    face = cv2.warpAffine(celeb, to_rect, size, dst=scratch.view("face", shape + (3,), np.uint8), flags=flags,
                          borderMode=cv2.BORDER_CONSTANT)
    alpha = cv2.warpAffine(alpha_crop, to_rect, size, dst=scratch.view("alpha", shape, np.float32), flags=flags,
                           borderMode=cv2.BORDER_CONSTANT)
    keep = np.subtract(np.float32(1.0), alpha, out=scratch.view("keep", shape, np.float32))
    roi = out[y0:y1, x0:x1]
    # (face * a + roi * (1 - a)) / (1 + 1e-5), rounded: outside the mask (a = 0) the frame is unchanged
    np.copyto(roi, cv2.blendLinear(face, roi, alpha, keep, dst=scratch.view("blend", shape + (3,), np.uint8)))
