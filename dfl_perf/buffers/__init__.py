"""Buffer pools and IOBinding runs: no per-frame allocations on the hot path.

- ``BufferPool``: reusable numpy arrays keyed by (shape, dtype), LRU-evicted within a byte budget.
- ``OrtValuePool``: the same for OrtValues on a device ('cpu', 'cuda:0', ...).
- ``BoundSession``: runs a session through IOBinding with pooled inputs/outputs, one binding per thread.
- ``DFMRunner``: DeepFaceLive's DFM face-swap step, through a BoundSession or DFL's own way.

Their errors and warnings live beside them: ``_pools.PoolError``, ``bound.BoundSessionError``,
``_graph.CudaGraphFallbackWarning``, ``dfm.DFMContractError`` (also exported here).

Importing this package imports numpy only; onnxruntime is imported when a session or OrtValue pool is made.
"""

from __future__ import annotations

from ._pools import BufferPool, OrtValuePool
from .bound import BoundSession
from .dfm import DFMContractError, DFMRunner

__all__ = ["BufferPool", "OrtValuePool", "BoundSession", "DFMRunner", "DFMContractError"]
