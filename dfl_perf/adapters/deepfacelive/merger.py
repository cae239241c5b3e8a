"""A faster CPU merge for DeepFaceLive's FaceMerger: the face's rectangle only, DFL's result.

DFL's ``FaceMergerWorker._merge_on_cpu`` (fc7b787) makes the whole frame float32, warps the mask
and the swapped face to full-frame size, blends and colour-compresses the whole frame, and returns
a float32 frame. ``merge_face`` computes the same picture: the mask steps at face resolution
(``merge_ops``), the warps, the blend and the float arithmetic only on the frame rectangle the
warped mask can reach; every other pixel is the frame's own level through DFL's float path, which
for a uint8 frame is one 256-entry table (``merge_ops.compression_lut``).

What it returns: for the frame's last face (DFL's ``do_color_compression``) and a uint8 frame, the
merged frame as uint8 (DFL's own float -> uint8 conversion, done here, so StreamOutput and the
preview get the same levels; a quarter of the bytes on the shared heap). Otherwise float32, as DFL.

Every option DFL's merge has is honoured: masks source/celeb/lmrks, erode (negative: dilate), blur,
colour transfer ``rct``, interpolation bilinear/bicubic/lanczos4, face offsets and scale (they are
in the matrix DFL passes), opacity, colour compression, several faces (one call each, the frame
passing from one to the next). Anything outside that (an unknown interpolation, unexpected image
shapes or types) runs DFL's own ``_merge_on_cpu``, never a different picture. DFL's OpenCL merge
(a GPU device chosen in the merger) is not touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np

import dfl_perf.adapters.deepfacelive.merge_ops as merge_ops

__all__ = ["MergeOptions", "NotCovered", "merge_face", "patch_merger_class"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

_INTERPOLATIONS = ("bilinear", "bicubic", "lanczos4")
_ONE = np.float32(1.0)


class NotCovered(Exception):
    """The fast merge does not handle this input; DFL's own merge runs instead."""


@dataclass(frozen=True)
class MergeOptions:
    """The merger options DFL's CPU merge reads from the worker state."""

    mask_source: bool = True
    mask_celeb: bool = True
    mask_lmrks: bool = False
    erode: int = 5
    blur: int = 25
    color_transfer: str = "rct"
    interpolation: str = "bilinear"
    color_compression: float = 1.0
    opacity: float = 1.0

    @classmethod
    def from_state(cls, state: Any) -> MergeOptions:
        """The options of a DFL FaceMerger worker state; NotCovered for a value DFL's merge would not take."""
        interpolation = getattr(state, "interpolation", None)
        if interpolation not in _INTERPOLATIONS:
            raise NotCovered("interpolation %r" % (interpolation,))
        try:
            return cls(bool(state.face_mask_source), bool(state.face_mask_celeb), bool(state.face_mask_lmrks),
                       int(state.face_mask_erode), int(state.face_mask_blur), state.color_transfer, interpolation,
                       float(state.color_compression), float(state.face_opacity))
        except (AttributeError, TypeError, ValueError) as exc:
            raise NotCovered("merger state: %s" % exc) from None


def _check_face_images(resolution: Any, align: Any, masks: Any, swap: Any) -> Tuple[int, int]:
    for name, image in (("aligned face", align), ("swapped face", swap)):
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
                or image.dtype not in (np.uint8, np.float32):
            raise NotCovered("%s: %s" % (name, getattr(image, "shape", type(image).__name__)))
    shape = align.shape[:2]
    if swap.shape[:2] != shape or shape[0] != shape[1] or int(resolution) != shape[0]:
        raise NotCovered("face images %s / %s at resolution %s" % (align.shape, swap.shape, resolution))
    for mask in masks:
        if not isinstance(mask, np.ndarray) or mask.dtype not in (np.uint8, np.float32) or mask.shape[:2] != shape \
                or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[2] != 1):
            raise NotCovered("mask %s" % (getattr(mask, "shape", type(mask).__name__),))
    return shape


def _warp(image: np.ndarray, mat64: np.ndarray, rect: Tuple[int, int, int, int], interpolation: str) -> np.ndarray:
    import cv2

    flag = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "lanczos4": cv2.INTER_LANCZOS4}[interpolation]
    return merge_ops.warp_rect(image, mat64, rect, flag)


def _blend(frame_part: np.ndarray, mask: np.ndarray, face: np.ndarray, opacity: float) -> np.ndarray:
    """DFL's blend in float32: frame*(1-m) + face*m, or with opacity o: frame*(1-m) + frame*m*(1-o) + face*m*o.

    Each product and sum is rounded to float32 in the order DFL's numexpr expression has, so the
    pixels are DFL's; OpenCV's per-element operations on the three channels do it, writing into
    ``frame_part`` and ``face`` (this merge's own float32 copies) where they can.
    """
    import cv2

    m = cv2.merge((mask, mask, mask))
    faded = None
    if opacity != 1.0:
        o = np.float32(opacity)
        faded = cv2.multiply(cv2.multiply(frame_part, m), _channels(_ONE - o))
        face = cv2.multiply(cv2.multiply(face, m, dst=face), _channels(o), dst=face)
    else:
        face = cv2.multiply(face, m, dst=face)
    out = cv2.multiply(frame_part, cv2.subtract(_channels(_ONE), m), dst=frame_part)
    if faded is not None:
        out = cv2.add(out, faded, dst=out)
    return cv2.add(out, face, dst=out)


def _channels(value: np.float32) -> Tuple[float, float, float, float]:
    """A float32 value as OpenCV's per-channel scalar for a 3-channel image."""
    v = float(value)
    return (v, v, v, 0.0)


def merge_face(frame: np.ndarray, resolution: int, align: np.ndarray, align_mask: np.ndarray, lmrks_mask: np.ndarray,
               swap: np.ndarray, swap_mask: np.ndarray, mat: np.ndarray, frame_w: int, frame_h: int, last: bool,
               options: MergeOptions, uint8_out: bool = True) -> np.ndarray:
    """One face merged into ``frame`` as DFL's CPU merge does it (see the module docstring).

    ``frame`` is uint8 or float32 HW3 (a float32 frame is changed in place, as DFL's caller only
    keeps the result); ``mat`` the 2x3 matrix from the aligned face to the frame (DFL's
    ``aligned_to_source_uni_mat`` made exact). Raises NotCovered for inputs it does not handle.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 \
            or frame.dtype not in (np.uint8, np.float32) or frame.shape[:2] != (frame_h, frame_w):
        raise NotCovered("frame %s" % (getattr(frame, "shape", type(frame).__name__),))
    chosen = [m for on, m in ((options.mask_source, align_mask), (options.mask_celeb, swap_mask),
                              (options.mask_lmrks, lmrks_mask)) if on]
    _check_face_images(resolution, align, chosen, swap)
    mat64 = np.asarray(mat, np.float64)
    if mat64.shape != (2, 3) or not np.isfinite(mat64).all():
        raise NotCovered("matrix %s" % (mat64.shape,))
    face_mask = merge_ops.erode_blur(merge_ops.mask_product(chosen, int(resolution)), options.erode, options.blur)
    box = merge_ops.support(face_mask >= np.float32(0.5 / 255.0))
    rect = merge_ops.frame_rect(box, mat64, frame_w, frame_h) if box is not None else None
    compress = last and options.color_compression != 0
    to_uint8 = last and uint8_out
    if frame.dtype == np.uint8 and to_uint8:
        import cv2

        lut = merge_ops.compression_lut(options.color_compression if compress else 0.0, options.opacity)
        out = cv2.LUT(frame, lut)
        if rect is not None:
            x0, y0, x1, y1 = rect
            part = _merge_rect(merge_ops.to_float(frame[y0:y1, x0:x1]), face_mask, swap, align, mat64, rect, options)
            if compress:
                merge_ops.compress(part, options.color_compression)
            merge_ops.to_uint8(part, out=out[y0:y1, x0:x1])
        return out
    out = merge_ops.to_float(frame) if frame.dtype == np.uint8 else frame
    if rect is not None:
        x0, y0, x1, y1 = rect
        out[y0:y1, x0:x1] = _merge_rect(out[y0:y1, x0:x1], face_mask, swap, align, mat64, rect, options)
    if compress:
        merge_ops.compress(out, options.color_compression)
    return merge_ops.to_uint8(out) if to_uint8 else out


def _merge_rect(frame_part: np.ndarray, face_mask: np.ndarray, swap: np.ndarray, align: np.ndarray, mat64: np.ndarray,
                rect: Tuple[int, int, int, int], options: MergeOptions) -> np.ndarray:
    mask = _warp(face_mask, mat64, rect, "bilinear")
    mask[mask < (1.0 / 255.0)] = 0.0
    mask[mask > 1.0] = 1.0
    face = merge_ops.to_float(swap)
    if options.color_transfer == "rct":
        try:
            face = merge_ops.rct(face, align, face_mask)
        except ZeroDivisionError as exc:  # DFL divides by zero here (NaN faces): let its own code do that
            raise NotCovered(str(exc)) from None
    face = _warp(face, mat64, rect, options.interpolation)
    return _blend(frame_part, mask, face, options.opacity)


# --------------------------------------------------------------------------------------- the patch

_told = set()


def _tell_once(reason: str) -> None:
    if reason not in _told:
        _told.add(reason)
        log.info("dfl_perf: DeepFaceLive's own merge for %s", reason)


def patch_merger_class(module: Any, patcher: Any, config: Any) -> None:
    """Point ``FaceMergerWorker._merge_on_cpu`` at the fast merge (undone by ``patcher``)."""
    uint8_out = bool(config.merged_uint8)

    def fast(original: Any) -> Any:
        def _merge_on_cpu(self, frame_image, face_resolution, face_align_img, face_align_mask_img,
                          face_align_lmrks_mask_img, face_swap_img, face_swap_mask_img, aligned_to_source_uni_mat,
                          frame_width, frame_height, do_color_compression):
            try:
                options = MergeOptions.from_state(self.get_state())
                return merge_face(frame_image, face_resolution, face_align_img, face_align_mask_img,
                                  face_align_lmrks_mask_img, face_swap_img, face_swap_mask_img,
                                  aligned_to_source_uni_mat, frame_width, frame_height, bool(do_color_compression),
                                  options, uint8_out)
            except NotCovered as exc:
                _tell_once(str(exc))
            return original(self, frame_image, face_resolution, face_align_img, face_align_mask_img,
                            face_align_lmrks_mask_img, face_swap_img, face_swap_mask_img, aligned_to_source_uni_mat,
                            frame_width, frame_height, do_color_compression)
        return _merge_on_cpu

    patcher.wrap_method(module, "FaceMergerWorker", "_merge_on_cpu", fast, "fast merge")
