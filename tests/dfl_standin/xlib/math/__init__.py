"""DFL's ``xlib.math`` pieces used by the live pipeline: 2x3 float32 affine matrices (``Affine2DMat``,
``Affine2DUniMat`` for [0,1] coordinates), non-maximum suppression and small vector helpers."""

import cv2
import numpy as np


class Affine2DMat(np.ndarray):
    """A 2x3 float32 affine matrix (a numpy array, so OpenCV takes it as is)."""

    def __new__(cls, values):
        values = np.array(values)
        if values.shape != (2, 3):
            raise ValueError("values must have shape (2,3)")
        obj = super().__new__(cls, shape=(2, 3), dtype=np.float32)
        obj[:] = values
        return obj

    def __array_finalize__(self, obj):
        pass

    @staticmethod
    def identity():
        return Affine2DMat([[1, 0, 0], [0, 1, 0]])

    @staticmethod
    def umeyama(src, dst, estimate_scale=True):
        """Least-squares similarity transform taking points ``src`` to ``dst`` (Umeyama, 1991)."""
        src = np.asarray(src, np.float64)
        dst = np.asarray(dst, np.float64)
        src_mean, dst_mean = src.mean(0), dst.mean(0)
        src_c, dst_c = src - src_mean, dst - dst_mean
        cov = dst_c.T @ src_c / len(src)
        signs = np.ones(2)
        if np.linalg.det(cov) < 0:
            signs[-1] = -1
        u, s, vt = np.linalg.svd(cov)
        rotation = u @ np.diag(signs) @ vt
        scale = (s @ signs) / src_c.var(0).sum() if estimate_scale else 1.0
        out = np.zeros((2, 3))
        out[:, :2] = scale * rotation
        out[:, 2] = dst_mean - scale * rotation @ src_mean
        return Affine2DMat(out)

    @staticmethod
    def from_3_pairs(src_pts, dst_pts):
        return Affine2DMat(cv2.getAffineTransform(np.float32(src_pts), np.float32(dst_pts)))

    def invert(self):
        return Affine2DMat(cv2.invertAffineTransform(np.asarray(self, np.float64)))

    def transform_points(self, points):
        points = np.asarray(points if isinstance(points, np.ndarray) else np.float32(points))
        dtype = points.dtype
        full = np.concatenate([np.asarray(self), [[0, 0, 1]]], 0)
        ones = np.ones((len(points), 1), points.dtype)
        return (full @ np.concatenate([points, ones], 1).T).T[:, :2].astype(dtype)

    def as_uni_mat(self):
        return Affine2DUniMat(self)


class Affine2DUniMat(Affine2DMat):
    """An affine matrix between uniform (0..1) coordinate spaces."""

    @staticmethod
    def umeyama(src, dst, estimate_scale=True):
        return Affine2DMat.umeyama(src, dst, estimate_scale).as_uni_mat()

    @staticmethod
    def from_3_pairs(src_pts, dst_pts):
        return Affine2DMat.from_3_pairs(src_pts, dst_pts).as_uni_mat()

    def invert(self):
        return super().invert().as_uni_mat()

    def source_translated(self, utw, uth):
        src = np.float32([(0, 0), (1, 0), (0, 1)])
        dst = self.transform_points(src)
        return Affine2DUniMat.from_3_pairs(src + (utw, uth), dst)

    def source_scaled_around_center(self, sw, sh):
        src = np.float32([(0, 0), (1, 0), (0, 1)])
        dst = self.transform_points(src)
        return Affine2DUniMat.from_3_pairs((src - 0.5) / (sw, sh) + 0.5, dst)

    def to_exact_mat(self, sw, sh, tw, th):
        """The pixel matrix from a (sw, sh) source image to a (tw, th) target image."""
        corners = self.transform_points([(0, 0), (1, 0), (0, 1)]) * (tw, th)
        return Affine2DMat.from_3_pairs([[0, 0], [sw, 0], [0, sh]], corners)


def nms(x1, y1, x2, y2, scores, thresh):
    """Indexes of the boxes kept by greedy non-maximum suppression (IoU above ``thresh`` suppressed)."""
    if len(x1) == 0:
        return []
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        width = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        height = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = width * height / (areas[best] + areas[rest] - width * height)
        order = rest[overlap <= thresh]
    return keep


def segment_length(p1, p2):
    return np.sqrt(np.sum((p2 - p1) ** 2))


def segment_to_vector(p1, p2):
    length = segment_length(p1, p2)
    return (p2 - p1) / length if length != 0 else np.zeros_like(p1)


def polygon_area(pts):
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * np.abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
