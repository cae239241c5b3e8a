"""A reproducible test clip: a real face moved, scaled and rotated along a known path.

``make_clip`` pastes a square patch around the face of a photo (astronaut.png by default) onto a
seeded smooth background, one affine warp per face per frame (``cv2.warpAffine`` into the face's
rectangle only), so frames are cheap to make and identical for the same arguments. The path
repeats every ``PATH_PERIOD`` (120) frames, so a clip of a multiple of 120 frames loops without a
jump. Several faces each get their own cell of a grid.

Ground truth per frame and face: ``boxes`` (x1, y1, x2, y2), the source face box scaled and moved
with the face (its centre is exact; the box is not widened for the rotation, at most +/-20 deg),
and ``centers``, ``scales``, ``angles`` (degrees, counter-clockwise on screen).

``open_source`` reads frames from a video file or a camera for ``dfl-perf run``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["SyntheticClip", "make_clip", "open_source", "VideoSource", "default_face_image", "ASTRONAUT_FACE_BOX",
           "CLIP_SIZES", "PATH_PERIOD"]

ASTRONAUT_FACE_BOX = (179.0, 63.0, 270.0, 174.0)  # x1, y1, x2, y2 in astronaut.png (and the shipped JPEG)
CLIP_SIZES = ((640, 480), (1280, 720))
_PATCH_SCALE = 2.0  # the pasted patch is this many times the face box's longer side
_FACE_HEIGHT = 0.30  # face box height at scale 1, as a fraction of the cell's shorter side
_SCALE_SWING = 0.25  # scale goes 1 +/- this
_ANGLE_SWING = 20.0  # degrees
PATH_PERIOD = 120  # frames: the path repeats (4 s at 30 fps), whatever the clip's length

ImageArg = Union[None, str, "os.PathLike[str]", np.ndarray]


def default_face_image() -> Path:
    """The face photo shipped with the package (``dfl_perf.facepipe.models.face_photo_path``):
    astronaut.png as a 512x512 JPEG, its face at ``ASTRONAUT_FACE_BOX``."""
    from dfl_perf.facepipe.models import face_photo_path

    return face_photo_path()


def _load_image(image: ImageArg) -> Tuple[np.ndarray, bool]:
    """(BGR uint8 image, is it the default astronaut)."""
    import cv2

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("image must be (H, W, 3) uint8 BGR, got %s %s" % (image.shape, image.dtype))
        return image, False
    path = Path(image) if image is not None else default_face_image()
    if not path.is_file():
        raise FileNotFoundError("face image not found: %s" % path)
    frame = cv2.imread(str(path), cv2.IMREAD_COLOR)  # imread gives BGR, also for an RGB PNG
    if frame is None:
        raise ValueError("cannot read face image %s (not an image OpenCV can decode)" % path)
    return frame, image is None


def _detect_face_box(image: np.ndarray) -> Tuple[float, float, float, float]:
    from dfl_perf.facepipe.detector import FaceDetector

    faces = FaceDetector("yunet_n_320_320").detect(image)
    if not faces:
        raise ValueError("no face found in the given image; pass face_box=(x1, y1, x2, y2)")
    return faces[0].box


def _background(size: Tuple[int, int], rng: np.random.RandomState) -> np.ndarray:
    import cv2

    w, h = size
    coarse = rng.randint(60, 200, size=(max(2, h // 40), max(2, w // 40), 3)).astype(np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


class SyntheticClip:
    """Frames (uint8 BGR, made on demand or cached by ``to_list``) and ground truth per face.

    ``clip[i]`` is frame i (a new array); iterating yields (frame, boxes (faces, 4)).
    """

    def __init__(self, size: Tuple[int, int], frames: int, faces: int, image: np.ndarray,
                 face_box: Sequence[float], seed: int) -> None:
        if frames < 1 or faces < 1:
            raise ValueError("frames and faces must be >= 1, got %r, %r" % (frames, faces))
        self.size = (int(size[0]), int(size[1]))
        self.num_frames = int(frames)
        self.num_faces = int(faces)
        self.seed = int(seed)
        rng = np.random.RandomState(seed)
        self._background = _background(self.size, rng)
        self._patch, self._patch_center, box_size = self._cut_patch(image, face_box)
        self.centers, self.scales, self.angles = self._paths(rng)
        k = self._pixel_scale(box_size)  # frame px per source px at scale 1
        half = np.asarray(box_size, dtype=np.float64) * 0.5 * k * self.scales[..., None]
        self.boxes = np.concatenate([self.centers - half, self.centers + half], axis=-1).astype(np.float32)
        self._k = k
        self._cache: Optional[List[np.ndarray]] = None

    # -- set-up ---------------------------------------------------------------------------------

    @staticmethod
    def _cut_patch(image: np.ndarray, box: Sequence[float]):
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (x2 > x1 and y2 > y1):
            raise ValueError("face_box must be (x1, y1, x2, y2) with x2 > x1 and y2 > y1, got %s" % (tuple(box),))
        cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        half = max(x2 - x1, y2 - y1) * _PATCH_SCALE * 0.5
        h, w = image.shape[:2]
        px0, py0 = max(0, int(cx - half)), max(0, int(cy - half))
        px1, py1 = min(w, int(math.ceil(cx + half))), min(h, int(math.ceil(cy + half)))
        patch = np.ascontiguousarray(image[py0:py1, px0:px1])
        return patch, (cx - px0, cy - py0), (x2 - x1, y2 - y1)

    def _grid(self) -> Tuple[int, int]:
        cols = int(math.ceil(math.sqrt(self.num_faces)))
        return cols, int(math.ceil(self.num_faces / cols))

    def _pixel_scale(self, box_size: Tuple[float, float]) -> float:
        cols, rows = self._grid()
        cell = min(self.size[0] / cols, self.size[1] / rows)
        return _FACE_HEIGHT * cell / box_size[1]

    def _paths(self, rng: np.random.RandomState) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.size
        cols, rows = self._grid()
        cw, ch = w / cols, h / rows
        u = np.arange(self.num_frames, dtype=np.float64)[:, None] / PATH_PERIOD  # (T, 1)
        phase = rng.uniform(0, 2 * math.pi, size=(4, self.num_faces))
        freq = rng.randint(1, 3, size=(2, self.num_faces))
        face_h = _FACE_HEIGHT * min(cw, ch) * (1 + _SCALE_SWING)
        reach = face_h * 0.75  # half the rotated box's extent at the largest scale, with margin
        idx = np.arange(self.num_faces)
        cell_cx = (idx % cols + 0.5) * cw
        cell_cy = (idx // cols + 0.5) * ch
        ax, ay = max(0.0, cw / 2 - reach), max(0.0, ch / 2 - reach)
        cx = cell_cx + ax * np.sin(2 * math.pi * freq[0] * u + phase[0])
        cy = cell_cy + ay * np.sin(2 * math.pi * freq[1] * u + phase[1])
        scales = 1.0 + _SCALE_SWING * np.sin(2 * math.pi * u + phase[2])
        angles = _ANGLE_SWING * np.sin(2 * math.pi * u + phase[3])
        return np.stack([cx, cy], axis=-1), scales, angles

    # -- frames ---------------------------------------------------------------------------------

    def matrix(self, index: int, face: int = 0) -> np.ndarray:
        """2x3 matrix from the patch to frame ``index`` for ``face``."""
        k = self._k * self.scales[index, face]
        a = math.radians(self.angles[index, face])
        c, s = k * math.cos(a), k * math.sin(a)
        px, py = self._patch_center
        fx, fy = self.centers[index, face]
        return np.array([[c, s, fx - c * px - s * py], [-s, c, fy + s * px - c * py]], dtype=np.float64)

    def render(self, index: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Make frame ``index`` (into ``out`` when given, an (H, W, 3) uint8 array)."""
        import cv2

        if not 0 <= index < self.num_frames:
            raise IndexError("frame %d out of range 0..%d" % (index, self.num_frames - 1))
        if out is None:
            out = self._background.copy()
        else:
            np.copyto(out, self._background)
        ph, pw = self._patch.shape[:2]
        corners = np.array([[0, 0, 1], [pw, 0, 1], [0, ph, 1], [pw, ph, 1]], dtype=np.float64)
        w, h = self.size
        for face in range(self.num_faces):
            M = self.matrix(index, face)
            pts = corners @ M.T
            x0, y0 = max(0, int(pts[:, 0].min())), max(0, int(pts[:, 1].min()))
            x1, y1 = min(w, int(math.ceil(pts[:, 0].max())) + 1), min(h, int(math.ceil(pts[:, 1].max())) + 1)
            if x1 <= x0 or y1 <= y0:
                continue
            M[:, 2] -= (x0, y0)
            cv2.warpAffine(self._patch, M, (x1 - x0, y1 - y0), dst=out[y0:y1, x0:x1],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        return out

    def to_list(self) -> List[np.ndarray]:
        """All frames, made once and kept (about W*H*3 bytes each)."""
        if self._cache is None:
            self._cache = [self.render(i) for i in range(self.num_frames)]
        return self._cache

    def __len__(self) -> int:
        return self.num_frames

    def __getitem__(self, index: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[index]
        return self.render(index if index >= 0 else index + self.num_frames)

    def __iter__(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        for i in range(self.num_frames):
            yield self[i], self.boxes[i]


def make_clip(size: Tuple[int, int] = (640, 480), frames: int = 120, faces: int = 1, image: ImageArg = None,
              seed: int = 0, face_box: Optional[Sequence[float]] = None) -> SyntheticClip:
    """The test clip: ``faces`` copies of the face in ``image`` (default astronaut.png) along a seeded path.

    ``face_box`` (x1, y1, x2, y2) locates the face in ``image``; default: the known astronaut box, or
    YuNet (registry model ``yunet_n_320_320``) for another image.
    """
    picture, is_astronaut = _load_image(image)
    if face_box is None:
        face_box = ASTRONAUT_FACE_BOX if is_astronaut else _detect_face_box(picture)
    return SyntheticClip(size, frames, faces, picture, face_box, seed)


class VideoSource:
    """Frames from a video file or a camera (an int, or a string of digits), with what is known of them.

    ``fps``, ``size`` (w, h) and ``frame_count`` (None for a camera or when the container does not
    say) are read when opened. Iterating yields BGR uint8 frames; ``loop`` restarts a file at its
    end. Raises FileNotFoundError / ValueError naming the source when it cannot be opened or
    yields no frame. ``close()`` (or a ``with`` block) releases the device or file.
    """

    def __init__(self, source: Union[int, str, os.PathLike[str]], loop: bool = False,
                 max_frames: Optional[int] = None) -> None:
        import cv2

        if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
            target: Union[int, str] = int(source)
            self.description = "camera %d" % int(source)
        else:
            path = Path(source)
            if not path.is_file():
                raise FileNotFoundError("video file not found: %s" % path)
            target, self.description = str(path), "video file %s" % path
        self.is_camera = isinstance(target, int)
        self.loop, self.max_frames = loop, max_frames
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise ValueError("cannot open %s (unsupported format, or no such device)" % self.description)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else 30.0
        self.size = (int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count: Optional[int] = None if self.is_camera or count <= 0 else count
        if max_frames is not None and self.frame_count is not None:
            self.frame_count = min(self.frame_count, max_frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        cap, count = self._cap, 0
        while self.max_frames is None or count < self.max_frames:
            ok, frame = cap.read()
            if not ok:
                if count == 0:
                    raise ValueError("%s gave no frame (unreadable or empty)" % self.description)
                if self.loop and not self.is_camera:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, frame = cap.read()
                if not ok:
                    return
            count += 1
            yield frame

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_source(source: Union[int, str, os.PathLike[str]], loop: bool = False,
                max_frames: Optional[int] = None) -> Iterator[np.ndarray]:
    """Yield BGR uint8 frames from a video file or a camera; see ``VideoSource``."""
    with VideoSource(source, loop=loop, max_frames=max_frames) as video:
        yield from video
