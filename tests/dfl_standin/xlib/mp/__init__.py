"""Like DFL's xlib.mp: importing it forces the spawn start method; the shared-memory primitives."""

import multiprocessing

if multiprocessing.get_start_method(allow_none=True) != "spawn":
    multiprocessing.set_start_method("spawn", force=True)

from .MPSharedMemory import MPSharedMemory  # noqa: E402
from .MPSPSCMRRingData import MPSPSCMRRingData  # noqa: E402
from .MPWeakHeap import MPWeakHeap  # noqa: E402

__all__ = ["MPSharedMemory", "MPSPSCMRRingData", "MPWeakHeap"]
