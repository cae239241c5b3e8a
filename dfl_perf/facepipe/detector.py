"""YuNet face detection through onnxruntime, with our own vectorised decoding and NMS.

The model takes ``input`` [1,3,H,W] float32, BGR 0..255, no normalisation. The frame is scaled
(aspect kept, ``cv2.resize``) into the top-left corner of the H x W input and the rest is zero.
Its 12 outputs are ``cls_s``, ``obj_s``, ``bbox_s``, ``kps_s`` for strides s = 8, 16, 32, one row
per grid cell (row-major). Decoding follows OpenCV's ``FaceDetectorYN``: score = sqrt(cls * obj)
(each clipped to 0..1), centre = (cell + offset) * s, size = exp(d) * s, keypoint = (cell + k) * s.

``detect`` = ``preprocess`` + ``run`` + ``decode``; the three are public so that an optimized
loop can write the input into a pooled buffer (``preprocess(frame, out=buf)``), run it through
its own IOBinding runner, and decode the outputs, with the same result as ``detect``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from dfl_perf.facepipe._session import ModelArg, ensure_session

__all__ = ["Face", "FaceDetector", "nms", "box_iou"]

STRIDES = (8, 16, 32)
_DEFAULT_INPUT_SIZE = (640, 640)

Outputs = Union[Sequence[np.ndarray], Mapping[str, np.ndarray]]


@dataclass(eq=False)
class Face:
    """One detected face, in frame pixels.

    ``keypoints`` (5, 2) float32: the eye on the image's left, the other eye, nose tip, the mouth
    corner on the image's left, the other mouth corner (OpenCV's YuNet order).
    """

    box: Tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def center(self) -> Tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return ((x1 + x2) * 0.5, (y1 + y2) * 0.5)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


def box_iou(box: Sequence[float], boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box against an (N, 4) array of boxes."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(box[0], boxes[:, 0])
    iy1 = np.maximum(box[1], boxes[:, 1])
    ix2 = np.minimum(box[2], boxes[:, 2])
    iy2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = 5000) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


_THREAD = threading.local()


def _resize_buffer(shape: Tuple[int, int, int]) -> np.ndarray:
    """This thread's reusable uint8 buffer of ``shape`` for the scaled frame."""
    buf = getattr(_THREAD, "resized", None)
    if buf is None or buf.shape != shape:
        buf = _THREAD.resized = np.empty(shape, np.uint8)
    return buf


class FaceDetector:
    """YuNet detector: ``detect(frame_bgr) -> List[Face]``.

    ``model``: an onnxruntime session (the caller chose its options), a path, or a registry name.
    ``input_size`` (W, H) is used only when the model's input shape is not fixed.
    """

    def __init__(self, model: ModelArg, score_threshold: float = 0.6, nms_threshold: float = 0.3,
                 top_k: int = 5000, input_size: Optional[Tuple[int, int]] = None,
                 providers: Optional[Sequence[Any]] = None) -> None:
        self.session = ensure_session(model, providers)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        inp = self.session.get_inputs()
        if len(inp) != 1:
            raise ValueError("YuNet model must have 1 input, got %d: %s" % (len(inp), [i.name for i in inp]))
        self.input_name = inp[0].name
        width, height = self._input_size(inp[0], input_size)
        self.input_shape = (1, 3, height, width)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._index = self._output_index(self.output_names)
        self._grids = self._make_grids(width, height)

    # -- set-up ---------------------------------------------------------------------------------

    @staticmethod
    def _input_size(inp: Any, input_size: Optional[Tuple[int, int]]) -> Tuple[int, int]:
        shape = list(inp.shape)
        if len(shape) != 4 or shape[1] not in (3, None) and not isinstance(shape[1], str):
            raise ValueError("YuNet input %r must be [1,3,H,W], got %s" % (inp.name, shape))
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            width, height = shape[3], shape[2]
        else:
            width, height = input_size or _DEFAULT_INPUT_SIZE
        if width % 32 or height % 32:
            raise ValueError("YuNet input size must be a multiple of 32, got %dx%d" % (width, height))
        return int(width), int(height)

    @staticmethod
    def _output_index(names: List[str]) -> Dict[str, int]:
        wanted = ["%s_%d" % (kind, s) for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        missing = [w for w in wanted if w not in names]
        if missing:
            raise ValueError("not a YuNet model: outputs %s missing (model has %s)" % (missing, names))
        return {w: names.index(w) for w in wanted}

    @staticmethod
    def _make_grids(width: int, height: int) -> Dict[int, np.ndarray]:
        grids = {}
        for s in STRIDES:
            rows, cols = np.mgrid[0:height // s, 0:width // s]
            grids[s] = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)  # (n, 2) x, y
        return grids

    # -- the three steps ------------------------------------------------------------------------

    def preprocess(self, frame: np.ndarray, out: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, Tuple[float, float]]:
        """Letterbox ``frame`` (H, W, 3) uint8 BGR into the model input.

        Returns (input blob [1,3,H,W] float32, (sx, sy) = input pixels per frame pixel). With
        ``out`` (a float32 array of the input shape) the blob is written there and no array is
        allocated for it.
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("frame must be (H, W, 3) uint8 BGR, got %s %s" % (frame.shape, frame.dtype))
        _, _, in_h, in_w = self.input_shape
        h, w = frame.shape[:2]
        scale = min(in_w / w, in_h / h)
        new_w, new_h = max(1, min(in_w, int(round(w * scale)))), max(1, min(in_h, int(round(h * scale))))
        out_given = out is not None
        if out is None:
            out = np.zeros(self.input_shape, dtype=np.float32)
        else:
            if out.shape != self.input_shape or out.dtype != np.float32:
                raise ValueError("out must be float32 %s, got %s %s" % (self.input_shape, out.dtype, out.shape))
            out[0, :, new_h:, :] = 0
            out[0, :, :new_h, new_w:] = 0
        if (new_w, new_h) != (w, h):
            import cv2

            # with ``out`` (the pooled path) the scaled frame goes to a per-thread buffer too
            dst = _resize_buffer((new_h, new_w, 3)) if out_given else None
            frame = cv2.resize(frame, (new_w, new_h), dst=dst, interpolation=cv2.INTER_LINEAR)
        np.copyto(out[0, :, :new_h, :new_w], frame.transpose(2, 0, 1))
        return out, (new_w / w, new_h / h)

    def run(self, blob: np.ndarray) -> List[np.ndarray]:
        """Run the session on a preprocessed blob; outputs in the session's order."""
        return self.session.run(None, {self.input_name: blob})

    def decode(self, outputs: Outputs, scale: Tuple[float, float] = (1.0, 1.0)) -> List[Face]:
        """Faces from the 12 raw outputs (a list in session order, or a dict by name), best first.

        ``scale`` is the second value returned by ``preprocess``.
        """
        boxes, scores, kps = self._decode_arrays(outputs)
        if not scores.size:
            return []
        sx, sy = scale
        boxes /= np.array([sx, sy, sx, sy], dtype=np.float32)
        kps /= np.array([sx, sy], dtype=np.float32)
        keep = nms(boxes, scores, self.nms_threshold, self.top_k)
        return [Face(box=tuple(float(v) for v in boxes[i]), score=float(scores[i]), keypoints=kps[i])
                for i in keep]

    def detect(self, frame: np.ndarray) -> List[Face]:
        """Faces in a BGR uint8 frame, best score first, in frame pixels."""
        blob, scale = self.preprocess(frame)
        return self.decode(self.run(blob), scale)

    # -- decoding -------------------------------------------------------------------------------

    def _get(self, outputs: Outputs, name: str) -> np.ndarray:
        if isinstance(outputs, Mapping):
            return np.asarray(outputs[name])
        return np.asarray(outputs[self._index[name]])

    def _decode_arrays(self, outputs: Outputs) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(outputs, Mapping) and len(outputs) != len(self.output_names):
            raise ValueError("expected %d YuNet outputs, got %d" % (len(self.output_names), len(outputs)))
        all_boxes, all_scores, all_kps = [], [], []
        for s in STRIDES:
            grid = self._grids[s]
            cls = self._get(outputs, "cls_%d" % s).reshape(-1)
            obj = self._get(outputs, "obj_%d" % s).reshape(-1)
            if cls.size != grid.shape[0]:
                raise ValueError("output cls_%d has %d cells, expected %d for input %s"
                                 % (s, cls.size, grid.shape[0], self.input_shape))
            score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
            sel = np.flatnonzero(score >= self.score_threshold)
            if not sel.size:
                continue
            cells = grid[sel]
            bbox = self._get(outputs, "bbox_%d" % s).reshape(-1, 4)[sel]
            centre = (cells + bbox[:, :2]) * s
            half = np.exp(bbox[:, 2:4]) * (s * 0.5)
            all_boxes.append(np.concatenate([centre - half, centre + half], axis=1))
            kps = self._get(outputs, "kps_%d" % s).reshape(-1, 5, 2)[sel]
            all_kps.append((kps + cells[:, None, :]) * s)
            all_scores.append(score[sel])
        if not all_scores:
            empty = np.zeros((0,), np.float32)
            return empty.reshape(0, 4), empty, empty.reshape(0, 5, 2)
        return (np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32),
                np.concatenate(all_kps).astype(np.float32))
