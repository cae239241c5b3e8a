"""Frames on their way through the reference workload's runners: checks and bookkeeping."""

from __future__ import annotations

import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["BadFrameError", "check_frame", "FrameItem"]


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
    """Frames submitted and not yet accounted for, by id (ids count from 0 in submission order).

    Results arrive in id order, so when result ``n`` arrives, frames below ``n`` that are still
    here were dropped unread from a full output (live mode): their pooled buffers must go back.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Dict[int, FrameItem] = {}
        self._next = 0

    def add(self, item: FrameItem) -> None:
        with self._lock:
            self._items[item.index] = item

    def take(self, frame_id: int) -> Tuple[Optional[FrameItem], List[FrameItem]]:
        """(the item of ``frame_id``, the items below it that were skipped)."""
        with self._lock:
            missed = [self._items.pop(k) for k in range(self._next, frame_id) if k in self._items]
            self._next = max(self._next, frame_id + 1)
            return self._items.pop(frame_id, None), missed

    def take_all(self) -> List[FrameItem]:
        with self._lock:
            items, self._items = list(self._items.values()), {}
            return items
