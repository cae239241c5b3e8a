"""Shared memory every spawned worker maps: a ``multiprocessing.RawArray`` and a byte memoryview of it."""

import multiprocessing


class MPSharedMemory:
    def __init__(self, size):
        self._size = size
        self._ar = multiprocessing.RawArray("B", size)
        self._mv = memoryview(self._ar).cast("B")

    def get_ar(self):
        return self._ar

    def get_mv(self):
        return self._mv

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_mv"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._mv = memoryview(self._ar).cast("B")
