"""Pools of reusable buffers: numpy arrays (BufferPool) and OrtValues (OrtValuePool)."""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from dfl_perf.listeners import Listeners
from dfl_perf.ortinfo import ort_message, ort_module

__all__ = ["BufferPool", "OrtValuePool", "PoolError", "parse_device"]

Shape = Union[int, Sequence[int]]
_Key = Tuple[Tuple[int, ...], np.dtype]


class PoolError(ValueError):
    """A buffer was released twice, or released to a pool that does not own it."""


def parse_device(device: str, device_id: int = 0) -> Tuple[str, int]:
    """'cuda:1' -> ('cuda', 1); ('cuda', 2) -> ('cuda', 2); 'cpu' -> ('cpu', 0)."""
    if not isinstance(device, str) or not device:
        raise ValueError("device must be a string such as 'cpu' or 'cuda:0', got %r" % (device,))
    name, sep, index = device.strip().lower().partition(":")
    if sep:
        if not index.isdigit():
            raise ValueError("device %r: the part after ':' must be a device index" % device)
        device_id = int(index)
    if int(device_id) < 0:
        raise ValueError("device %r: device_id must be >= 0, got %d" % (device, device_id))
    return name, (0 if name == "cpu" else int(device_id))


class _Slot:
    __slots__ = ("key", "obj", "nbytes")

    def __init__(self, key: _Key, obj: Any, nbytes: int) -> None:
        self.key = key
        self.obj = obj
        self.nbytes = nbytes


def _normalize_shape(shape: Shape) -> Tuple[int, ...]:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    out = []
    for dim in dims:
        try:
            value = operator.index(dim)
        except TypeError:
            raise TypeError("shape %r: dimensions must be integers, got %r" % (shape, dim)) from None
        if value < 0:
            raise ValueError("shape %r: dimensions must be >= 0" % (shape,))
        out.append(value)
    return tuple(out)


def _check_budget(max_bytes: Optional[int]) -> Optional[int]:
    if max_bytes is None:
        return None
    value = operator.index(max_bytes)
    if value < 0:
        raise ValueError("max_bytes must be >= 0 or None, got %d" % value)
    return value


class _PoolCore:
    """LRU pool bookkeeping shared by BufferPool and OrtValuePool; subclasses make the objects."""

    _kind = "buffer"

    def __init__(self, max_bytes: Optional[int] = None) -> None:
        self._lock = threading.Lock()
        self._max_bytes = _check_budget(max_bytes)
        self._free: OrderedDict[int, _Slot] = OrderedDict()  # least recently released first
        self._free_by_key: Dict[_Key, List[int]] = {}
        self._leased: Dict[int, _Slot] = {}
        self._held = 0  # free + leased + bytes being allocated right now
        self._free_bytes = 0
        self._peak = 0
        self._allocations = 0
        self._reuses = 0
        self._evictions = 0
        self._evicted_bytes = 0
        self.on_grow = Listeners()  # called after a new buffer is allocated (a MemoryManager listens)

    # -- to be provided by subclasses
    def _key(self, shape: Shape, dtype: Any) -> _Key:
        raise NotImplementedError

    def _allocate(self, key: _Key) -> Any:
        raise NotImplementedError

    # -- budget
    @property
    def max_bytes(self) -> Optional[int]:
        """Budget in bytes for everything the pool holds (None: unbounded)."""
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: Optional[int]) -> None:
        value = _check_budget(value)
        with self._lock:
            self._max_bytes = value
            dropped = self._evict_locked(self._over_budget_locked())
        del dropped  # the objects are freed here, outside the lock

    def _over_budget_locked(self, extra: int = 0) -> int:
        if self._max_bytes is None:
            return 0
        return max(0, self._held + extra - self._max_bytes)

    def _evict_locked(self, bytes_to_free: int) -> List[Any]:
        """Drops free slots, least recently released first, until bytes_to_free are freed."""
        dropped: List[Any] = []
        freed = 0
        while freed < bytes_to_free and self._free:
            ident, slot = self._free.popitem(last=False)
            ids = self._free_by_key[slot.key]
            ids.remove(ident)
            if not ids:
                del self._free_by_key[slot.key]
            self._held -= slot.nbytes
            self._free_bytes -= slot.nbytes
            self._evictions += 1
            self._evicted_bytes += slot.nbytes
            freed += slot.nbytes
            dropped.append(slot.obj)
        return dropped

    # -- public API
    def acquire(self, shape: Shape, dtype: Any = np.float32) -> Any:
        """Return a buffer of this shape and dtype, reused when a free one exists.

        Contents are undefined (not zeroed). The caller holds it alone until release().
        """
        key = self._key(shape, dtype)
        with self._lock:
            ids = self._free_by_key.get(key)
            if ids:
                ident = ids.pop()  # the most recently released one: warmest in cache
                if not ids:
                    del self._free_by_key[key]
                slot = self._free.pop(ident)
                self._free_bytes -= slot.nbytes
                self._leased[ident] = slot
                self._reuses += 1
                return slot.obj
            nbytes = _nbytes(key)
            dropped = self._evict_locked(self._over_budget_locked(nbytes))
            self._held += nbytes  # reserved while allocating outside the lock
            self._peak = max(self._peak, self._held)
        del dropped
        try:
            obj = self._allocate(key)
        except BaseException:
            with self._lock:
                self._held -= nbytes
            raise
        with self._lock:
            self._leased[id(obj)] = _Slot(key, obj, nbytes)
            self._allocations += 1
        self.on_grow.notify()
        return obj

    def release(self, buf: Any) -> None:
        """Give a buffer back. Releasing twice, or a buffer this pool did not hand out, raises PoolError."""
        ident = id(buf)
        with self._lock:
            slot = self._leased.get(ident)
            if slot is None or slot.obj is not buf:
                raise PoolError(self._release_error_locked(buf))
            del self._leased[ident]
            self._free[ident] = slot
            self._free_by_key.setdefault(slot.key, []).append(ident)
            self._free_bytes += slot.nbytes
            dropped = self._evict_locked(self._over_budget_locked())
        del dropped

    def _release_error_locked(self, buf: Any) -> str:
        slot = self._free.get(id(buf))
        if slot is not None and slot.obj is buf:
            return "%s released twice: it is already free in this pool" % self._kind
        base = getattr(buf, "base", None)
        if base is not None and any(s.obj is base for s in self._leased.values()):
            return ("%s is a view of a pooled buffer; release the object acquire() returned"
                    % self._kind)
        return "%s was not acquired from this pool (%r)" % (self._kind, _describe(buf))

    @contextmanager
    def lease(self, shape: Shape, dtype: Any = np.float32) -> Iterator[Any]:
        """Context manager: acquire a buffer, release it on exit (also on error)."""
        buf = self.acquire(shape, dtype)
        try:
            yield buf
        finally:
            self.release(buf)

    def trim(self, max_bytes_to_free: Optional[int] = None) -> int:
        """Free idle buffers, least recently used first; returns the bytes freed (None: all idle ones)."""
        with self._lock:
            want = self._free_bytes if max_bytes_to_free is None else operator.index(max_bytes_to_free)
            before = self._held
            dropped = self._evict_locked(want)
            freed = before - self._held
        del dropped
        return freed

    def bytes_held(self) -> int:
        """Bytes in all buffers this pool holds, free and leased."""
        return self._held

    def bytes_free(self) -> int:
        """Bytes in idle buffers (the ones trim() can free)."""
        return self._free_bytes

    def stats(self) -> Dict[str, Any]:
        """Counters: allocations, reuses, reuse_rate, bytes_held, bytes_free, bytes_leased, peak_bytes,
        evictions, evicted_bytes, leased, free, max_bytes."""
        with self._lock:
            served = self._allocations + self._reuses
            return {
                "allocations": self._allocations,
                "reuses": self._reuses,
                "reuse_rate": (self._reuses / served) if served else 0.0,
                "bytes_held": self._held,
                "bytes_free": self._free_bytes,
                "bytes_leased": self._held - self._free_bytes,
                "peak_bytes": self._peak,
                "evictions": self._evictions,
                "evicted_bytes": self._evicted_bytes,
                "leased": len(self._leased),
                "free": len(self._free),
                "max_bytes": self._max_bytes,
            }

    def __repr__(self) -> str:
        return "<%s held=%d free=%d max_bytes=%s>" % (
            type(self).__name__, self._held, self._free_bytes, self._max_bytes)


def _nbytes(key: _Key) -> int:
    count = 1
    for dim in key[0]:
        count *= dim
    return count * key[1].itemsize


def _describe(buf: Any) -> str:
    shape = getattr(buf, "shape", None)
    if callable(shape):
        shape = shape()
    return "%s shape=%s" % (type(buf).__name__, shape)


class BufferPool(_PoolCore):
    """Reusable C-contiguous numpy arrays keyed by (shape, dtype), within a byte budget.

    ``acquire``/``release`` or ``with pool.lease(shape, dtype) as buf``. Idle buffers are evicted
    least recently used first whenever the pool holds more than ``max_bytes``; leased buffers are
    never evicted, so leases may push the pool over budget (visible in ``stats()``). Thread-safe.
    ``on_grow`` (``dfl_perf.listeners.Listeners``) is called after each new allocation: a
    ``MemoryManager`` the pool is registered with enforces its budget then.
    """

    _kind = "array"

    def __init__(self, max_bytes: Optional[int] = None) -> None:
        super().__init__(max_bytes)

    def _key(self, shape: Shape, dtype: Any) -> _Key:
        dt = np.dtype(dtype)
        if dt.hasobject:
            raise TypeError("BufferPool holds plain numeric arrays, not dtype %s" % dt)
        return _normalize_shape(shape), dt

    def _allocate(self, key: _Key) -> np.ndarray:
        return np.empty(key[0], dtype=key[1])


class OrtValuePool(_PoolCore):
    """Reusable OrtValues on one device, keyed by (shape, dtype); same rules as BufferPool.

    ``device`` is ``'cpu'``, ``'cuda'`` (with ``device_id``), ``'cuda:1'``, or any device type the
    installed onnxruntime can allocate on (``'dml'``, ``'cann'`` in newer versions). The device is
    checked at construction: an unusable one raises ValueError naming it.
    """

    _kind = "OrtValue"

    def __init__(self, device: str = "cpu", device_id: int = 0, max_bytes: Optional[int] = None) -> None:
        super().__init__(max_bytes)
        self.device_type, self.device_id = parse_device(device, device_id)
        self.device = self.device_type if self.device_type == "cpu" else "%s:%d" % (
            self.device_type, self.device_id)
        self._probe()

    def _probe(self) -> None:
        ort = ort_module()
        try:
            ort.OrtValue.ortvalue_from_shape_and_type([1], np.float32, self.device_type, self.device_id)
        except Exception as exc:
            raise ValueError("OrtValuePool: onnxruntime %s (providers %s) cannot allocate on %r: %s" % (
                ort.__version__, ", ".join(ort.get_available_providers()), self.device, ort_message(exc))) from None

    def _key(self, shape: Shape, dtype: Any) -> _Key:
        dt = np.dtype(dtype)
        if dt.kind not in "biuf":
            raise TypeError("OrtValuePool holds numeric or bool tensors, not dtype %s" % dt)
        return _normalize_shape(shape), dt

    def _allocate(self, key: _Key) -> Any:
        ort = ort_module()
        return ort.OrtValue.ortvalue_from_shape_and_type(
            list(key[0]), key[1].type, self.device_type, self.device_id)

    def stats(self) -> Dict[str, Any]:
        out = super().stats()
        out["device"] = self.device
        return out

    def __repr__(self) -> str:
        return "<OrtValuePool device=%s held=%d free=%d max_bytes=%s>" % (
            self.device, self._held, self._free_bytes, self._max_bytes)
