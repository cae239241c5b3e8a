"""The steps of DeepFaceLive's CPU face merge, computed on the face's rectangle of the frame only.

Each function gives what DFL's step gives (fc7b787, ``FaceMergerWorker._merge_on_cpu``), at the
resolution DFL computes it, but touches only the pixels that can change:

- ``mask_product``: the enabled masks as float32 0..1 multiplied in DFL's order (none: ones);
- ``erode_blur``: DFL pads the mask by its own size on every side before eroding, fading to the
  border and blurring; the same result comes from a pad just wider than the blur kernel's reach;
- ``frame_rect``: the frame rectangle the warped mask can be non-zero in (its support's corners
  through the matrix, widened by the interpolation's reach, clipped at the frame's borders);
- ``rct``: Reinhard colour transfer in Lab (DFL's variant: statistics over the whole face image,
  pixels under the mask cut-off counted as zeros);
- ``compression_lut``: what colour compression and the conversion to uint8 make of each uint8 level of
  a pixel no face covers, computed with DFL's float32 arithmetic.

Standard library, numpy and OpenCV only; no DFL import.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = ["to_float", "mask_product", "erode_blur", "support", "frame_rect", "warp_rect", "rct", "compression_lut", "compress", "to_uint8",
           "gaussian_radius", "INTERPOLATION_REACH"]

#: how far (source pixels) each interpolation reads around a sample point
INTERPOLATION_REACH = {"bilinear": 1, "bicubic": 2, "lanczos4": 4}
_ONE = np.float32(1.0)


def to_float(mask: np.ndarray) -> np.ndarray:
    """DFL's ``to_ufloat32`` as a new float32 array (uint8 / 255; float32 copied)."""
    if mask.dtype == np.uint8:
        out = mask.astype(np.float32)
        out /= np.float32(255.0)
        return out
    return np.array(mask, dtype=np.float32, copy=True)


def _plane(mask: np.ndarray) -> np.ndarray:
    return mask[..., 0] if mask.ndim == 3 else mask


def mask_product(masks: Sequence[np.ndarray], resolution: int) -> np.ndarray:
    """The enabled masks (HW or HW1, uint8 or float32) multiplied, float32 HW; ones when there are none."""
    if not masks:
        return np.ones((resolution, resolution), np.float32)
    out = to_float(_plane(masks[0]))
    for mask in masks[1:]:
        out *= to_float(_plane(mask))
    return out


def gaussian_radius(sigma: float) -> int:
    """The half-width of the kernel OpenCV's GaussianBlur builds for a float32 image with this sigma."""
    ksize = int(round(sigma * 8 + 1)) | 1
    return ksize // 2


def erode_blur(mask: np.ndarray, erode: int, blur: int) -> np.ndarray:
    """DFL's ``erode_blur(erode, blur, fade_to_border=True)`` of an HW float32 mask; returns HW float32."""
    import cv2

    erode, blur = int(erode), int(blur)
    h, w = mask.shape
    sigma = blur * 0.125 * 2
    reach = gaussian_radius(sigma) if blur > 0 else 0
    # DFL pads by (h, w). Any pad at least 1 wider than the blur's reach gives the same pixels inside,
    # as long as it is not wider than DFL's own (then DFL's pad is the exact one).
    pad_h, pad_w = min(h, reach + 2), min(w, reach + 2)
    work = np.zeros((h + 2 * pad_h, w + 2 * pad_w), np.float32)
    work[pad_h:pad_h + h, pad_w:pad_w + w] = mask
    if erode != 0:
        kernel = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
        morph = cv2.erode if erode > 0 else cv2.dilate
        work = morph(work, kernel, iterations=max(1, abs(erode) // 2))
    band_h, band_w = pad_h + blur // 2, pad_w + blur // 2
    work[:band_h, :] = 0
    work[-band_h:, :] = 0
    work[:, :band_w] = 0
    work[:, -band_w:] = 0
    if blur > 0:
        work = cv2.GaussianBlur(work, (0, 0), sigma)
    return np.ascontiguousarray(work[pad_h:pad_h + h, pad_w:pad_w + w])


def support(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) bounding the non-zero pixels of an HW mask (x1, y1 exclusive), or None."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame_rect(box: Tuple[int, int, int, int], mat: np.ndarray, frame_w: int, frame_h: int,
               margin: int = 2) -> Optional[Tuple[int, int, int, int]]:
    """The frame rectangle (x0, y0, x1, y1) holding every pixel a warp by ``mat`` can take from ``box``.

    ``box`` is in source pixels; it is widened by one pixel (bilinear reads one pixel around a sample
    point), mapped through ``mat``, and the result widened by ``margin`` for OpenCV's fixed-point
    rounding, then clipped to the frame. None when nothing of it lies in the frame.
    """
    x0, y0, x1, y1 = box
    corners = np.float64([[x0 - 1, y0 - 1, 1], [x1, y0 - 1, 1], [x0 - 1, y1, 1], [x1, y1, 1]])
    mapped = corners @ np.asarray(mat, np.float64).T
    left = int(np.floor(mapped[:, 0].min())) - margin
    top = int(np.floor(mapped[:, 1].min())) - margin
    right = int(np.ceil(mapped[:, 0].max())) + margin + 1
    bottom = int(np.ceil(mapped[:, 1].max())) + margin + 1
    left, top = max(0, left), max(0, top)
    right, bottom = min(frame_w, right), min(frame_h, bottom)
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


_last_maps: Tuple[Any, Any] = (None, None)  # (matrix bytes, rect), maps: a face and its mask share one warp


def _fixed_point_maps(mat64: np.ndarray, rect: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """The fixed-point sample maps OpenCV's classic warpAffine computes for the pixels of ``rect``.

    OpenCV inverts the matrix, then for each pixel adds a per-row and a per-column term, each rounded
    to 1/1024 pixel, and keeps 1/32-pixel steps; ``cv2.remap`` with these maps gives its pixels.
    The last maps are kept: the merge warps the face and its mask with the same matrix.
    """
    global _last_maps
    key = (np.asarray(mat64, np.float64).tobytes(), tuple(rect))
    last_key, maps = _last_maps  # one read: a thread that replaces them meanwhile changes nothing here
    if last_key != key:
        maps = _compute_maps(mat64, rect)
        _last_maps = (key, maps)
    return maps


def _compute_maps(mat64: np.ndarray, rect: Tuple[int, int, int, int]) -> Tuple[np.ndarray, np.ndarray]:
    m = [float(v) for v in np.asarray(mat64, np.float64).reshape(6)]
    det = m[0] * m[4] - m[1] * m[3]
    det = 1.0 / det if det != 0 else 0.0
    a11, a22 = m[4] * det, m[0] * det
    m[0], m[4] = a11, a22
    m[1] *= -det
    m[3] *= -det
    b1 = -m[0] * m[2] - m[1] * m[5]
    b2 = -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    x0, y0, x1, y1 = rect
    xs = np.arange(x0, x1, dtype=np.float64)
    ys = np.arange(y0, y1, dtype=np.float64)
    # OpenCV keeps these terms in C ints (saturated): int32 here too, int64 where a sum could overflow
    col_x, col_y = _fixed(m[0] * xs * 1024), _fixed(m[3] * xs * 1024)
    row_x, row_y = _fixed((m[1] * ys + m[2]) * 1024) + 16, _fixed((m[4] * ys + m[5]) * 1024) + 16
    whole = np.empty((len(ys), len(xs), 2), np.int16)
    shifted = []
    for i, (row, col) in enumerate(((row_x, col_x), (row_y, col_y))):
        low, high = int(row.min()) + int(col.min()), int(row.max()) + int(col.max())
        wide = not (-2 ** 31 <= low and high < 2 ** 31)
        v = np.add.outer(row.astype(np.int64), col) if wide else np.add.outer(row, col)
        v >>= 5
        if -32768 <= low >> 10 and high >> 10 <= 32767:
            np.right_shift(v, 5, out=whole[..., i], casting="unsafe")
        else:
            whole[..., i] = np.clip(v >> 5, -32768, 32767)
        shifted.append(v)
    x, y = shifted
    y &= 31
    y <<= 5
    x &= 31
    y |= x
    return whole, y.astype(np.uint16)


def _fixed(values: np.ndarray) -> np.ndarray:
    """Rounded to the nearest int and saturated to int32, as OpenCV's saturate_cast<int>."""
    return np.clip(np.rint(values), -2 ** 31, 2 ** 31 - 1).astype(np.int32)


def _shifted_warp(image: np.ndarray, mat64: np.ndarray, rect: Tuple[int, int, int, int], flag: int) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = rect
    local = np.array(mat64, np.float64)
    local[0, 2] -= x0
    local[1, 2] -= y0
    return cv2.warpAffine(image, local, (x1 - x0, y1 - y0), flags=flag)


def _remap_warp(image: np.ndarray, mat64: np.ndarray, rect: Tuple[int, int, int, int], flag: int) -> np.ndarray:
    import cv2

    whole, fraction = _fixed_point_maps(mat64, rect)
    return cv2.remap(image, whole, fraction, flag)


_warp_method: dict = {}


def _probe_warp_method(flag: int) -> Any:
    """Which way of warping a rectangle gives this OpenCV's full-frame warpAffine pixels (checked once)."""
    import cv2

    rng = np.random.RandomState(7)
    src = cv2.GaussianBlur(rng.rand(40, 40).astype(np.float32), (0, 0), 1.5)
    angle, scale = 0.37, 1.7
    mat = np.float32([[scale * np.cos(angle), -scale * np.sin(angle), 31.3],
                      [scale * np.sin(angle), scale * np.cos(angle), 7.6]])
    full = cv2.warpAffine(src, mat, (96, 96), flags=flag)
    rect = (13, 17, 77, 83)
    want = full[rect[1]:rect[3], rect[0]:rect[2]]
    mat64 = mat.astype(np.float64)
    errors = [(float(np.abs(method(src, mat64, rect, flag) - want).max()), i, method)
              for i, method in enumerate((_remap_warp, _shifted_warp))]
    return min(errors)[2]


def warp_rect(image: np.ndarray, mat64: np.ndarray, rect: Tuple[int, int, int, int], flag: int) -> np.ndarray:
    """``cv2.warpAffine(image, mat, frame_size, flags=flag)[rect]``, computing only the rectangle's pixels."""
    method = _warp_method.get(flag)
    if method is None:
        method = _warp_method[flag] = _probe_warp_method(flag)
    return method(image, mat64, rect, flag)


def rct(face: np.ndarray, like: np.ndarray, mask: np.ndarray, cutoff: float = 0.5) -> np.ndarray:
    """DFL's ``ImageProcessor.rct(like, mask, like_mask=mask)`` of a float32 HW3 face; returns float32 HW3.

    ``like`` is the aligned face (uint8 or float32 HW3), ``mask`` the float32 HW face mask. Statistics
    run over the whole image with the pixels where the mask is below ``cutoff`` set to zero.
    """
    import cv2

    lab = cv2.cvtColor(face, cv2.COLOR_BGR2LAB)
    like_lab = cv2.cvtColor(to_float(like), cv2.COLOR_BGR2LAB)
    outside = mask < cutoff
    like_stats = like_lab.copy()
    like_stats[outside] = 0
    face_stats = lab.copy()
    face_stats[outside] = 0
    channels = []
    for i, (low, high) in enumerate(((0, 100), (-127, 127), (-127, 127))):
        src = face_stats[..., i]
        dst = like_stats[..., i]
        src_mean, src_std = src.mean(keepdims=True), src.std(keepdims=True)
        if not src_std.all():
            raise ZeroDivisionError("rct: the face has no spread under the mask")
        dst_mean, dst_std = dst.mean(keepdims=True), dst.std(keepdims=True)
        x = lab[..., i] - src_mean
        x *= dst_std
        x /= src_std
        x += dst_mean
        np.clip(x, low, high, out=x)
        channels.append(x)
    return cv2.cvtColor(np.stack(channels, -1), cv2.COLOR_LAB2BGR)


def compression_factor(value: float) -> float:
    """DFL's colour compression factor for the UI value (0 means off)."""
    return max(4, (127.0 - value))


def compress(image: np.ndarray, value: float) -> np.ndarray:
    """DFL's colour compression of a float32 image, in place: floor(x * c) / c + 2 / c."""
    c = compression_factor(value)
    image *= c
    np.floor(image, out=image)
    image /= c
    image += 2.0 / c
    return image


def to_uint8(image: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """DFL's float -> uint8 conversion (x * 255, clipped, truncated) of a float32 image (scaled in place)."""
    image *= np.float32(255.0)
    np.clip(image, 0, 255, out=image)
    if out is None:
        return image.astype(np.uint8)
    np.copyto(out, image, casting="unsafe")
    return out


def compression_lut(value: float, opacity: float) -> np.ndarray:
    """uint8 level -> the uint8 level DFL's merge (no face there), colour compression and uint8 conversion give."""
    levels = np.arange(256, dtype=np.uint8).reshape(1, 256, 1)
    frame = to_float(levels)
    zero = np.zeros_like(frame)
    if opacity == 1.0:
        out = frame * (_ONE - zero) + zero * zero
    else:
        o = np.float32(opacity)
        out = frame * (_ONE - zero) + frame * zero * (_ONE - o) + zero * zero * o
    if value != 0:
        compress(out, value)
    return to_uint8(out).reshape(256)
