"""DeepFaceLive's YoloV5Face detector with less CPU work around its model, same rectangles.

DFL's ``YoloV5Face.extract`` fits the frame into the window through a chain of full-size copies
(resize, pad, float, NCHW) and then decodes every anchor of all three strides in numpy (a sigmoid
of five channels, a grid built per call, box arithmetic) before keeping the few above the
threshold. ``fast_extract`` builds the model input straight into a reused NCHW buffer (the same
uint8 resize, the same float32 division), and decodes only the anchors whose objectness passes the
threshold, with DFL's own formulas: the same boxes in the same order, so NMS keeps the same faces.
Batches, ``augment=True`` and unusual inputs run DFL's own code.
"""

from __future__ import annotations

import logging
from typing import Any, List, Tuple

import numpy as np

__all__ = ["fast_extract", "patch_yolo_class", "ANCHORS"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

ANCHORS = (((4, 5), (8, 10), (13, 16)), ((23, 29), (43, 55), (73, 105)), ((146, 217), (231, 300), (335, 433)))
_FEED_ATTR = "_dfl_perf_feed"
_LOG_MAX = np.log(np.finfo(np.float32).max)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """DFL's overflow-safe numpy sigmoid, on a float32 array (changes it)."""
    np.negative(x, out=x)
    over = x > _LOG_MAX
    x[over] = 0.0
    result = 1 / (1 + np.exp(x))
    result[over] = 0.0
    return result


def _fit(img: np.ndarray, window: int) -> Tuple[np.ndarray, float, int, int]:
    """The frame resized as DFL's fit_in does it: (resized HWC, scale, padded height, padded width)."""
    import cv2

    h, w = img.shape[:2]
    if window:
        ratio_w, ratio_h = w / window, h / window
        scale = 1.0
        if ratio_w > 1.0 or ratio_h > 1.0 or (ratio_w < 1.0 and ratio_h < 1.0):
            scale /= max(ratio_w, ratio_h)
        scale = min(scale, 1.0)
        if scale != 1.0:
            img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
            if img.ndim == 2:
                img = img[:, :, None]
        return img, scale, window, window
    return img, 1.0, h + (-h) % 64, w + (-w) % 64


def _feed(holder: Any, img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The NCHW float32 model input, zero-padded, in a buffer kept on the detector object."""
    feed = holder.__dict__.get(_FEED_ATTR)
    if feed is None or feed.shape != (1, 3, height, width):
        feed = np.zeros((1, 3, height, width), np.float32)
        holder.__dict__[_FEED_ATTR] = feed
    h, w, c = img.shape
    feed[:, :, h:, :] = 0
    feed[:, :, :h, w:] = 0
    for k in range(3):
        plane = img[:, :, k if k < c else 0] if c >= 3 else img[:, :, 0]
        if img.dtype == np.uint8:
            np.divide(plane, np.float32(255.0), out=feed[0, k, :h, :w])
        else:
            feed[0, k, :h, :w] = plane
    return feed


def _decode(outputs: List[np.ndarray], height: int, width: int, threshold: float) -> np.ndarray:
    """(x, y, w, h, score) rows of the anchors whose objectness is >= threshold, in DFL's order."""
    rows = []
    for out, anchors in zip(outputs, ANCHORS):
        grid_h, grid_w = out.shape[-2], out.shape[-1]
        stride_x, stride_y = width // grid_w, height // grid_h
        raw = out.reshape(3, 16, grid_h, grid_w)
        score = _sigmoid(np.ascontiguousarray(raw[:, 4]))
        a, gy, gx = np.nonzero(score >= threshold)
        if a.size == 0:
            continue
        xywh = _sigmoid(np.ascontiguousarray(raw[a, 0:4, gy, gx]))
        grid = np.stack([gx, gy], -1).astype(np.float32)
        xy = (xywh[:, 0:2] * 2 - 0.5 + grid) * np.float32([stride_x, stride_y]).astype(np.float32)
        wh = (xywh[:, 2:4] * 2) ** 2 * np.float32(anchors)[a]
        rows.append(np.concatenate([xy, wh, score[a, gy, gx][:, None]], 1))
    if not rows:
        return np.zeros((0, 5), np.float32)
    return np.concatenate(rows, 0)


def fast_extract(detector: Any, img: np.ndarray, threshold: float, fixed_window: int, min_face_size: float,
                 nms: Any) -> List[List[Tuple[float, float, float, float]]]:
    """``YoloV5Face.extract`` for one HW/HWC uint8/float32 image (see the module docstring)."""
    h, w = img.shape[:2]
    if h > 2048 or w > 2048:
        fixed_window = 2048
    if fixed_window != 0:
        fixed_window = max(32, max(1, fixed_window // 32) * 32)
    if img.ndim == 2:
        img = img[:, :, None]
    fitted, scale, height, width = _fit(img, fixed_window)
    feed = _feed(detector, fitted, height, width)
    outputs = detector._sess.run(None, {detector._input_name: feed})
    pred = _decode(outputs, height, width, threshold)
    x, y, bw, bh, score = pred.T
    x0, y0, x1, y1 = x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2
    keep = nms(x0, y0, x1, y1, score, 0.5)
    faces = []
    for left, top, right, bottom in np.stack([x0[keep], y0[keep], x1[keep], y1[keep]], -1):
        if scale != 1.0:  # numpy scalars divided one by one, as DFL does (its precision, not an array's)
            left, top, right, bottom = left / scale, top / scale, right / scale, bottom / scale
        if min(right - left, bottom - top) >= min_face_size:
            faces.append((left, top, right, bottom))
    return [faces]


def _covered(img: Any, augment: bool) -> bool:
    return (not augment and isinstance(img, np.ndarray) and img.dtype in (np.uint8, np.float32)
            and (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3, 4))))


def patch_yolo_class(module: Any, patcher: Any, config: Any) -> None:
    """Point ``module.YoloV5Face.extract`` (DFL's ``modelhub.onnx.YoloV5Face.YoloV5Face``) at ``fast_extract``."""
    def fast(original: Any) -> Any:
        import importlib

        nms = importlib.import_module("xlib.math").nms

        def extract(self, img, threshold=0.3, fixed_window=0, min_face_size=8, augment=False):
            if not _covered(img, augment) or "_sess" not in self.__dict__:
                return original(self, img, threshold, fixed_window, min_face_size, augment)
            return fast_extract(self, img, threshold, fixed_window, min_face_size, nms)
        return extract

    patcher.wrap_method(module, "YoloV5Face", "extract", fast, "detector path")
