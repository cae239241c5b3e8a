"""A single-producer ring of byte records in shared memory, with DFL's ``MPSPSCMRRingData`` interface.

Write and read ids live in shared memory; ``read`` takes the next unread record (waiting up to
``timeout`` on an event), ``get_by_id`` peeks any recent one. Records are copied in and out.
"""

import multiprocessing
import struct
import uuid

_IDS = struct.Struct("QQ")
_ENTRY = struct.Struct("QQ16s")


class MPSPSCMRRingData:
    def __init__(self, table_size, heap_size_mb, multi_producer=False):
        from .MPSharedMemory import MPSharedMemory

        self._table_size = table_size
        self._heap_size = heap_size_mb * 1024 * 1024
        self._write_lock = multiprocessing.Lock() if multi_producer else None
        self._event = multiprocessing.Event()
        self._table_offset = _IDS.size
        self._heap_offset = self._table_offset + table_size * _ENTRY.size
        self._shared_mem = MPSharedMemory(self._heap_offset + self._heap_size)
        mv = self._shared_mem.get_mv()
        _IDS.pack_into(mv, 0, 0, 0)
        _ENTRY.pack_into(mv, self._table_offset, 0, 0, uuid.uuid4().bytes)

    def get_write_id(self):
        return _IDS.unpack_from(self._shared_mem.get_mv(), 0)[0]

    def get_read_id(self):
        return _IDS.unpack_from(self._shared_mem.get_mv(), 0)[1]

    def _entry_offset(self, record_id):
        return self._table_offset + (record_id % self._table_size) * _ENTRY.size

    def write(self, data):
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise ValueError("data must be non-empty bytes or bytearray")
        need = 16 + len(data)
        need += -need & 7
        if need > self._heap_size:
            raise Exception("data_size more than heap_size")
        mv = self._shared_mem.get_mv()
        stamp = uuid.uuid4().bytes
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            write_id = self.get_write_id()
            offset, size, _ = _ENTRY.unpack_from(mv, self._entry_offset(write_id))
            offset += 16 + size
            offset += -offset & 7
            if offset + need >= self._heap_size:
                offset = 0
            start = self._heap_offset + offset
            mv[start:start + 16] = stamp
            mv[start + 16:start + 16 + len(data)] = data
            write_id += 1
            _ENTRY.pack_into(mv, self._entry_offset(write_id), offset, len(data), stamp)
            struct.pack_into("Q", mv, 0, write_id)
        finally:
            if self._write_lock is not None:
                self._write_lock.release()
        self._event.set()

    def get_by_id(self, record_id):
        mv = self._shared_mem.get_mv()
        offset, size, stamp = _ENTRY.unpack_from(mv, self._entry_offset(record_id))
        if size == 0:
            return None
        start = self._heap_offset + offset
        if bytes(mv[start:start + 16]) != stamp:
            return None
        result = bytearray(mv[start + 16:start + 16 + size])
        if bytes(mv[start:start + 16]) != stamp:
            return None
        return result

    def read(self, timeout=0):
        write_id, read_id = _IDS.unpack_from(self._shared_mem.get_mv(), 0)
        if write_id == read_id:
            if timeout == 0 or not self._event.wait(timeout):
                return None
            self._event.clear()
            write_id, read_id = _IDS.unpack_from(self._shared_mem.get_mv(), 0)
        result = None
        while read_id < write_id:
            read_id += 1
            result = self.get_by_id(read_id)
            if result is not None:
                break
        struct.pack_into("Q", self._shared_mem.get_mv(), 8, read_id)
        return result


