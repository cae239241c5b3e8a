"""Optional landmark stage: MediaPipe FaceMesh (468 points) or Peppa slim-160 (68 points).

Both crop a square around the detected face (``box_scale`` times the box's longer side, centred
on the box, turned upright by the eye line when the face's keypoints are known), run the model on
the crop and map the points back to frame pixels.

Input scaling, checked on astronaut.png (15 rotated/scaled copies, points compared with YuNet's
eyes/nose/mouth, and 4 non-face crops):
- FaceMesh: RGB scaled to 0..1 (MediaPipe's own graph does this). RGB -1..1 gives points as good
  (mean error 4.9% vs 5.0% of the face width) but separates faces from non-faces worse: face-score
  logits >= 25.9 on faces either way, up to +0.6 on a non-face crop with -1..1 vs at most -4.4 with 0..1.
- Peppa: BGR, (x - 127) / 127. RGB points are about as good (5.2% vs 5.4%), but the model's last
  output (a face score) is 5.9 on faces and <= -0.3 off faces in BGR, 2.0 and <= 0.2 in RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from dfl_perf.facepipe._session import ModelArg, ensure_session
from dfl_perf.facepipe.align import invert_affine, transform_points
from dfl_perf.facepipe.detector import Face

__all__ = ["Landmarks", "FaceMeshLandmarker", "PeppaLandmarker", "crop_matrix"]

BoxOrFace = Union[Face, Sequence[float]]


@dataclass(eq=False)
class Landmarks:
    """Landmarks of one face in frame pixels: ``points`` (K, 2) float32, ``score`` 0..1 when the model gives one."""

    points: np.ndarray
    score: Optional[float] = None
    depth: Optional[np.ndarray] = None  # FaceMesh z per point, in frame-pixel scale


def crop_matrix(box: Sequence[float], size: int, box_scale: float, angle: float = 0.0) -> np.ndarray:
    """2x3 matrix frame -> (size x size) crop: a square of ``box_scale`` x the box's longer side,
    centred on the box, rotated by ``-angle`` radians (so a face tilted by ``angle`` comes out upright)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * box_scale
    if side <= 0:
        raise ValueError("face box must have a positive size, got %s" % (tuple(box),))
    k = size / side
    c, s = math.cos(angle) * k, math.sin(angle) * k
    cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
    half = size * 0.5
    return np.array([[c, s, half - c * cx - s * cy], [-s, c, half + s * cx - c * cy]], dtype=np.float64)


def _box_and_angle(face: BoxOrFace, rotate: bool) -> Tuple[Sequence[float], float]:
    if isinstance(face, Face):
        angle = 0.0
        if rotate:
            (ax, ay), (bx, by) = face.keypoints[0], face.keypoints[1]
            angle = math.atan2(float(by - ay), float(bx - ax))
        return face.box, angle
    box = tuple(float(v) for v in face)
    if len(box) != 4:
        raise ValueError("face must be a Face or an (x1, y1, x2, y2) box, got %r" % (face,))
    return box, 0.0


class _CropLandmarker:
    size = 0
    box_scale = 1.0
    expected_input = ""

    def __init__(self, model: ModelArg, rotate: bool = True, providers: Optional[Sequence[Any]] = None) -> None:
        self.session = ensure_session(model, providers)
        self.rotate = rotate
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or list(inputs[0].shape)[1:] != [3, self.size, self.size]:
            raise ValueError("%s needs one input [1,3,%d,%d] (%r), got %s" % (
                type(self).__name__, self.size, self.size, self.expected_input,
                [(i.name, i.shape) for i in inputs]))
        self.input_name = inputs[0].name
        self.input_shape = (1, 3, self.size, self.size)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def preprocess(self, frame: np.ndarray, face: BoxOrFace, out: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
        """(input blob [1,3,S,S] float32, crop matrix); with ``out`` the blob is written there."""
        import cv2

        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("frame must be (H, W, 3) uint8 BGR, got %s %s" % (frame.shape, frame.dtype))
        box, angle = _box_and_angle(face, self.rotate)
        M = crop_matrix(box, self.size, self.box_scale, angle)
        crop = cv2.warpAffine(frame, M, (self.size, self.size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        if out is None:
            out = np.empty(self.input_shape, dtype=np.float32)
        elif out.shape != self.input_shape or out.dtype != np.float32:
            raise ValueError("out must be float32 %s, got %s %s" % (self.input_shape, out.dtype, out.shape))
        self._normalise(crop, out[0])
        return out, M

    def _normalise(self, crop: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError

    def run(self, blob: np.ndarray) -> List[np.ndarray]:
        """Run the session; outputs in the session's order."""
        return self.session.run(None, {self.input_name: blob})

    def decode(self, outputs: Sequence[np.ndarray], M: np.ndarray) -> Landmarks:
        raise NotImplementedError

    def detect(self, frame: np.ndarray, face: BoxOrFace) -> Landmarks:
        """Landmarks of one face (a ``Face`` or an (x1, y1, x2, y2) box) in frame pixels."""
        blob, M = self.preprocess(frame, face)
        return self.decode(self.run(blob), M)

    def detect_many(self, frame: np.ndarray, faces: Sequence[BoxOrFace]) -> List[Landmarks]:
        """``detect`` for each face (the models take one face per run)."""
        return [self.detect(frame, face) for face in faces]


class FaceMeshLandmarker(_CropLandmarker):
    """MediaPipe FaceMesh: 468 points (+ depth) and a face score, from a 1.5x crop at 192x192, RGB 0..1."""

    size = 192
    box_scale = 1.5
    expected_input = "input_1"

    def _normalise(self, crop: np.ndarray, out: np.ndarray) -> None:
        np.divide(crop[:, :, ::-1].transpose(2, 0, 1), 255.0, out=out, dtype=np.float32)

    def decode(self, outputs: Sequence[np.ndarray], M: np.ndarray) -> Landmarks:
        """Landmarks from the raw outputs ([1,1,1,1404] points, [1,1,1,1] score logit) and the crop matrix."""
        pts = np.asarray(outputs[0], dtype=np.float32).reshape(468, 3)
        inv = invert_affine(M)
        points = transform_points(pts[:, :2], inv).astype(np.float32)
        scale = math.sqrt(abs(np.linalg.det(inv[:, :2])))
        score = 1.0 / (1.0 + math.exp(-float(np.clip(np.asarray(outputs[1]).ravel()[0], -50, 50))))
        return Landmarks(points=points, score=score, depth=pts[:, 2] * np.float32(scale))


class PeppaLandmarker(_CropLandmarker):
    """Peppa slim-160: 68 points (iBUG order) from a 1.4x crop at 160x160, BGR (x - 127) / 127."""

    size = 160
    box_scale = 1.4
    expected_input = "input1"

    def _normalise(self, crop: np.ndarray, out: np.ndarray) -> None:
        np.subtract(crop.transpose(2, 0, 1), 127.0, out=out, dtype=np.float32)
        out /= np.float32(127.0)

    def decode(self, outputs: Sequence[np.ndarray], M: np.ndarray) -> Landmarks:
        """Landmarks from the raw output ([1,143]: 68 (x, y) in 0..1 of the crop first) and the crop matrix."""
        values = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        pts = values[:136].reshape(68, 2) * np.float32(self.size)
        return Landmarks(points=transform_points(pts, invert_affine(M)).astype(np.float32))
