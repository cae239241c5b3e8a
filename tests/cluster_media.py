"""Small videos for the ``--ray`` tests: written with OpenCV (no audio) or PyAV (with an AAC track)."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

SIZE = (320, 240)
FPS = 30


def clip_frames(frames: int, seed: int = 0) -> List[np.ndarray]:
    from dfl_perf.facepipe.clip import make_clip

    return make_clip(size=SIZE, frames=frames, seed=seed).to_list()


def write_video(path: Path, frames: List[np.ndarray], fourcc: str = "MJPG") -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened(), "this OpenCV cannot write %s" % fourcc
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_video_with_audio(path: Path, frames: List[np.ndarray], tone_hz: float = 440.0) -> Path:
    """An MP4 (MPEG-4 video, AAC audio as long as the video) made with PyAV."""
    import av

    rate = 44100
    with av.open(str(path), "w") as out:
        video = out.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        samples = int(rate * len(frames) / FPS)
        t = np.arange(samples) / rate
        tone = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None]
        chunk = 1024
        for start in range(0, samples, chunk):
            block = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + chunk]), format="fltp",
                                               layout="mono")
            block.sample_rate = rate
            block.pts = start
            for packet in audio.encode(block):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def read_frames(path: Path) -> List[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def max_difference(a: List[np.ndarray], b: List[np.ndarray]) -> int:
    assert len(a) == len(b), "frame counts differ: %d vs %d" % (len(a), len(b))
    return max(int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()) for x, y in zip(a, b))
