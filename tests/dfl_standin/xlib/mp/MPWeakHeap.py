"""A shared-memory ring heap with weak references, shaped like DFL's ``xlib.mp.MPWeakHeap``.

Layout (DFL's, so that dfl_perf's heap patch meets the same memory): offset 0 holds the offset of
the ring's head block; blocks tile ``[8, heap_size)``, each a 32-byte header (int64 block size,
int64 data size, 16-byte id) and its data, 8-byte aligned. ``add_data`` takes the head block, merging
following blocks until the data fits, and wraps to the first block at the end of the heap: old data
is overwritten without notice. ``get_data`` returns a copy of the data, or None once the block's id
changed (the image was overwritten), as DFL's does.
"""

import multiprocessing
import struct
import uuid

from .MPSharedMemory import MPSharedMemory

_HEAD = struct.Struct("q")  # also a block's leading size field
_BLOCK = struct.Struct("qq16s")


class MPWeakHeap:
    class DataRef:
        def __init__(self, block_offset, uuid):
            self._block_offset = block_offset
            self._uuid = uuid

    def __init__(self, size_mb):
        self._heap_size = size_mb * 1024 * 1024
        self._shared_mem = MPSharedMemory(self._heap_size)
        self._lock = multiprocessing.Lock()
        self._ring_head_block_offset = 0
        self._first_block_offset = 8
        self._block_header_size = _BLOCK.size
        self._block_data_start_offset = _BLOCK.size
        mv = self._shared_mem.get_mv()
        _HEAD.pack_into(mv, self._ring_head_block_offset, self._first_block_offset)
        _BLOCK.pack_into(mv, self._first_block_offset, self._heap_size - self._first_block_offset, 0, uuid.uuid4().bytes)

    def add_data(self, data):
        if isinstance(data, memoryview):
            data = data.cast("B")
            size = data.nbytes
        else:
            size = len(data)
        mv = self._shared_mem.get_mv()
        with self._lock:
            offset = _HEAD.unpack_from(mv, self._ring_head_block_offset)[0]
            while True:
                block_size = _BLOCK.unpack_from(mv, offset)[0]
                if size <= block_size - self._block_header_size:
                    break
                end = offset + block_size
                if end >= self._heap_size:  # the last block: start again at the first one
                    if offset == self._first_block_offset:
                        raise Exception("Not enough space in MPWeakHeap to allocate %d" % size)
                    offset = self._first_block_offset
                    continue
                next_size = _BLOCK.unpack_from(mv, end)[0]  # swallow the next block
                _BLOCK.pack_into(mv, end, 0, 0, uuid.uuid4().bytes)
                _HEAD.pack_into(mv, offset, block_size + next_size)
            used = self._block_header_size + size + (-size & 7)
            rest = block_size - used
            if rest >= self._block_header_size:
                following = offset + used
                _BLOCK.pack_into(mv, following, rest, 0, uuid.uuid4().bytes)
            else:
                used = block_size
                following = offset + block_size
                if following >= self._heap_size:
                    following = self._first_block_offset
            uid = uuid.uuid4().bytes
            _BLOCK.pack_into(mv, offset, used, size, uid)
            _HEAD.pack_into(mv, self._ring_head_block_offset, following)
        start = offset + self._block_data_start_offset
        mv[start:start + size] = data
        return MPWeakHeap.DataRef(offset, uid)

    def _block_id(self, mv, offset):
        with self._lock:
            _, size, uid = _BLOCK.unpack_from(mv, offset)
        return size, uid

    def has_data(self, data_ref):
        """True while the referenced data is not overwritten (no copy; the stand-in's accounting only)."""
        return self._block_id(self._shared_mem.get_mv(), data_ref._block_offset)[1] == data_ref._uuid

    def get_data(self, data_ref):
        mv = self._shared_mem.get_mv()
        size, uid = self._block_id(mv, data_ref._block_offset)
        if uid != data_ref._uuid:
            return None
        start = data_ref._block_offset + self._block_data_start_offset
        result = bytearray(size)
        memoryview(result)[:] = mv[start:start + size]
        if self._block_id(mv, data_ref._block_offset)[1] != data_ref._uuid:
            return None
        return result
