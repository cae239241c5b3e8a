"""dfl_perf.listeners: callbacks a pool or cache calls when it grows."""

from __future__ import annotations

import logging

import pytest

from dfl_perf.listeners import Listeners


def test_notify_calls_each_listener_in_order_and_survives_a_failing_one(caplog):
    calls = []
    listeners = Listeners()
    listeners.add(lambda *a: calls.append(("first",) + a))

    def broken(*a):
        raise RuntimeError("boom")

    listeners.add(broken)
    listeners.add(lambda *a: calls.append(("last",) + a))
    with caplog.at_level(logging.ERROR, logger="dfl_perf"):
        listeners.notify(7)
    assert calls == [("first", 7), ("last", 7)] and "boom" in caplog.text
    listeners.remove(broken)
    listeners.remove(broken)  # twice, or never added: ignored
    assert len(listeners) == 2
    with pytest.raises(TypeError, match="callable"):
        listeners.add("not a function")


def test_a_listener_may_call_back_into_its_owner():
    listeners = Listeners()
    depth = []

    def again():
        depth.append(1)
        if len(depth) < 3:
            listeners.notify()  # the owner grows again while its listener runs: no deadlock

    listeners.add(again)
    listeners.notify()
    assert len(depth) == 3
