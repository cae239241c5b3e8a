"""DeepFaceLive's 2 GiB frame heap without writing 2 GiB of zeros at start-up.

DFL's window makes one ``BackendWeakHeap(size_mb=2048)`` before it starts any worker: its
``xlib.mp.MPSharedMemory`` asks ``multiprocessing.RawArray('B', size)``, which maps a fresh
shared-memory file and then ``memset``s all of it to zero. A fresh mapping already reads as zeros,
so that memset only touches every page: measured 1.8 s on the critical path of this 2-core
machine, and the whole 2 GiB resident from the first second. ``shared_bytes`` gives the same
array (same type, same pickling to the workers, zero-filled) and skips the memset when the block
is a newly made arena, which the OS hands out zeroed; pages are then touched as frames fill them.
"""

from __future__ import annotations

import ctypes
from typing import Any

__all__ = ["shared_bytes", "patch_shared_memory_module"]


def shared_bytes(size: int) -> Any:
    """``multiprocessing.RawArray('B', size)``, zero-filled, without touching pages a fresh mapping has zeroed."""
    from multiprocessing import heap, sharedctypes

    arenas = getattr(getattr(heap.BufferWrapper, "_heap", None), "_arenas", None)
    new_value = getattr(sharedctypes, "_new_value", None)
    if arenas is None or new_value is None:  # another Python's multiprocessing: the documented way
        return sharedctypes.RawArray("B", size)
    before = len(arenas)
    array = new_value(ctypes.c_ubyte * size)
    block = array._wrapper._state[0]  # (arena, start, stop)
    fresh = len(arenas) > before and block[0] is arenas[-1] and block[1] == 0
    if not fresh:  # carved from memory used before: clear it, as RawArray does
        ctypes.memset(ctypes.addressof(array), 0, ctypes.sizeof(array))
    return array


def patch_shared_memory_module(module: Any, patcher: Any) -> None:
    """Make ``MPSharedMemory`` (module ``xlib.mp.MPSharedMemory``) allocate through ``shared_bytes``."""
    cls = getattr(module, "MPSharedMemory", None)
    init = getattr(cls, "__init__", None)
    if init is None or not hasattr(cls, "get_ar"):
        return

    def __init__(self, size):
        self._size = size
        self._ar = shared_bytes(size)
        self._mv = memoryview(self._ar).cast("B")

    __init__.__doc__ = init.__doc__
    patcher.replace(cls, "__init__", __init__)
