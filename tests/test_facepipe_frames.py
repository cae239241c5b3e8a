"""Frame checks and the in-flight book of the optimized runner (``dfl_perf/facepipe/frames.py``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dfl_perf.facepipe.frames import BadFrameError, FrameItem, InFlight, check_frame


def _item(i: int) -> FrameItem:
    return FrameItem(i, np.zeros((2, 2, 3), np.uint8))


class _SignallingCondition(threading.Condition):
    """A Condition that says when a thread starts to wait on it: a test then knows that the thread
    blocks, instead of hoping that a sleep was long enough for it to get there."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout=None):
        self.waiting.set()
        return super().wait(timeout)


def _book(limit=None) -> InFlight:
    book = InFlight(limit=limit)
    book._changed = _SignallingCondition()  # observe the book's waits (see the class)
    return book


def _blocked(book: InFlight, fn) -> threading.Thread:
    """Run ``fn`` on a thread and return once it waits in the book (fails if it never does)."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    assert book._changed.waiting.wait(5), "the thread never waited for room"
    return thread


def test_check_frame_names_the_frame_and_the_fix():
    check_frame(0, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(BadFrameError, match=r"frame 7: .*\(4, 4\) uint8.*cvtColor"):
        check_frame(7, np.zeros((4, 4), np.uint8))
    with pytest.raises(BadFrameError, match=r"frame 2: .*got None"):
        check_frame(2, None)


def test_add_waits_at_the_limit_and_resumes_when_a_taken_frame_is_finished():
    book = _book(limit=2)
    assert book.add(_item(0)) and book.add(_item(1))
    added = threading.Event()
    waiter = _blocked(book, lambda: book.add(_item(2)) and added.set())
    assert not added.is_set(), "a third frame got in past limit=2"
    assert book.take(0).index == 0
    assert not added.is_set(), "a frame taken for the sink still holds its place"
    book.finish(0)
    assert added.wait(5)
    waiter.join(5)
    assert sorted(i.index for i in book.take_all()) == [1, 2]


def test_cancel_wakes_a_waiting_add_and_refuses_later_ones():
    book = _book(limit=1)
    book.add(_item(0))
    result = []
    waiter = _blocked(book, lambda: result.append(book.add(_item(1))))
    book.cancel()
    waiter.join(5)
    assert not waiter.is_alive() and result == [False]
    assert book.add(_item(2)) is False
    assert [i.index for i in book.take_all()] == [0]


def test_take_gives_each_item_once():
    book = InFlight()
    for i in range(4):
        book.add(_item(i))
    assert book.take(2).index == 2
    assert book.take(2) is None and book.take(9) is None
    assert sorted(i.index for i in book.take_all()) == [0, 1, 3]
    assert book.take_all() == []


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be None or >= 1"):
        InFlight(limit=0)


def test_admit_takes_a_frame_from_the_source_only_when_there_is_room():
    book = _book(limit=2)
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
    feeder = _blocked(book, lambda: got.append(next(admitted)))
    assert taken == [0, 1], "a frame was read from the source with no room for it"
    book.take(0)
    book.finish(0)
    feeder.join(5)
    assert got == [2] and taken == [0, 1, 2]
    book.cancel()
    assert list(admitted) == []
