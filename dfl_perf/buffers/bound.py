"""BoundSession: run an onnxruntime session through IOBinding with pooled, preallocated buffers."""

from __future__ import annotations

import threading
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from dfl_perf.ortinfo import ort_message, ort_module

from ._graph import CudaGraphPath, GraphUnavailable, graph_session_for, session_has_cuda_graph, warn_fallback
from ._guard import RunGuard
from ._pools import BufferPool, OrtValuePool, parse_device
from ._specs import TensorSpec, check_feed_names, tensor_specs
from ._threads import PerThread

__all__ = ["BoundSession", "BoundSessionError"]

Signature = Tuple[Tuple[int, ...], ...]
# Output plan per input signature: ("declared" | "learned", shapes) or ("dynamic", None) when the
# output shapes depend on the input values (every run then lets onnxruntime allocate).
_Plan = Tuple[str, Optional[Tuple[Tuple[int, ...], ...]]]


class BoundSessionError(RuntimeError):
    """onnxruntime refused a run or a binding; the message says which tensor and why."""


class _ThreadState:
    """What one thread owns: its IOBinding and the pooled buffers bound to it."""

    __slots__ = ("io", "signature", "as_ortvalues", "host_out", "device_out", "results",
                 "staging", "runs", "rebinds", "copies", "unbound_runs")

    def __init__(self, io: Any) -> None:
        self.io = io
        self.signature: Optional[Signature] = None
        self.as_ortvalues = False
        self.host_out: List[np.ndarray] = []
        self.device_out: List[Any] = []
        self.results: List[Any] = []
        self.staging: Dict[str, np.ndarray] = {}
        self.runs = self.rebinds = self.copies = self.unbound_runs = 0


class BoundSession:
    """Runs ``session`` through IOBinding with pooled input/output buffers, one IOBinding per thread.

    ``run(feeds)`` returns the outputs in the session's output order as numpy arrays that are pooled
    host buffers: they stay valid until the next ``run`` on the same thread, which overwrites them
    (copy what you keep). ``run(feeds, as_ortvalues=True)`` returns OrtValues on ``device`` instead,
    which the next stage can bind without a host round trip (same lifetime rule).

    Inputs: numpy arrays of exactly the declared dtype and a fitting shape, or OrtValues.
    C-contiguous arrays are bound in place (no copy). Non-contiguous arrays are copied into a pooled
    contiguous buffer when ``copy_noncontiguous`` is True (counted in ``stats()['input_copies']``),
    and rejected otherwise. Wrong dtype, wrong shape, or missing/unknown names raise TypeError or
    ValueError naming the tensor, expected and received values. Output buffers are re-allocated
    only when the input shapes change; output shapes come from the model's declared shapes, or are
    learned by one run per input-shape signature.

    ``enable_cuda_graph=True`` (device 'cuda' with the CUDA execution provider) replays one captured
    CUDA graph for the first input-shape signature (on a copy of the session made with the
    ``enable_cuda_graph`` provider option; other shapes run on the original session). Inputs are
    copied into fixed device buffers; numpy outputs are then fresh host copies, OrtValue outputs the
    fixed device buffers. When the provider or model cannot do it, a CudaGraphFallbackWarning says
    why and runs go on without it (``cuda_graph_status``).

    Buffers of a thread that has ended go back to the pool when another thread first runs.
    """

    def __init__(self, session: Any, device: str = "cpu", device_id: int = 0, *,
                 enable_cuda_graph: bool = False, host_pool: Optional[BufferPool] = None,
                 device_pool: Optional[OrtValuePool] = None, copy_noncontiguous: bool = True) -> None:
        for attr in ("io_binding", "run_with_iobinding", "get_inputs", "get_outputs"):
            if not hasattr(session, attr):
                raise TypeError("BoundSession needs an onnxruntime InferenceSession, got %s"
                                % type(session).__name__)
        self.session = session
        self.device_type, self.device_id = parse_device(device, device_id)
        self.device = self.device_type if self.device_type == "cpu" else "%s:%d" % (self.device_type, self.device_id)
        self.inputs: List[TensorSpec] = tensor_specs(session.get_inputs(), "input")
        self.outputs: List[TensorSpec] = tensor_specs(session.get_outputs(), "output")
        self.input_names = [s.name for s in self.inputs]
        self.output_names = [s.name for s in self.outputs]
        self.host_pool = host_pool if host_pool is not None else BufferPool()
        self.device_pool = self._device_pool(device_pool)
        self.copy_noncontiguous = bool(copy_noncontiguous)
        self._ort = ort_module()
        self._lock = threading.Lock()
        self._threads: PerThread[_ThreadState] = PerThread(lambda: _ThreadState(self.session.io_binding()),
                                                          self._release_state)
        self._plans: Dict[Signature, _Plan] = {}
        self._learning_runs = 0
        self._guard = RunGuard("BoundSession is closed")
        self._graph: Optional[CudaGraphPath] = None
        self.cuda_graph_status = "off"
        self._setup_cuda_graph(enable_cuda_graph)

    # -- construction helpers
    def _device_pool(self, pool: Optional[OrtValuePool]) -> Optional[OrtValuePool]:
        if self.device_type == "cpu":
            return pool
        if pool is None:
            return OrtValuePool(self.device_type, self.device_id)
        if pool.device != self.device:
            raise ValueError("device_pool is on %s but this BoundSession is on %s" % (pool.device, self.device))
        return pool

    def _setup_cuda_graph(self, enable: bool) -> None:
        own_graph = session_has_cuda_graph(self.session)
        if own_graph and not enable:
            raise ValueError("the session was created with enable_cuda_graph=1; pass enable_cuda_graph=True "
                             "(its inputs and outputs must stay bound to fixed device buffers)")
        if not enable:
            return
        try:
            session, is_clone = graph_session_for(self.session, self.device_type)
        except GraphUnavailable as exc:
            self.cuda_graph_status = "fallback: %s" % exc
            warn_fallback(str(exc))
            return
        self._graph = CudaGraphPath(session, is_clone, self.device_pool)
        self.cuda_graph_status = "pending: captured at the first run"

    @property
    def cuda_graph_active(self) -> bool:
        """True while runs may replay a CUDA graph."""
        return self._graph is not None

    # -- per-thread state
    def _release_state(self, state: _ThreadState) -> None:
        self._release_outputs(state)
        self._release_staging(state)

    # -- the run
    def run(self, feeds: Mapping[str, Any], as_ortvalues: bool = False) -> List[Any]:
        """Run once; returns the outputs (session order) as pooled numpy views, or OrtValues on request."""
        with self._guard.running():
            return self._run(feeds, as_ortvalues)

    def _run(self, feeds: Mapping[str, Any], as_ortvalues: bool) -> List[Any]:
        state = self._threads.get()
        values, sig = self._checked_feeds(feeds, state)
        plan = self._plans.get(sig)
        if plan is None:
            plan = self._first_plan(sig)
        if self._graph is not None:
            result = self._try_graph(values, sig, plan, as_ortvalues)
            if result is not None:
                return result
        state.runs += 1
        self._bind_inputs(state.io, values)
        shapes = plan[1]
        if shapes is None:  # "learn" (first run of this signature) or "dynamic" (value-dependent shapes)
            outputs = self._run_unbound(state, as_ortvalues)
            if plan[0] == "learn":
                self._set_plan(sig, ("learned", _shapes_of(outputs)))
            return outputs
        if state.signature != sig or state.as_ortvalues != as_ortvalues:
            self._bind_outputs(state, sig, shapes, as_ortvalues)
        try:
            self.session.run_with_iobinding(state.io)
        except Exception:
            return self._recover(state, sig, plan, as_ortvalues)
        return list(state.results)

    def _checked_feeds(self, feeds: Mapping[str, Any], state: _ThreadState) -> Tuple[List[Any], Signature]:
        if not isinstance(feeds, Mapping):
            raise TypeError("feeds must be a dict of input name -> array, got %s" % type(feeds).__name__)
        if len(feeds) != len(self.inputs) or any(name not in feeds for name in self.input_names):
            check_feed_names(feeds, self.input_names)
        values: List[Any] = []
        shapes = []
        ortvalue_type = self._ort.OrtValue
        for spec in self.inputs:
            value = feeds[spec.name]
            if isinstance(value, np.ndarray):
                spec.check_array(value)
                if not (value.flags.c_contiguous and value.flags.aligned):
                    value = self._staged(state, spec, value)
                shapes.append(value.shape)
            elif isinstance(value, ortvalue_type):
                shapes.append(spec.check_ortvalue(value))
            else:
                raise TypeError("input %r: expected a numpy.ndarray or onnxruntime.OrtValue, got %s"
                                % (spec.name, type(value).__name__))
            values.append(value)
        return values, tuple(shapes)

    def _staged(self, state: _ThreadState, spec: TensorSpec, value: np.ndarray) -> np.ndarray:
        if not self.copy_noncontiguous:
            raise ValueError("input %r is not C-contiguous (strides %s); pass np.ascontiguousarray(x) or "
                             "create the BoundSession with copy_noncontiguous=True" % (spec.name, value.strides))
        buf = state.staging.get(spec.name)
        if buf is None or buf.shape != value.shape:
            if buf is not None:
                self.host_pool.release(buf)
            buf = state.staging[spec.name] = self.host_pool.acquire(value.shape, value.dtype)
        np.copyto(buf, value)
        state.copies += 1
        return buf

    def _bind_inputs(self, io: Any, values: List[Any]) -> None:
        for spec, value in zip(self.inputs, values):
            if isinstance(value, np.ndarray):
                io.bind_input(spec.name, "cpu", 0, spec.dtype.type, value.shape, value.ctypes.data)
            else:
                io.bind_ortvalue_input(spec.name, value)

    # -- output shapes and buffers
    def _first_plan(self, sig: Signature) -> _Plan:
        symbols: Dict[str, int] = {}
        for spec, shape in zip(self.inputs, sig):
            for dim, size in zip(spec.dims, shape):
                if isinstance(dim, str):
                    symbols.setdefault(dim, size)
        shapes = []
        for spec in self.outputs:
            dims = [d if isinstance(d, int) else symbols.get(d) if isinstance(d, str) else None for d in spec.dims]
            if any(d is None for d in dims):
                return ("learn", None)
            shapes.append(tuple(dims))
        plan: _Plan = ("declared", tuple(shapes))
        self._set_plan(sig, plan)
        return plan

    def _set_plan(self, sig: Signature, plan: _Plan) -> None:
        with self._lock:
            if plan[0] != "declared":
                self._learning_runs += 1
            self._plans[sig] = plan

    def _bind_outputs(self, state: _ThreadState, sig: Signature, shapes: Any, as_ortvalues: bool) -> None:
        self._release_outputs(state)
        io = state.io
        on_device = as_ortvalues and self.device_pool is not None
        for spec, shape in zip(self.outputs, shapes):
            if on_device:
                value = self.device_pool.acquire(shape, spec.dtype)
                state.device_out.append(value)
                state.results.append(value)
            else:
                arr = self.host_pool.acquire(shape, spec.dtype)
                state.host_out.append(arr)
                value = self._ort.OrtValue.ortvalue_from_numpy(arr)  # shares arr's memory on cpu
                state.device_out.append(None)
                state.results.append(value if as_ortvalues else arr)
            io.bind_ortvalue_output(spec.name, value)
        state.signature = sig
        state.as_ortvalues = as_ortvalues
        state.rebinds += 1

    def _bind_outputs_unallocated(self, state: _ThreadState, as_ortvalues: bool) -> None:
        self._release_outputs(state)
        where = self.device_type if (as_ortvalues and self.device_pool is not None) else "cpu"
        for spec in self.outputs:
            state.io.bind_output(spec.name, where, self.device_id if where != "cpu" else 0)
        state.signature = None

    def _release_outputs(self, state: _ThreadState) -> None:
        for arr in state.host_out:
            self.host_pool.release(arr)
        for value in state.device_out:
            if value is not None:
                self.device_pool.release(value)
        state.host_out, state.device_out, state.results = [], [], []
        state.signature = None

    def _release_staging(self, state: _ThreadState) -> None:
        for buf in state.staging.values():
            self.host_pool.release(buf)
        state.staging = {}

    def _run_unbound(self, state: _ThreadState, as_ortvalues: bool) -> List[Any]:
        """Let onnxruntime allocate the outputs (first run of a signature, or value-dependent shapes)."""
        self._bind_outputs_unallocated(state, as_ortvalues)
        state.unbound_runs += 1
        try:
            self.session.run_with_iobinding(state.io)
        except Exception as exc:
            raise BoundSessionError("onnxruntime failed to run the model: %s" % ort_message(exc)) from None
        if as_ortvalues:
            return list(state.io.get_outputs())
        return [a if a.flags.owndata else a.copy() for a in state.io.copy_outputs_to_cpu()]

    def _recover(self, state: _ThreadState, sig: Signature, plan: _Plan, as_ortvalues: bool) -> List[Any]:
        """A run into preallocated outputs failed: rerun letting onnxruntime allocate, then learn from it.

        Declared shapes that were wrong are replaced by the real ones; learned shapes that changed mean
        the output shapes depend on the input values ("dynamic": onnxruntime allocates every run).
        A model that fails either way raises BoundSessionError.
        """
        outputs = self._run_unbound(state, as_ortvalues)
        shapes = _shapes_of(outputs)
        if shapes != plan[1]:
            if plan[0] == "declared":
                self._set_plan(sig, ("learned", shapes))
            else:
                self._set_plan(sig, ("dynamic", None))
                warnings.warn("output shapes of this model depend on the input values (input shapes %s); "
                              "onnxruntime allocates the outputs on every run" % (sig,), RuntimeWarning,
                              stacklevel=3)
        return outputs

    # -- CUDA graphs
    def _try_graph(self, values: List[Any], sig: Signature, plan: _Plan, as_ortvalues: bool) -> Optional[List[Any]]:
        """Outputs from the captured graph, or None when this run must take the ordinary path."""
        graph = self._graph
        assert graph is not None
        why_not = None
        if plan[1] is None or plan[0] == "dynamic":
            why_not = "output shapes for input shapes %s are not known yet" % (sig,)
        elif not all(isinstance(v, np.ndarray) for v in values):
            why_not = "CUDA-graph runs take numpy inputs (copied into fixed device buffers)"
        elif graph.signature is not None and graph.signature != sig:
            why_not = "the graph was captured for input shapes %s, got %s" % (graph.signature, sig)
        if why_not is not None:
            if graph.is_clone:
                return None  # the original session runs it without a graph
            raise BoundSessionError("session created with enable_cuda_graph=1: %s; create it without that "
                                    "option and pass enable_cuda_graph=True to BoundSession" % why_not)
        try:
            outputs = graph.run(self.input_names, values, sig, self.output_names, plan[1],
                                [s.dtype for s in self.outputs], as_ortvalues)
        except Exception as exc:
            reason = "the run under a CUDA graph failed: %s" % ort_message(exc)
            with self._lock:
                first = self._graph is graph  # only the first failing thread reports it
                self._graph = None
            if first:
                graph.close()
                self.cuda_graph_status = "fallback: %s" % reason
            if not graph.is_clone:
                raise BoundSessionError(reason) from None
            if first:
                warn_fallback(reason)
            return None
        self.cuda_graph_status = "active for input shapes %s" % (sig,)
        return outputs

    # -- lifetime and counters
    def stats(self) -> Dict[str, Any]:
        """Counters: runs, output_rebinds, unbound_runs, learning_runs, input_copies, threads, cuda_graph."""
        states = self._threads.states()
        with self._lock:
            learning = self._learning_runs
            plans = len(self._plans)
        return {
            "runs": sum(s.runs for s in states),
            "output_rebinds": sum(s.rebinds for s in states),
            "unbound_runs": sum(s.unbound_runs for s in states),
            "learning_runs": learning,
            "input_copies": sum(s.copies for s in states),
            "threads": len(states),
            "signatures": plans,
            "cuda_graph": self.cuda_graph_status,
            "cuda_graph_runs": self._graph.runs if self._graph is not None else 0,
        }

    def close(self) -> None:
        """Wait for runs in progress, then give every pooled buffer back to its pool; later runs
        raise. Idempotent; safe from another thread."""
        if not self._guard.close():
            return
        with self._lock:
            graph, self._graph = self._graph, None
        for state in self._threads.take_all():
            self._release_state(state)
        if graph is not None:
            graph.close()

    def __enter__(self) -> BoundSession:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<BoundSession %s inputs=%s outputs=%d>" % (self.device, self.input_names, len(self.output_names))


def _shapes_of(outputs: List[Any]) -> Tuple[Tuple[int, ...], ...]:
    return tuple(o.shape if isinstance(o, np.ndarray) else tuple(o.shape()) for o in outputs)
