"""Keep the C allocator's freed blocks for reuse (glibc), so a frame loop stops faulting its memory in again.

glibc's malloc serves large blocks with ``mmap`` and gives freed memory back to the kernel once the
free space at the top of its heap passes a threshold that it adjusts as it goes. A frame loop that
allocates and frees a few MB of arrays every frame (a merged frame, warped faces, masks, heap copies)
then touches fresh pages every frame: each first touch is a page fault, kernel time counted in the
process's CPU. In the stand-in DFL's launched FaceMerger at 640x480 that was 1,185 faults a frame
(15 with this setting; benchmarks/RESULTS.md, bench_adapters.py with ``launched:--no-malloc-reuse``). ``retain_freed_memory`` fixes both thresholds
(blocks below ``mmap_threshold`` come from the heap; up to ``trim_threshold`` of free heap top stays
mapped), so a frame's arrays reuse the previous frame's pages. The process keeps at most
``trim_threshold`` more memory than it uses at the moment.

Only glibc has these controls (``mallopt``); elsewhere (Windows, macOS, musl) nothing changes and the
call returns False. The setting lasts for the process (glibc has no way to read the old values back).
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["retain_freed_memory", "glibc_version", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: blocks smaller than this come from the heap (glibc's own upper limit for it on 64-bit systems)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free space at the heap's top kept mapped
TRIM_THRESHOLD = 64 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def glibc_version() -> Optional[str]:
    """This process's glibc version ('2.36'), or None when the C library is not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    return text.split(" ", 1)[1]


def retain_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Make glibc keep freed blocks below ``mmap_threshold`` for reuse; True if it took both settings."""
    if mmap_threshold < 0 or trim_threshold < 0:
        raise ValueError("thresholds must be >= 0, got mmap %d, trim %d" % (mmap_threshold, trim_threshold))
    if glibc_version() is None:
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))
