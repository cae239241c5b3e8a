"""What a ``--ray`` worker does with one frame range: decode it from the source, swap the faces
frame by frame, encode it into a segment of the output's format, and hand the segment's bytes back.

Nothing here imports Ray (the actor in ``job.py`` wraps it), so it runs and is tested on its own.
The per-frame steps are ``dfl_perf.facepipe``'s (detect, align, swap, merge) with the local
runner's session settings (tuned, one thread each), so a frame comes out as it does from a local
``dfl-perf run``. No step keeps state from one frame to the next, which is what lets a range start
anywhere in a video.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR
from dfl_perf.cluster.plan import FrameRange

__all__ = ["FrameSwapper", "SegmentResult", "RangeCancelled", "RangeReadError", "encode_range", "remove_stale_segments"]

#: seconds between two progress reports of a worker
REPORT_EVERY = 0.25
#: a range's segment is written in ``<temp>/dfl_perf_range_<pid>_*/`` while it is encoded
SEGMENT_DIR_PREFIX = "dfl_perf_range_"


class RangeReadError(RuntimeError):
    """A range of a video could not be decoded (the message names the video and the frames)."""


class RangeCancelled(Exception):
    """The job was cancelled while this range was being processed."""


class FrameSwapper:
    """One frame in, the same frame with its faces swapped out; sessions built once.

    ``detector``/``dfm``: model bytes or paths. ``provider``: as for ``dfl-perf run`` (None: best).
    The steps and their settings are the local runner's (``OptimizedRunner``): tuned sessions with
    one thread, the DFM through ``DFMRunner`` with IOBinding, the face quantised in crop space.
    """

    def __init__(self, detector: Any, dfm: Any, provider: Optional[str] = None, max_faces: int = 1,
                 coverage: float = 2.2, morph_factor: float = DEFAULT_MORPH_FACTOR) -> None:
        from dfl_perf.buffers import DFMRunner
        from dfl_perf.devices import select_providers
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.sessions import SessionConfig, create_session

        providers = select_providers(provider) if provider else select_providers()
        config = SessionConfig.tuned(threads=1, providers=providers)  # the local runner's sessions
        self.detector = FaceDetector(create_session(detector, config))
        self.dfm = DFMRunner(create_session(dfm, config))
        self.provider = providers[0][0]
        self.max_faces, self.coverage, self.morph_factor = max_faces, coverage, morph_factor

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Swap the faces of ``frame`` (H, W, 3) uint8 BGR, in place; returns it."""
        import cv2

        from dfl_perf.facepipe.align import align_matrix, warp_face
        from dfl_perf.facepipe.merge import merge_faces

        res = self.dfm.resolution
        faces = self.detector.detect(frame)[: self.max_faces]
        if not faces:
            return frame
        mats = [align_matrix(face.keypoints, res, self.coverage) for face in faces]
        out = self.dfm.run(np.stack([warp_face(frame, m, res) for m in mats]), self.morph_factor)
        masks = out.celeb_face_mask[..., 0] * out.face_mask[..., 0]
        celebs = [cv2.convertScaleAbs(face, alpha=255.0) for face in out.celeb_face]  # quantised in crop space
        return merge_faces(frame, celebs, masks, mats, out=frame)

    def close(self) -> None:
        self.dfm.close()


def remove_stale_segments() -> int:
    """Remove the segment folders of worker processes that are gone (killed mid-range); returns how many."""
    import glob
    import shutil

    removed = 0
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), SEGMENT_DIR_PREFIX + "*_*")):
        pid = os.path.basename(folder)[len(SEGMENT_DIR_PREFIX):].split("_")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass
class SegmentResult:
    """A range's encoded frames and how it went."""

    order: int
    data: bytes
    frames: int
    seconds: float  # decode + swap + encode of the range, in the worker
    node: str = ""


def _open_range(source: str, start: int, what: str) -> Any:
    import cv2

    if not os.path.isfile(source):
        raise RangeReadError("%s: the video file is not there on this worker (%s)" % (what, source))
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise RangeReadError("%s: cannot open the video on this worker" % what)
    if start:
        cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        if int(round(cap.get(cv2.CAP_PROP_POS_FRAMES))) != start:  # a container without exact seeking
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            for index in range(start):
                if not cap.grab():
                    cap.release()
                    raise RangeReadError("%s: the video ends at frame %d" % (what, index))
    return cap


def encode_range(rng: FrameRange, fps: float, size: Sequence[int], suffix: str,
                 swap: Callable[[np.ndarray], np.ndarray],
                 report: Optional[Callable[[int], bool]] = None, node: str = "") -> SegmentResult:
    """Decode ``rng`` from its source, ``swap`` every frame, encode them as a ``suffix`` segment.

    ``report(frames_done)`` is called every ``REPORT_EVERY`` s and at the end; when it returns
    False the job is cancelled: the segment is removed and ``RangeCancelled`` raised. A range that
    decodes fewer frames than planned is an error unless it is the video's last (``to_end``), and
    a frame of the wrong size is one too.
    """
    from dfl_perf.headless import open_writer

    started = time.perf_counter()
    what = rng.describe()
    cap = _open_range(rng.source, rng.start, what)
    folder = tempfile.mkdtemp(prefix="%s%d_" % (SEGMENT_DIR_PREFIX, os.getpid()))
    path = os.path.join(folder, "segment%s" % suffix)
    writer = None
    done, last_report = 0, started
    try:
        writer = open_writer(path, fps, tuple(size))
        while rng.to_end or rng.start + done < rng.stop:
            ok, frame = cap.read()
            if not ok:
                break
            if (frame.shape[1], frame.shape[0]) != tuple(size):
                raise RangeReadError("%s: frame %d is %dx%d, the video's first frames are %dx%d"
                                     % (what, rng.start + done, frame.shape[1], frame.shape[0], size[0], size[1]))
            writer.write(swap(frame))
            done += 1
            now = time.perf_counter()
            if report is not None and now - last_report >= REPORT_EVERY:
                last_report = now
                if not report(done):
                    raise RangeCancelled(what)
        if rng.start + done < rng.stop and not rng.to_end:
            raise RangeReadError("%s: only %d of %d frames could be decoded (the video is truncated or corrupt "
                                 "after frame %d)" % (what, done, rng.stop - rng.start, rng.start + done - 1))
        if done == 0:
            raise RangeReadError("%s: no frame could be decoded (the video is truncated or corrupt)" % what)
        writer.release()
        writer = None
        with open(path, "rb") as fh:
            data = fh.read()
        if report is not None and not report(done):
            raise RangeCancelled(what)
        return SegmentResult(rng.order, data, done, time.perf_counter() - started, node)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)
