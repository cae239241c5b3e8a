"""DeepFaceLive's way of running the reference workload: the baseline every benchmark compares with.

DFL-built sessions (``SessionConfig.dfl_default``: onnxruntime's defaults, spinning thread pools),
one sequential loop, fresh arrays for every step, DFL's merge (the whole frame as float32), and
DFL's live loop (a camera thread keeps only the newest frame).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

import numpy as np

from dfl_perf.facepipe.frames import check_frame
from dfl_perf.facepipe.job import FrameSink, RunStats, Workload, paced_frames

__all__ = ["BaselineRunner", "merge_face_dfl_style", "run_live_latest"]


# ------------------------------------------------------------------------------- DFL's merge

def merge_face_dfl_style(frame: np.ndarray, celeb: np.ndarray, mask: np.ndarray, M: np.ndarray,
                         erode: int = 5, blur: int = 25) -> np.ndarray:
    """The merge as DFL's FaceMerger does it: the whole frame, face and mask as float32 frames.

    Same feathering and blend as ``merge.merge_face`` (so results agree within a level or two), but
    with DFL's footprint: about four full-frame float32 arrays per face.
    """
    import cv2

    from dfl_perf.facepipe.merge import feather_mask

    h, w = frame.shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    frame_f = frame.astype(np.float32) * (1.0 / 255.0)
    alpha = cv2.warpAffine(feather_mask(mask, erode, blur), M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    face = cv2.warpAffine(celeb.astype(np.float32), M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)
    alpha = alpha[:, :, None]
    out = frame_f * (1.0 - alpha) + face * alpha
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------- baseline

class BaselineRunner:
    """DFL's way: DFL-built sessions, a sequential loop, fresh arrays per step, full-frame float merge."""

    def __init__(self, workload: Workload, provider: str = "CPUExecutionProvider", device_id: int = 0) -> None:
        from dfl_perf.buffers import DFMRunner
        from dfl_perf.facepipe.detector import FaceDetector
        from dfl_perf.sessions import SessionConfig, create_session

        self.workload = workload
        config = SessionConfig.dfl_default(provider, device_id)
        t0 = time.perf_counter()
        self.detector = FaceDetector(create_session(workload.detector_path(), config))
        self.swapper = DFMRunner(create_session(workload.dfm_path(), config), io_binding=False)  # DFL's session.run
        self.session_seconds = time.perf_counter() - t0
        self.resolution = self.swapper.resolution

    def process(self, frame: np.ndarray) -> np.ndarray:
        """One frame through detect → align → swap (one face at a time, as DFL) → merge."""
        from dfl_perf.facepipe.align import align_matrix, warp_face

        w = self.workload
        out = frame
        for face in self.detector.detect(frame)[: w.max_faces]:
            M = align_matrix(face.keypoints, self.resolution, w.coverage)
            crop = warp_face(frame, M, self.resolution)
            swapped = self.swapper.run(crop, w.morph_factor)
            out = merge_face_dfl_style(out, swapped.celeb_face[0], swapped.celeb_face_mask[0] * swapped.face_mask[0], M)
        if out is frame:
            out = frame.copy()  # DFL's merger always hands on a new frame
        return out

    def run(self, frames: Iterable[np.ndarray], sink: Optional[FrameSink] = None) -> RunStats:
        """Process every frame in order; ``sink(index, frame)`` receives each output frame."""
        stats = RunStats(started=time.perf_counter())
        for index, frame in enumerate(frames):
            check_frame(index, frame)
            t0 = time.perf_counter()
            out = self.process(frame)
            t1 = time.perf_counter()
            stats.latencies.append(t1 - t0)
            stats.completions.append(t1)
            stats.frames += 1
            if sink is not None:
                sink(index, out)
        stats.finished = time.perf_counter()
        return stats

    def close(self) -> None:
        self.detector = self.swapper = None  # type: ignore[assignment]


# ------------------------------------------------------------------------------- live loop

def run_live_latest(process: Callable[[np.ndarray], Any], frames: Sequence[np.ndarray], fps: float,
                    duration: float) -> RunStats:
    """DFL's live loop: a camera thread keeps only the newest frame; a sequential loop takes it when ready.

    Latency is capture (the camera handing the frame over) to the end of ``process``; frames the loop
    never took count in ``not_done``.
    """
    cond = threading.Condition()
    slot: Dict[str, Any] = {"seq": -1, "frame": None, "ts": 0.0, "end": False}
    stop = threading.Event()

    def camera() -> None:
        for seq, frame in enumerate(paced_frames(frames, fps, duration, stop)):
            with cond:
                slot.update(seq=seq, frame=frame, ts=time.perf_counter())
                cond.notify()
        with cond:
            slot["end"] = True
            cond.notify()

    thread = threading.Thread(target=camera, name="live-camera", daemon=True)
    stats = RunStats(started=time.perf_counter())
    thread.start()
    taken = -1
    try:
        while True:
            with cond:
                cond.wait_for(lambda last=taken: slot["seq"] != last or slot["end"])
                if slot["seq"] == taken:
                    break
                frame, captured, taken = slot["frame"], slot["ts"], slot["seq"]
            process(frame)
            now = time.perf_counter()
            stats.latencies.append(now - captured)
            stats.completions.append(now)
            stats.frames += 1
    finally:
        stop.set()
        thread.join()
    stats.finished = time.perf_counter()
    stats.not_done = taken + 1 - stats.frames
    return stats
