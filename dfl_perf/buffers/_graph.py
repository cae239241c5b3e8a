"""CUDA-graph mode for BoundSession: fixed device buffers and one IOBinding replayed per run.

Not exercised on a GPU in this repository's test run (no GPU here); the decision of when CUDA
graphs cannot be used, and the fallback, are tested on CPU.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from dfl_perf.ortinfo import ort_message, ort_module

from ._pools import OrtValuePool

__all__ = ["CudaGraphFallbackWarning", "GraphUnavailable", "graph_session_for", "CudaGraphPath", "warn_fallback"]


class CudaGraphFallbackWarning(RuntimeWarning):
    """enable_cuda_graph was asked for but cannot be used; runs go on without CUDA graphs."""


class GraphUnavailable(Exception):
    """Why CUDA graphs cannot be used for this session (the message is shown to the user)."""


def warn_fallback(reason: str) -> None:
    warnings.warn("CUDA graph mode is off: %s. Running through IOBinding without CUDA graphs." % reason,
                  CudaGraphFallbackWarning, stacklevel=3)


def session_has_cuda_graph(session: Any) -> bool:
    try:
        opts = session.get_provider_options().get("CUDAExecutionProvider", {})
    except Exception:  # a session-like object without provider options
        return False
    return str(opts.get("enable_cuda_graph", "0")) == "1"


def graph_session_for(session: Any, device_type: str) -> Tuple[Any, bool]:
    """(session to capture graphs on, True when it is a new clone of ``session``); GraphUnavailable if none."""
    if device_type != "cuda":
        raise GraphUnavailable("CUDA graphs need device='cuda' (this BoundSession is on %r)" % device_type)
    providers = list(session.get_providers())
    if not providers or providers[0] != "CUDAExecutionProvider":
        raise GraphUnavailable("the session runs on %s; CUDA graphs need CUDAExecutionProvider first"
                               % (providers,))
    if session_has_cuda_graph(session):
        return session, False
    source = getattr(session, "_model_path", None) or getattr(session, "_model_bytes", None)
    if source is None:
        raise GraphUnavailable("the session cannot be re-created with enable_cuda_graph=1 (its model path "
                               "or bytes are unknown); create it with that CUDA provider option")
    opts = dict(session.get_provider_options().get("CUDAExecutionProvider", {}))
    opts["enable_cuda_graph"] = "1"
    ort = ort_module()
    try:
        clone = ort.InferenceSession(source, sess_options=session.get_session_options(),
                                     providers=[("CUDAExecutionProvider", opts)])
    except Exception as exc:
        raise GraphUnavailable("onnxruntime cannot run this model under a CUDA graph: %s"
                               % ort_message(exc)) from None
    return clone, True


class CudaGraphPath:
    """One captured graph: inputs copied into fixed device OrtValues, outputs in fixed device OrtValues.

    Runs are serialised (a captured graph must not replay concurrently). Numpy outputs are copied
    from the device with ``OrtValue.numpy()``, which allocates; ask for OrtValues to avoid that.
    """

    def __init__(self, session: Any, is_clone: bool, pool: OrtValuePool) -> None:
        self.session = session
        self.is_clone = is_clone
        self.signature: Optional[Tuple[Tuple[int, ...], ...]] = None
        self._pool = pool
        self._lock = threading.Lock()
        self._io: Any = None
        self._inputs: List[Any] = []
        self._outputs: List[Any] = []
        self.runs = 0
        self.closed = False

    def _setup(self, input_names: Sequence[str], arrays: Sequence[np.ndarray], output_names: Sequence[str],
               out_shapes: Sequence[Tuple[int, ...]], out_dtypes: Sequence[np.dtype]) -> None:
        io = self.session.io_binding()
        for name, arr in zip(input_names, arrays):
            value = self._pool.acquire(arr.shape, arr.dtype)
            self._inputs.append(value)
            io.bind_ortvalue_input(name, value)
        for name, shape, dtype in zip(output_names, out_shapes, out_dtypes):
            value = self._pool.acquire(shape, dtype)
            self._outputs.append(value)
            io.bind_ortvalue_output(name, value)
        self._io = io

    def run(self, input_names: Sequence[str], arrays: Sequence[np.ndarray], sig: Tuple[Tuple[int, ...], ...],
            output_names: Sequence[str], out_shapes: Sequence[Tuple[int, ...]], out_dtypes: Sequence[np.dtype],
            as_ortvalues: bool) -> List[Any]:
        with self._lock:
            if self.closed:
                raise RuntimeError("the CUDA-graph path was closed by another thread")
            if self._io is None:
                self._setup(input_names, arrays, output_names, out_shapes, out_dtypes)
                self.signature = sig
            for value, arr in zip(self._inputs, arrays):
                value.update_inplace(arr)
            self.session.run_with_iobinding(self._io)
            self.runs += 1
            if as_ortvalues:
                return list(self._outputs)
            return [value.numpy() for value in self._outputs]

    def close(self) -> None:
        with self._lock:
            self.closed = True
            for value in self._inputs + self._outputs:
                self._pool.release(value)
            self._inputs, self._outputs, self._io = [], [], None
