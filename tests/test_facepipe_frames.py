"""Frame checks and the in-flight book of the optimized runner (``dfl_perf/facepipe/frames.py``)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dfl_perf.facepipe.frames import BadFrameError, FrameItem, InFlight, check_frame


def _item(i: int) -> FrameItem:
    return FrameItem(i, np.zeros((2, 2, 3), np.uint8))


def test_check_frame_names_the_frame_and_the_fix():
    check_frame(0, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(BadFrameError, match=r"frame 7: .*\(4, 4\) uint8.*cvtColor"):
        check_frame(7, np.zeros((4, 4), np.uint8))


def test_add_waits_at_the_limit_and_resumes_when_a_frame_is_taken():
    book = InFlight(limit=2)
    assert book.add(_item(0)) and book.add(_item(1))
    added = threading.Event()
    waiter = threading.Thread(target=lambda: book.add(_item(2)) and added.set())
    waiter.start()
    assert not added.wait(0.2), "a third frame got in past limit=2"
    item, missed = book.take(0)
    assert item.index == 0 and missed == []
    assert added.wait(5)
    waiter.join(5)
    assert book.peak == 2


def test_cancel_wakes_a_waiting_add_and_refuses_later_ones():
    book = InFlight(limit=1)
    book.add(_item(0))
    result = []
    waiter = threading.Thread(target=lambda: result.append(book.add(_item(1))))
    waiter.start()
    time.sleep(0.1)
    book.cancel()
    waiter.join(5)
    assert not waiter.is_alive() and result == [False]
    assert book.add(_item(2)) is False
    assert [i.index for i in book.take_all()] == [0]


def test_take_returns_the_frames_skipped_below_it():
    book = InFlight()
    for i in range(4):
        book.add(_item(i))
    item, missed = book.take(2)
    assert item.index == 2 and [m.index for m in missed] == [0, 1]
    assert [i.index for i in book.take_all()] == [3]


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be None or >= 1"):
        InFlight(limit=0)
