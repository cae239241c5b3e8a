"""Five-point face alignment: a similarity transform from frame to a square face crop, and back.

The canonical template is the mean 5-point face geometry (eye centres, nose tip, mouth corners),
taken from the widely used ArcFace 112x112 reference points and re-expressed in *face units*:
one unit is the inner-face size (about the span from eyebrow to eyebrow, and from the eyes to
below the mouth), with the 5-point centroid at the crop centre. ``coverage`` is the crop's side
in face units, as DFL's ``face_coverage`` (default 2.2: the whole head with some margin).

All matrices are 2x3 float64 mapping frame pixels to crop pixels (``cv2.warpAffine`` convention).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import numpy as np

__all__ = ["TEMPLATE_5PT", "FACE_UNIT_PX", "template_points", "similarity_transform", "align_matrix",
           "warp_face", "invert_affine", "transform_points"]

# Mean 5-point geometry in the ArcFace 112x112 reference crop (x, y): eyes, nose tip, mouth corners.
TEMPLATE_5PT = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)
# Pixels of that reference crop per face unit: the eye-to-mouth height (40.7 px) is 0.58 of the
# inner face, as in the mean 68-point face DFL aligns to.
FACE_UNIT_PX = 70.0


@lru_cache(maxsize=64)
def _template(resolution: int, coverage: float) -> np.ndarray:
    unit = (TEMPLATE_5PT - TEMPLATE_5PT.mean(axis=0)) / FACE_UNIT_PX
    points = unit * (resolution / coverage) + resolution * 0.5
    points.setflags(write=False)
    return points


def template_points(resolution: int, coverage: float = 2.2) -> np.ndarray:
    """Where the 5 keypoints land in a ``resolution`` crop (read-only (5, 2) float64, cached)."""
    if resolution <= 0 or coverage <= 0:
        raise ValueError("resolution and coverage must be positive, got %r, %r" % (resolution, coverage))
    return _template(int(resolution), float(coverage))


def similarity_transform(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection), Umeyama 1991.

    Returns the 2x3 float64 matrix M with ``dst ~ M @ [src, 1]``.
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError("need two (N, 2) point sets of the same N >= 2, got %s and %s" % (src.shape, dst.shape))
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / src.shape[0]
    if src_var <= 1e-12:
        raise ValueError("source points are all the same point")
    cov = dst_c.T @ src_c / src.shape[0]
    u, s, vt = np.linalg.svd(cov)
    d = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) >= 0 else -1.0])
    rot = (u * d) @ vt
    scale = (s * d).sum() / src_var
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = scale * rot
    out[:, 2] = dst_mean - out[:, :2] @ src_mean
    return out


def align_matrix(keypoints: np.ndarray, resolution: int, coverage: float = 2.2) -> np.ndarray:
    """2x3 matrix taking the frame to the aligned ``resolution`` x ``resolution`` face crop."""
    return similarity_transform(keypoints, template_points(resolution, coverage))


def invert_affine(M: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (crop to frame for an alignment matrix)."""
    M = np.asarray(M, dtype=np.float64)
    a_inv = np.linalg.inv(M[:, :2])
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = a_inv
    out[:, 2] = -a_inv @ M[:, 2]
    return out


def transform_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    M = np.asarray(M, dtype=np.float64)
    return pts @ M[:, :2].T + M[:, 2]


def warp_face(frame: np.ndarray, M: np.ndarray, resolution: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The aligned face crop (resolution, resolution, C), bilinear, black outside the frame.

    With ``out`` (contiguous, same dtype and channels) the crop is written there.
    """
    import cv2

    size = (int(resolution), int(resolution))
    if out is not None:
        expected = (size[1], size[0]) + frame.shape[2:]
        if out.shape != expected or out.dtype != frame.dtype or not out.flags.c_contiguous:
            raise ValueError("out must be a contiguous %s %s array, got %s %s"
                             % (frame.dtype, expected, out.dtype, out.shape))
        cv2.warpAffine(frame, M, size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return out
    return cv2.warpAffine(frame, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
