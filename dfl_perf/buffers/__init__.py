"""Buffer pools and IOBinding runs: no per-frame allocations on the hot path.

- ``BufferPool``: reusable numpy arrays keyed by (shape, dtype), LRU-evicted within a byte budget.
- ``OrtValuePool``: the same for OrtValues on a device ('cpu', 'cuda:0', ...).
- ``BoundSession``: runs a session through IOBinding with pooled inputs/outputs, one binding per thread.
- ``DFMRunner``: DeepFaceLive's DFM face-swap step on top of BoundSession.

Importing this package imports numpy only; onnxruntime is imported when a session or OrtValue pool is made.
"""

from __future__ import annotations

from ._graph import CudaGraphFallbackWarning
from ._pools import BufferPool, OrtValuePool, PoolError
from .bound import BoundSession, BoundSessionError
from .dfm import DFMContractError, DFMOutputs, DFMRunner

__all__ = [
    "BufferPool",
    "OrtValuePool",
    "PoolError",
    "BoundSession",
    "BoundSessionError",
    "CudaGraphFallbackWarning",
    "DFMRunner",
    "DFMOutputs",
    "DFMContractError",
]
