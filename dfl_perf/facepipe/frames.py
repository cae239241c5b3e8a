"""Frames on their way through the reference workload's runners: checks and bookkeeping."""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set

import numpy as np

__all__ = ["BadFrameError", "check_frame", "FrameItem", "InFlight"]


class BadFrameError(ValueError):
    """A frame from the source is not a non-empty (H, W, 3) uint8 BGR numpy array."""


def check_frame(index: int, frame: Any) -> None:
    """Raise ``BadFrameError`` naming frame ``index`` and what it is, unless it is (H, W, 3) uint8 BGR."""
    if not isinstance(frame, np.ndarray):
        raise BadFrameError("frame %d: expected an (H, W, 3) uint8 BGR numpy array, got %s"
                            % (index, "None" if frame is None else type(frame).__name__))
    shape, dtype = tuple(frame.shape), frame.dtype
    if len(shape) == 3 and shape[2] == 3 and dtype == np.uint8 and shape[0] > 0 and shape[1] > 0:
        return
    hint = ""
    if len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 4)):
        hint = " (grey or BGRA: convert it with cv2.cvtColor)"
    elif dtype != np.uint8 and len(shape) == 3 and shape[2] == 3:
        hint = " (scale it to 0-255 and convert with .astype(np.uint8))"
    elif 0 in shape:
        hint = " (an empty image)"
    raise BadFrameError("frame %d: expected (H, W, 3) uint8 BGR, got %s %s%s" % (index, shape, dtype, hint))


class FrameItem:
    """One frame on its way through the optimized pipeline; holds its pooled buffers."""

    __slots__ = ("index", "frame", "mats", "crops", "celebs", "masks", "output")

    def __init__(self, index: int, frame: np.ndarray) -> None:
        self.index = index
        self.frame = frame
        self.mats: List[np.ndarray] = []
        self.crops: Optional[np.ndarray] = None
        self.celebs: Optional[np.ndarray] = None
        self.masks: Optional[np.ndarray] = None
        self.output: Optional[np.ndarray] = None


class InFlight:
    """The frames of a run that are alive, by id (ids count from 0 in submission order).

    The pipeline yields exactly one result per id, so each item leaves through ``take`` (or
    ``take_all`` when a run stops early). ``limit`` bounds how many frames are alive at once, from
    the source to the end of the sink: ``wait_for_room`` (call it before taking a frame from the
    source) and ``add`` wait for room (``cancel`` wakes them), and a frame taken for the sink keeps
    its place until ``finish``, so the frame-sized buffers a run holds stay bounded whatever the
    queues do.
    """

    def __init__(self, limit: Optional[int] = None) -> None:
        if limit is not None and limit < 1:
            raise ValueError("limit must be None or >= 1, got %r" % (limit,))
        self.limit = limit
        self._changed = threading.Condition()
        self._items: Dict[int, FrameItem] = {}
        self._finishing: Set[int] = set()  # taken for the sink, not finished
        self._cancelled = False

    def wait_for_room(self) -> bool:
        """Wait while ``limit`` frames are alive; False once cancelled."""
        with self._changed:
            return self._wait_for_room()

    def admit(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """The frames of ``frames``, each taken from it only once there is room (ends when cancelled)."""
        source = iter(frames)
        while self.wait_for_room():
            try:
                frame = next(source)
            except StopIteration:
                return
            yield frame

    def add(self, item: FrameItem) -> bool:
        """Hold ``item`` (waiting while ``limit`` frames are alive); False once cancelled."""
        with self._changed:
            if not self._wait_for_room():
                return False
            self._items[item.index] = item
            return True

    def _wait_for_room(self) -> bool:
        while (self.limit is not None and len(self._items) + len(self._finishing) >= self.limit
               and not self._cancelled):
            self._changed.wait()
        return not self._cancelled

    def cancel(self) -> None:
        """Wake a waiting ``add`` or ``wait_for_room`` and refuse later ones (the run is stopping)."""
        with self._changed:
            self._cancelled = True
            self._changed.notify_all()

    def take(self, frame_id: int) -> Optional[FrameItem]:
        """The item of ``frame_id`` (None if it was never added); it keeps its place until ``finish``."""
        with self._changed:
            item = self._items.pop(frame_id, None)
            if item is not None:
                self._finishing.add(frame_id)
            return item

    def finish(self, frame_id: int) -> None:
        """The sink is done with a taken frame: its place is free."""
        with self._changed:
            self._finishing.discard(frame_id)
            self._changed.notify_all()

    def take_all(self) -> List[FrameItem]:
        """Every item still held (a run that stopped early), emptying the book."""
        with self._changed:
            items, self._items = list(self._items.values()), {}
            self._finishing.clear()
            self._changed.notify_all()
            return items
