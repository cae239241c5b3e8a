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


def test_add_waits_at_the_limit_and_resumes_when_a_taken_frame_is_finished():
    book = InFlight(limit=2)
    assert book.add(_item(0)) and book.add(_item(1))
    added = threading.Event()
    waiter = threading.Thread(target=lambda: book.add(_item(2)) and added.set(), daemon=True)
    waiter.start()
    assert not added.wait(0.2), "a third frame got in past limit=2"
    item, missed = book.take(0)
    assert item.index == 0 and missed == []
    book.finish(0)
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


def test_a_taken_frame_keeps_its_place_until_finished():
    book = InFlight(limit=1)
    book.add(_item(0))
    item, _ = book.take(0)
    assert item.index == 0
    room = threading.Event()
    waiter = threading.Thread(target=lambda: book.wait_for_room() and room.set(), daemon=True)
    waiter.start()
    assert not room.wait(0.2), "room while the sink still has frame 0"
    book.finish(0)
    assert room.wait(5)
    waiter.join(5)


def test_admit_takes_a_frame_from_the_source_only_when_there_is_room():
    book = InFlight(limit=2)
    taken = []

    def source():
        for i in range(5):
            taken.append(i)
            yield i

    admitted = book.admit(source())
    for i in range(2):
        assert next(admitted) == i
        book.add(_item(i))
    got = []
    feeder = threading.Thread(target=lambda: got.append(next(admitted)), daemon=True)
    feeder.start()
    time.sleep(0.2)
    assert taken == [0, 1], "a frame was read from the source with no room for it"
    book.take(0)
    book.finish(0)
    feeder.join(5)
    assert got == [2] and taken == [0, 1, 2]
    book.cancel()
    assert list(admitted) == []
