"""DFL's face types used by the live pipeline: ``FRect``, ``FLandmarks2D``, ``FPose``, ``ELandmarks2D``.

Uniform coordinates (0..1 of the frame) throughout, as DFL keeps them. ``cut`` returns the face
image and the uniform matrix from the frame to the face image (``image_to_align_uni_mat``). The
468-point template the aligner fits landmarks to is this stand-in's own (a seeded face-shaped point
cloud); the stand-in FaceMesh model places its output on the same template.
"""

from enum import IntEnum

import cv2
import numpy as np

from ..math import Affine2DMat, Affine2DUniMat, polygon_area, segment_length, segment_to_vector


class ELandmarks2D(IntEnum):
    L5 = 0
    L68 = 1
    L106 = 2
    L468 = 3


def _template_468():
    rng = np.random.RandomState(468)
    angle = rng.uniform(0, 2 * np.pi, 468)
    radius = np.sqrt(rng.uniform(0, 1, 468))
    pts = np.stack([0.5 + 0.5 * radius * np.cos(angle), 0.5 + 0.5 * radius * np.sin(angle)], -1)
    return pts.astype(np.float32)


#: where the stand-in's 468 landmarks sit in a uniform face square
UNI_LANDMARKS_468 = _template_468()
_UNI_RECT = np.float32([[0, 0], [0, 1], [1, 1], [1, 0]])


def _square_cut(to_uni, w, h, coverage, output_size, x_offset=0.0, y_offset=0.0):
    """(pixel mat, uniform mat) cutting a square of ``coverage`` x the face square around its centre."""
    corners = to_uni.invert().transform_points([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)])
    center = corners[4].copy()
    down = segment_to_vector(corners[0], corners[2]).astype(np.float32)
    up = segment_to_vector(corners[3], corners[1]).astype(np.float32)
    reach = segment_length(corners[0], corners[4]) * coverage
    center += (corners[1] - corners[0]).astype(np.float32) * x_offset + (corners[3] - corners[0]).astype(np.float32) * y_offset
    src = np.array([center - down * reach, center + up * reach, center + down * reach], np.float32)
    dst = np.float32([(0, 0), (output_size, 0), (output_size, output_size)])
    mat = Affine2DMat.from_3_pairs(src, dst)
    uni_mat = Affine2DUniMat.from_3_pairs((src / (w, h)).astype(np.float32), np.float32([(0, 0), (1, 0), (1, 1)]))
    return mat, uni_mat


class FRect:
    """A (possibly rotated) face rectangle as 4 uniform points: 0 top-left, 1 bottom-left, 2 bottom-right, 3 top-right."""

    def __init__(self):
        self._pts = None

    @staticmethod
    def from_4pts(pts):
        pts = np.array(pts, np.float32)
        if pts.shape != (4, 2):
            raise ValueError("pts must have (4,2) shape")
        rect = FRect()
        rect._pts = pts
        return rect

    @staticmethod
    def from_ltrb(ltrb):
        left, top, right, bottom = ltrb
        return FRect.from_4pts([[left, top], [left, bottom], [right, bottom], [right, top]])

    def as_4pts(self, w_h=None):
        return self._pts * w_h if w_h is not None else self._pts.copy()

    def get_area(self, w_h=None):
        return polygon_area(self.as_4pts(w_h))

    @staticmethod
    def sort_by_area_size(rects):
        return sorted(rects, key=lambda rect: rect.get_area(), reverse=True)

    def cut(self, img, coverage, output_size, x_offset=0, y_offset=0):
        h, w = img.shape[:2]
        to_uni = Affine2DMat.umeyama(self.as_4pts((w, h)), _UNI_RECT, True)
        mat, uni_mat = _square_cut(to_uni, w, h, coverage, output_size, x_offset, y_offset)
        return cv2.warpAffine(img, mat, (output_size, output_size)), uni_mat


class FLandmarks2D:
    """Uniform 2-D landmarks of one face."""

    def __init__(self):
        self._type = None
        self._ulmrks = None

    @staticmethod
    def create(type, ulmrks):
        lmrks = FLandmarks2D()
        lmrks._type = type
        lmrks._ulmrks = np.asarray(ulmrks, np.float32)
        return lmrks

    def get_type(self):
        return self._type

    def as_numpy(self, w_h=None):
        return self._ulmrks * w_h if w_h is not None else self._ulmrks.copy()

    def transform(self, mat, invert=False):
        if invert:
            mat = mat.invert()
        pts = cv2.transform(self._ulmrks[:, None, :], np.asarray(mat)).reshape(-1, 2)
        return FLandmarks2D.create(self._type, pts)

    def calc_cut(self, h_w, coverage, output_size, exclude_moving_parts=False, head_yaw=None, x_offset=0, y_offset=0,
                 freeze_z_rotation=False):
        if self._type != ELandmarks2D.L468:
            raise NotImplementedError("the stand-in aligns 468-point landmarks only")
        h, w = h_w
        to_uni = Affine2DMat.umeyama((self._ulmrks * (w, h)).astype(np.float32), UNI_LANDMARKS_468)
        if head_yaw is not None:
            x_offset += -(head_yaw * np.abs(np.tanh(head_yaw * 2))) * 0.5
        return _square_cut(to_uni, w, h, coverage, output_size, x_offset, y_offset)

    def cut(self, img, coverage, output_size, exclude_moving_parts=False, head_yaw=None, x_offset=0, y_offset=0,
            freeze_z_rotation=False):
        h, w = img.shape[:2]
        mat, uni_mat = self.calc_cut((h, w), coverage, output_size, exclude_moving_parts, head_yaw, x_offset, y_offset)
        return cv2.warpAffine(img, mat, (output_size, output_size)), uni_mat

    def get_convexhull_mask(self, h_w, color=(1,), dtype=np.float32):
        h, w = h_w
        mask = np.zeros((h, w, len(color)), dtype=dtype)
        cv2.fillConvexPoly(mask, cv2.convexHull((self._ulmrks * h_w).astype(np.int32)), color)
        return mask


class FPose:
    """Head pitch, yaw and roll in radians."""

    def __init__(self):
        self._radians = None

    def as_radians(self):
        return self._radians

    @staticmethod
    def from_radians(pitch, yaw, roll):
        pose = FPose()
        pose._radians = np.float32([pitch, yaw, roll])
        return pose

    @staticmethod
    def from_3D_468_landmarks(lmrks):
        across = lmrks[454] - lmrks[234]
        down = lmrks[152] - lmrks[6]
        rows = np.empty((3, 3))
        rows[0] = across / (np.linalg.norm(across) or 1.0)
        rows[1] = down / (np.linalg.norm(down) or 1.0)
        rows[2] = np.cross(rows[0], rows[1])
        pitch = np.arctan2(rows[2, 1], rows[2, 2])
        yaw = np.arctan2(-rows[2, 0], np.hypot(rows[2, 1], rows[2, 2]))
        roll = np.arctan2(rows[1, 0], rows[0, 0])
        return FPose.from_radians(pitch, yaw * 2, roll)


__all__ = ["ELandmarks2D", "FLandmarks2D", "FPose", "FRect", "UNI_LANDMARKS_468"]
