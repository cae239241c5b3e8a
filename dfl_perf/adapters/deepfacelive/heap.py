"""DeepFaceLive's shared frame heap, sized by need instead of 2 GB.

DFL keeps every image of every frame (the frame, aligned faces, masks, swapped faces, the merged
frame) in one ``BackendWeakHeap(size_mb=2048)``: a ring in a ``multiprocessing.RawArray``, where a new
image overwrites the oldest and a stale reference then reads as missing. ``RawArray`` zero-fills its
memory, so all 2 GB are resident from the moment the app starts, whatever the frame size.

The patch (``patch_weak_heap_class``, on ``xlib.mp.MPWeakHeap``) keeps DFL's heap and its block
layout (an unpatched process reading or writing it stays correct) and changes two things:

- the shared memory is reserved without being touched (``lazy_heap.shared_bytes``; the reservation is
  DFL's size, or ``--frame-heap-mb``): a page costs memory only once the ring reaches it;
- the ring wraps at a limit kept in shared memory, so every process sees the same one. A fixed
  ``frame_heap_mb`` is the limit. Otherwise the limit follows the need: at least ``FLOOR_BLOCKS``
  times the largest image written so far (a bigger frame, e.g. a resolution change, raises it before
  that image is written), and at least ``LAG_MARGIN`` times the largest distance, in bytes written,
  between an image's write and a successful read of it. It only grows, up to the reservation.

``heap_stats(heap)`` reads the limit, the bytes written, the largest read lag and the reads that
found their image overwritten (the count that must stay 0).
"""

from __future__ import annotations

import logging
import struct
import uuid
from typing import Any, Dict, Optional

__all__ = ["patch_weak_heap_class", "heap_stats", "FLOOR_BLOCKS", "LAG_MARGIN", "MIN_LIMIT_MB"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

#: the ring holds at least this many of the largest image (a frame's images, times the frames in flight)
FLOOR_BLOCKS = 48
#: the ring is at least this many times the largest write-to-read distance seen
LAG_MARGIN = 3
MIN_LIMIT_MB = 16
_MB = 1024 * 1024
_HEAD = struct.Struct("q")
_BLOCK = struct.Struct("qq16s")
_CONTROL = "_dfl_perf_ring"
# control fields (int64 each) in shared memory
_LIMIT, _WRITTEN, _MAX_LAG, _MAX_BLOCK, _LOST, _AUTO, _GROWS = range(7)


def _shared_memory(module: Any, size: int) -> Any:
    """DFL's ``MPSharedMemory`` over an array whose pages a fresh mapping leaves untouched (``lazy_heap``)."""
    from dfl_perf.adapters.deepfacelive.lazy_heap import shared_bytes

    cls = module.MPSharedMemory  # DFL's MPWeakHeap module imports it
    shared = cls.__new__(cls)
    shared.__dict__.update(_size=size, _ar=shared_bytes(size))
    shared.__dict__["_mv"] = memoryview(shared._ar).cast("B")
    return shared


def _control(heap: Any) -> Optional[Any]:
    return heap.__dict__.get(_CONTROL)


def heap_stats(heap: Any) -> Dict[str, int]:
    """The ring's figures (bytes): limit, reserved, written, max_lag, max_block, lost reads, growths; {} if unpatched."""
    ctl = _control(heap)
    if ctl is None:
        return {}
    return {"limit": ctl[_LIMIT], "reserved": heap._heap_size, "written": ctl[_WRITTEN], "max_lag": ctl[_MAX_LAG],
            "max_block": ctl[_MAX_BLOCK], "lost_reads": ctl[_LOST], "auto": ctl[_AUTO], "grows": ctl[_GROWS]}


def _init(heap: Any, module: Any, size_mb: int, fixed_mb: Optional[int]) -> None:
    import multiprocessing

    reserved = int(fixed_mb if fixed_mb else size_mb) * _MB
    limit = reserved if fixed_mb else min(reserved, MIN_LIMIT_MB * _MB)
    heap._heap_size = reserved
    heap._shared_mem = _shared_memory(module, reserved)
    heap._lock = multiprocessing.Lock()
    heap._ring_head_block_offset = 0
    heap._first_block_offset = 8
    heap._block_header_size = heap._block_data_start_offset = _BLOCK.size
    ctl = multiprocessing.RawArray("q", 8)
    ctl[_LIMIT], ctl[_AUTO] = limit, 0 if fixed_mb else 1
    heap.__dict__[_CONTROL] = ctl
    mv = heap._shared_mem.get_mv()
    _HEAD.pack_into(mv, 0, heap._first_block_offset)
    _BLOCK.pack_into(mv, heap._first_block_offset, limit - heap._first_block_offset, 0, uuid.uuid4().bytes)
    if limit < reserved:  # the rest is one valid block, so that DFL's own add_data can still walk the heap
        _BLOCK.pack_into(mv, limit, reserved - limit, 0, uuid.uuid4().bytes)


def _grow(heap: Any, ctl: Any, want: int) -> None:
    """Raise the ring's limit to ``want`` bytes (8-aligned, at most the reservation); called under the heap lock."""
    want = min(heap._heap_size, (int(want) + 7) & ~7)
    if want <= ctl[_LIMIT]:
        return
    log.debug("dfl_perf: frame heap ring %d -> %d MB", ctl[_LIMIT] // _MB, want // _MB)
    ctl[_LIMIT] = want
    ctl[_GROWS] += 1


def _add_data(heap: Any, ctl: Any, data: Any) -> Any:
    if isinstance(data, memoryview):
        data = data.cast("B")
        size = data.nbytes
    else:
        size = len(data)
    mv = heap._shared_mem.get_mv()
    header, first = heap._block_header_size, heap._first_block_offset
    with heap._lock:
        if size > ctl[_MAX_BLOCK]:
            ctl[_MAX_BLOCK] = size
        if ctl[_AUTO]:
            _grow(heap, ctl, max(FLOOR_BLOCKS * ctl[_MAX_BLOCK], LAG_MARGIN * ctl[_MAX_LAG]))
        limit = ctl[_LIMIT]
        offset = _HEAD.unpack_from(mv, 0)[0]
        passes = 0
        while True:
            if offset >= limit:
                offset = first
            block_size = _HEAD.unpack_from(mv, offset)[0]
            if size <= block_size - header:
                break
            end = offset + block_size
            if end >= limit:  # the ring's last block: start again at the first
                passes += 1
                if offset == first or passes > 2:
                    raise Exception("Not enough space in MPWeakHeap to allocate %d (ring %d bytes)" % (size, limit))
                offset = first
                continue
            next_size = _HEAD.unpack_from(mv, end)[0]  # take the next block in
            _BLOCK.pack_into(mv, end, 0, 0, uuid.uuid4().bytes)
            _HEAD.pack_into(mv, offset, block_size + next_size)
        used = header + size + (-size & 7)
        if block_size - used >= header:
            following = offset + used
            _BLOCK.pack_into(mv, following, block_size - used, 0, uuid.uuid4().bytes)
        else:
            used, following = block_size, offset + block_size
        if following >= limit:
            following = first
        uid = uuid.uuid4().bytes
        _BLOCK.pack_into(mv, offset, used, size, uid)
        _HEAD.pack_into(mv, 0, following)
        seq = ctl[_WRITTEN]
        ctl[_WRITTEN] = seq + size
    start = offset + heap._block_data_start_offset
    mv[start:start + size] = data
    ref = type(heap).DataRef(offset, uid)
    ref.__dict__["_dfl_perf_seq"] = seq
    return ref


def _note_read(heap: Any, ctl: Any, ref: Any, found: bool) -> None:
    if not found:
        with heap._lock:
            ctl[_LOST] += 1
        return
    seq = ref.__dict__.get("_dfl_perf_seq")
    if seq is not None:
        lag = ctl[_WRITTEN] - seq
        if lag > ctl[_MAX_LAG]:
            ctl[_MAX_LAG] = lag  # a lost race here only delays the growth to the next read


def patch_weak_heap_class(module: Any, patcher: Any, config: Any) -> None:
    """Patch ``module.MPWeakHeap`` (DFL's ``xlib.mp.MPWeakHeap``): untouched reservation and a need-sized ring."""
    cls = getattr(module, "MPWeakHeap", None)
    if cls is None or not hasattr(module, "MPSharedMemory") \
            or not all(callable(getattr(cls, name, None)) for name in ("add_data", "get_data")):
        log.warning("dfl_perf: %s has no MPWeakHeap with add_data/get_data; frame heap not sized", module.__name__)
        return
    original_init, original_add, original_get = cls.__init__, cls.add_data, cls.get_data
    fixed_mb = config.frame_heap_mb

    def __init__(self, size_mb, *args, **kwargs):
        if args or kwargs:
            return original_init(self, size_mb, *args, **kwargs)
        _init(self, module, size_mb, fixed_mb)

    def add_data(self, data):
        ctl = _control(self)
        return original_add(self, data) if ctl is None else _add_data(self, ctl, data)

    def get_data(self, data_ref):
        result = original_get(self, data_ref)
        ctl = _control(self)
        if ctl is not None:
            _note_read(self, ctl, data_ref, result is not None)
        return result

    for name, value in (("__init__", __init__), ("add_data", add_data), ("get_data", get_data)):
        value.dfl_perf_original = getattr(cls, name)  # type: ignore[attr-defined]
        patcher.replace(cls, name, value)
    patcher.replace(cls, "dfl_perf_stats", heap_stats)
