"""What a ``dfl-perf run --ray`` job will do, decided on the driver before Ray starts: which videos
(files, or the videos of a folder), where each output goes, and the frame ranges each is cut into.

Nothing here imports Ray; probing a video opens it with OpenCV (no frame is decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

__all__ = ["ClusterJobError", "VideoPlan", "FrameRange", "VIDEO_EXTENSIONS", "expand_sources", "output_paths",
           "probe_video", "split_ranges", "default_range_frames"]

#: extensions taken from a folder given as a source
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
#: range length bounds (frames): short enough to spread a video over many workers and to retry
#: cheaply, long enough that opening, seeking and finishing a segment stay a small share
MIN_RANGE_FRAMES, MAX_RANGE_FRAMES = 16, 600


class ClusterJobError(RuntimeError):
    """A ``--ray`` job cannot start or did not finish: says what, naming the video and frames."""


@dataclass(frozen=True)
class VideoPlan:
    """One source video and its output."""

    index: int
    source: str
    output: str
    frames: int  # frames to process (the container's count, capped by --max-frames)
    fps: float
    size: Tuple[int, int]  # (w, h)
    capped: bool = False  # --max-frames cut it short: never read past ``frames``


@dataclass(frozen=True)
class FrameRange:
    """Frames ``start`` .. ``stop - 1`` of video ``video``; ``order`` is its place in the whole job."""

    order: int
    video: int
    source: str
    start: int
    stop: int
    to_end: bool  # the video's last range, uncapped: reads on to the end if the container undercounted

    def describe(self) -> str:
        return "video %s, frames %d-%d" % (self.source, self.start, self.stop - 1)


def expand_sources(sources: Sequence[str]) -> List[Path]:
    """Files as given, folders replaced by their videos (sorted by name); at least one video."""
    found: List[Path] = []
    for text in sources:
        path = Path(text)
        if path.is_dir():
            videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                raise ClusterJobError("source folder %s holds no video (looked for %s)"
                                      % (path, ", ".join(VIDEO_EXTENSIONS)))
            found.extend(videos)
        elif path.is_file():
            found.append(path)
        else:
            raise ClusterJobError("video file not found: %s" % path)
    if not found:
        raise ClusterJobError("no source given")
    return found


def output_paths(sources: Sequence[Path], output: str, writable: Sequence[str]) -> List[Path]:
    """One output per source: ``output`` itself for a single file source, else ``output/<name>``.

    ``writable``: the extensions the writer can produce; a source of another kind is written as .mp4.
    """
    out = Path(output)
    if len(sources) == 1 and out.suffix and not out.is_dir():
        return [out]
    if out.suffix and not out.is_dir():
        raise ClusterJobError("%d sources need --output to be a folder, got the file name %s" % (len(sources), out))
    paths = [out / (s.stem + (s.suffix.lower() if s.suffix.lower() in writable else ".mp4")) for s in sources]
    seen = {}
    for source, path in zip(sources, paths):
        if path in seen:
            raise ClusterJobError("two sources would be written to %s: %s and %s" % (path, seen[path], source))
        if path.resolve() == source.resolve():
            raise ClusterJobError("output %s would overwrite its source" % path)
        seen[path] = source
    return paths


def probe_video(index: int, source: Path, output: Path, max_frames: Optional[int] = None) -> VideoPlan:
    """Open ``source`` (OpenCV) and read its frame count, rate and size; clear errors for bad files."""
    import cv2

    if not os.access(str(source), os.R_OK):
        raise ClusterJobError("video file %s is not readable (permissions)" % source)
    cap = cv2.VideoCapture(str(source))
    try:
        if not cap.isOpened():
            raise ClusterJobError("cannot open video file %s (not a video OpenCV can read, or corrupt)" % source)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        ok = cap.grab()  # one compressed frame, not decoded to BGR: is there a first frame at all?
    finally:
        cap.release()
    if not ok or count <= 0 or size[0] <= 0 or size[1] <= 0:
        raise ClusterJobError("video file %s has no readable frame (empty, or corrupt)" % source)
    capped = max_frames is not None and max_frames < count
    if capped:
        count = max_frames
    rate = float(fps) if fps and 1 <= fps <= 1000 else 30.0
    return VideoPlan(index, str(source), str(output), count, rate, size, capped)


def default_range_frames(total_frames: int, workers: int) -> int:
    """About four ranges per worker (load balance, cheap retries), within MIN/MAX_RANGE_FRAMES."""
    per = -(-total_frames // max(1, 4 * workers))
    return max(MIN_RANGE_FRAMES, min(MAX_RANGE_FRAMES, per))


def split_ranges(videos: Sequence[VideoPlan], range_frames: int) -> List[FrameRange]:
    """Every video cut into ranges of ``range_frames`` (the last one shorter), in job order."""
    if range_frames < 1:
        raise ValueError("range_frames must be >= 1, got %r" % (range_frames,))
    ranges: List[FrameRange] = []
    for video in videos:
        starts = list(range(0, video.frames, range_frames))
        for k, start in enumerate(starts):
            stop = min(start + range_frames, video.frames)
            to_end = k == len(starts) - 1 and not video.capped
            ranges.append(FrameRange(len(ranges), video.index, video.source, start, stop, to_end))
    return ranges
