"""DFMRunner: DeepFaceLive's face-swap (DFM) step with pooled buffers and no per-frame arrays."""

from __future__ import annotations

import threading
import weakref
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ._pools import BufferPool
from ._specs import TensorSpec, describe_shape
from .bound import BoundSession

__all__ = ["DFMRunner", "DFMOutputs", "DFMContractError"]

DFM_OUTPUT_NAMES = ("out_face_mask", "out_celeb_face", "out_celeb_face_mask")
_UINT8_SCALE = np.float32(255.0)
Faces = Union[np.ndarray, Sequence[np.ndarray]]


class DFMContractError(ValueError):
    """The model does not fit DeepFaceLive's DFM tensor contract."""


class DFMOutputs(NamedTuple):
    """The three DFM outputs in DeepFaceLive's (the session's) order, each float32 NHWC 0..1."""

    face_mask: np.ndarray  # out_face_mask:0        (N, res, res, 1)
    celeb_face: np.ndarray  # out_celeb_face:0      (N, res, res, 3), BGR
    celeb_face_mask: np.ndarray  # out_celeb_face_mask:0 (N, res, res, 1)


class _DFMContract(NamedTuple):
    face: TensorSpec
    morph: Optional[TensorSpec]
    resolution: int
    output_order: Tuple[int, int, int]  # session output index for face_mask, celeb_face, celeb_face_mask


def check_dfm_contract(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> _DFMContract:
    """Validate DeepFaceLive's DFM contract; raises DFMContractError saying what does not fit."""
    names = ", ".join("%r %s" % (s.name, describe_shape(s.dims)) for s in inputs)
    faces = [s for s in inputs if "in_face" in s.name]
    morphs = [s for s in inputs if "morph_value" in s.name]
    if len(faces) != 1:
        raise DFMContractError("DFM model: expected one input whose name contains 'in_face', got inputs %s" % names)
    if len(inputs) != 1 + len(morphs) or len(morphs) > 1:
        raise DFMContractError("DFM model: expected 'in_face' and optionally 'morph_value' inputs, got %s" % names)
    face = faces[0]
    dims = face.dims
    square = face.rank == 4 and isinstance(dims[1], int) and dims[1] > 0 and dims[1] == dims[2] and dims[3] == 3
    if not square or face.dtype != np.float32:
        raise DFMContractError("DFM model: input %r must be float32 NHWC [N, res, res, 3], got %s %s"
                               % (face.name, face.dtype, describe_shape(dims)))
    morph = morphs[0] if morphs else None
    if morph is not None and not (morph.dtype == np.float32 and morph.rank == 1 and morph.dims[0] in (1, None)):
        raise DFMContractError("DFM model: input %r must be float32 of shape [1], got %s %s"
                               % (morph.name, morph.dtype, describe_shape(morph.dims)))
    if len(outputs) != 3:
        raise DFMContractError("DFM model: expected 3 outputs (%s), got %d: %s"
                               % (", ".join(DFM_OUTPUT_NAMES), len(outputs), [s.name for s in outputs]))
    for spec in outputs:
        if spec.dtype != np.float32:
            raise DFMContractError("DFM model: output %r must be float32, got %s" % (spec.name, spec.dtype))
    return _DFMContract(face, morph, int(dims[1]), _output_order([s.name for s in outputs]))


def _output_order(names: List[str]) -> Tuple[int, int, int]:
    """Map by name when the outputs carry DFL's names, else DFL's positional order."""
    bare = [n.split(":")[0] for n in names]
    if sorted(bare) == sorted(DFM_OUTPUT_NAMES):
        a, b, c = (bare.index(n) for n in DFM_OUTPUT_NAMES)
        return a, b, c
    return 0, 1, 2


class _FaceState:
    __slots__ = ("thread", "batch", "feeds")

    def __init__(self) -> None:
        self.thread = weakref.ref(threading.current_thread())
        self.batch: Optional[np.ndarray] = None
        self.feeds: dict = {}


class DFMRunner:
    """DeepFaceLive's DFM step: aligned uint8 BGR faces in, three float32 masks/faces out, no per-frame arrays.

    ``run(faces, morph_factor=0.75)`` takes one face ``(res, res, 3)``, a batch ``(N, res, res, 3)``
    or a list of faces, uint8 (scaled by 1/255 straight into the pooled float32 input, with results
    identical to DFL's ``astype(float32) / 255``) or float32 already in 0..1. All faces run in one
    batch. ``morph_factor`` feeds ``morph_value:0`` on AMP models and is ignored otherwise (as in
    DFL). Returns DFMOutputs (face_mask, celeb_face, celeb_face_mask) of pooled views, valid until the
    next run on the same thread. Accepts an InferenceSession or a BoundSession.
    """

    def __init__(self, session_or_bound: Any, device: str = "cpu", device_id: int = 0, *,
                 host_pool: Optional[BufferPool] = None) -> None:
        if isinstance(session_or_bound, BoundSession):
            self.bound = session_or_bound
            self._owns_bound = False
        else:
            self.bound = BoundSession(session_or_bound, device, device_id, host_pool=host_pool)
            self._owns_bound = True
        try:
            contract = check_dfm_contract(self.bound.inputs, self.bound.outputs)
        except DFMContractError:
            if self._owns_bound:
                self.bound.close()
            raise
        self.resolution = contract.resolution
        self.input_name = contract.face.name
        self.morph_name = contract.morph.name if contract.morph is not None else None
        self._fixed_batch = contract.face.dims[0] if isinstance(contract.face.dims[0], int) else None
        self._order = contract.output_order
        self._face_shape = (self.resolution, self.resolution, 3)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._states: List[_FaceState] = []

    @property
    def has_morph_value(self) -> bool:
        """True for AMP models, which take ``morph_value:0``."""
        return self.morph_name is not None

    def run(self, faces: Faces, morph_factor: float = 0.75) -> DFMOutputs:
        """Swap a face or a batch of faces; see the class docstring."""
        state = self._state()
        count = self._count(faces)
        batch = self._batch_buffer(state, count)
        self._write_faces(faces, batch)
        feeds = state.feeds
        feeds[self.input_name] = batch
        if self.morph_name is not None:
            if not isinstance(morph_factor, (int, float, np.floating, np.integer)):
                raise TypeError("%s: morph_factor must be a number, got %s"
                                % (self.morph_name, type(morph_factor).__name__))
            feeds[self.morph_name][0] = morph_factor
        outputs = self.bound.run(feeds)
        a, b, c = self._order
        return DFMOutputs(outputs[a], outputs[b], outputs[c])

    def _state(self) -> _FaceState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = _FaceState()
            if self.morph_name is not None:
                state.feeds[self.morph_name] = np.zeros((1,), np.float32)
            with self._lock:
                self._release_dead_threads_locked()
                self._states.append(state)
            self._local.state = state
        return state

    def _release_dead_threads_locked(self) -> None:
        """Give the batch buffers of threads that have ended back to the pool (worker threads come and go)."""
        alive = []
        for state in self._states:
            thread = state.thread()
            if thread is not None and thread.is_alive():
                alive.append(state)
            elif state.batch is not None:
                self.bound.host_pool.release(state.batch)
                state.batch = None
        self._states = alive

    def _count(self, faces: Faces) -> int:
        if isinstance(faces, np.ndarray):
            if faces.ndim == 3:
                count = 1
            elif faces.ndim == 4:
                count = faces.shape[0]
            else:
                raise ValueError("%s: expected a face %s or a batch (N, %d, %d, 3), got shape %s"
                                 % (self.input_name, self._face_shape, self.resolution, self.resolution,
                                    faces.shape))
        elif isinstance(faces, (list, tuple)):
            count = len(faces)
        else:
            raise TypeError("%s: expected a numpy array or a list of arrays, got %s"
                            % (self.input_name, type(faces).__name__))
        if count < 1:
            raise ValueError("%s: no faces given" % self.input_name)
        if self._fixed_batch is not None and count != self._fixed_batch:
            raise ValueError("%s: this model's batch axis is fixed at %d, got %d faces"
                             % (self.input_name, self._fixed_batch, count))
        return count

    def _batch_buffer(self, state: _FaceState, count: int) -> np.ndarray:
        batch = state.batch
        if batch is None or batch.shape[0] != count:
            pool = self.bound.host_pool
            if batch is not None:
                pool.release(batch)
                state.batch = None
            batch = state.batch = pool.acquire((count,) + self._face_shape, np.float32)
        return batch

    def _write_faces(self, faces: Faces, batch: np.ndarray) -> None:
        if isinstance(faces, np.ndarray):
            self._check_face(faces, faces.shape[-4:] if faces.ndim == 4 else faces.shape, "faces")
            _to_unit_float(faces, batch if faces.ndim == 4 else batch[0])
            return
        for i, face in enumerate(faces):
            if not isinstance(face, np.ndarray):
                raise TypeError("%s: face %d is %s, expected a numpy array" % (self.input_name, i, type(face).__name__))
            self._check_face(face, face.shape, "face %d" % i)
            _to_unit_float(face, batch[i])

    def _check_face(self, faces: np.ndarray, shape: Tuple[int, ...], what: str) -> None:
        if faces.dtype != np.uint8 and faces.dtype != np.float32:
            raise TypeError("%s: %s must be uint8 BGR 0..255 or float32 0..1, got %s"
                            % (self.input_name, what, faces.dtype))
        if tuple(shape[-3:]) != self._face_shape or len(shape) not in (3, 4):
            raise ValueError("%s: %s must be aligned faces of shape %s (BGR), got %s"
                             % (self.input_name, what, self._face_shape, tuple(shape)))

    def close(self) -> None:
        """Return the pooled input buffers (and close the BoundSession if this runner made it)."""
        with self._lock:
            states, self._states = self._states, []
        for state in states:
            if state.batch is not None:
                self.bound.host_pool.release(state.batch)
                state.batch = None
        if self._owns_bound:
            self.bound.close()

    def __enter__(self) -> DFMRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _to_unit_float(src: np.ndarray, dst: np.ndarray) -> None:
    """uint8 -> float32 / 255 (bit-identical to DFL's astype(float32) / 255), or a float32 copy, into dst."""
    # Two in-place passes instead of np.divide(src, 255, out=dst, dtype=float32): a casting ufunc
    # allocates its buffers on every call (64 KB on numpy 1.21); copyto casts without them.
    np.copyto(dst, src, casting="unsafe")
    if src.dtype == np.uint8:
        np.divide(dst, _UINT8_SCALE, out=dst)
