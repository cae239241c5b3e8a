"""DFMRunner: DeepFaceLive's face-swap (DFM) step, the one DFM runner of dfl_perf.

It checks DFL's DFM tensor contract (``check_dfm_contract``, ``DFMContractError``), takes aligned
faces (one, a batch or a list; uint8 BGR or float32 0..1), feeds ``morph_value:0`` on AMP models
(``DEFAULT_MORPH_FACTOR``, DFL's 0.75) and returns the three outputs by DFL's names. The optimized
runner uses it with IOBinding into pooled buffers, the baseline (DFL's way) without, and the DFL
adapter's fast ``DFMModel.convert`` adds DFL's resizing and dtypes around it.
"""

from __future__ import annotations

from typing import Any, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from dfl_perf.ortinfo import numpy_dtype_of

from ._guard import RunGuard
from ._pools import BufferPool
from ._specs import TensorSpec, describe_shape
from ._threads import PerThread
from .bound import BoundSession

__all__ = ["DFMRunner", "DFMOutputs", "DFMContractError", "DFMContract", "check_dfm_contract",
           "DEFAULT_MORPH_FACTOR"]

#: DFL's morph factor for AMP models when none is given (``DFMModel.convert(img, morph_factor=0.75)``).
DEFAULT_MORPH_FACTOR = 0.75
DFM_OUTPUT_NAMES = ("out_face_mask", "out_celeb_face", "out_celeb_face_mask")
_OUTPUT_CHANNELS = (1, 3, 1)  # channels of each, in that order
_UINT8_SCALE = np.float32(255.0)
Faces = Union[np.ndarray, Sequence[np.ndarray]]


class DFMContractError(ValueError):
    """The model (or the faces given to it) does not fit DeepFaceLive's DFM tensor contract."""


class DFMOutputs(NamedTuple):
    """The three DFM outputs in DeepFaceLive's (the session's) order, each float32 NHWC 0..1."""

    face_mask: np.ndarray  # out_face_mask:0        (N, res, res, 1)
    celeb_face: np.ndarray  # out_celeb_face:0      (N, res, res, 3), BGR
    celeb_face_mask: np.ndarray  # out_celeb_face_mask:0 (N, res, res, 1)


class DFMContract(NamedTuple):
    """What ``check_dfm_contract`` found in a model that fits DeepFaceLive's DFM contract."""

    face: TensorSpec  # in_face:0, float32 [N, res, res, 3]
    morph: Optional[TensorSpec]  # morph_value:0, float32 [1], on AMP models
    resolution: int
    fixed_batch: Optional[int]  # the face input's batch axis when the model fixes it, else None
    outputs: Tuple[TensorSpec, ...]  # in the session's order
    output_order: Tuple[int, int, int]  # session output index for face_mask, celeb_face, celeb_face_mask

    @property
    def input_name(self) -> str:
        return self.face.name

    @property
    def morph_name(self) -> Optional[str]:
        return None if self.morph is None else self.morph.name

    @property
    def output_names(self) -> List[str]:
        """Output names in DFL's order: out_face_mask, out_celeb_face, out_celeb_face_mask."""
        return [self.outputs[i].name for i in self.output_order]


def check_dfm_contract(inputs: Sequence[Any], outputs: Sequence[Any],
                       resolution: Optional[int] = None) -> DFMContract:
    """Validate DeepFaceLive's DFM contract; raises DFMContractError naming the tensor, expected vs got.

    ``inputs`` / ``outputs``: TensorSpecs or a session's ``get_inputs()`` / ``get_outputs()``.
    ``resolution``: when given, the model must have it. Inputs are taken as DFL takes them:
    0 is ``in_face``, 1 (AMP models) ``morph_value``. Outputs map by DFL's names when they carry
    them, else by DFL's order.
    """
    ins = [_as_spec(a) for a in inputs]
    outs = [_as_spec(a) for a in outputs]
    face = _check_face_input(ins)
    res = int(face.dims[1])
    if resolution is not None and res != resolution:
        raise DFMContractError("DFM model resolution is %d, expected %d (input %r %s)"
                               % (res, resolution, face.name, describe_shape(face.dims)))
    morph = _check_morph_input(ins[1]) if len(ins) == 2 else None
    order = _check_outputs(outs)
    batch = face.dims[0] if isinstance(face.dims[0], int) and face.dims[0] > 0 else None
    return DFMContract(face, morph, res, batch, tuple(outs), order)


def _as_spec(arg: Any) -> TensorSpec:
    if isinstance(arg, TensorSpec):
        return arg
    return TensorSpec(arg.name, numpy_dtype_of(arg.type), list(arg.shape or []), arg.type)


def _type_of(spec: TensorSpec) -> str:
    return spec.ort_type if spec.dtype is None else str(spec.dtype)


def _describe(spec: TensorSpec) -> str:
    return "%r %s %s" % (spec.name, _type_of(spec), describe_shape(spec.dims))


def _check_face_input(inputs: List[TensorSpec]) -> TensorSpec:
    if not 1 <= len(inputs) <= 2:
        raise DFMContractError("DFM model must have 1 or 2 inputs ('in_face:0' [, 'morph_value:0']), got %d: %s"
                               % (len(inputs), ", ".join(_describe(s) for s in inputs)))
    face = inputs[0]
    if "in_face" not in face.name:
        raise DFMContractError("DFM input 0 must be named like 'in_face:0', got %r (inputs: %s)"
                               % (face.name, ", ".join(_describe(s) for s in inputs)))
    dims = face.dims
    if face.dtype != np.float32 or face.rank != 4 or dims[3] != 3:
        hint = " (this looks NCHW; DFM models are NHWC)" if face.rank == 4 and dims[1] == 3 else ""
        raise DFMContractError("DFM input %r must be float32 NHWC [N, res, res, 3], got %s %s%s"
                               % (face.name, _type_of(face), describe_shape(dims), hint))
    if not (isinstance(dims[1], int) and dims[1] > 0 and dims[1] == dims[2]):
        raise DFMContractError("DFM input %r must be a fixed square [N, res, res, 3], got %s"
                               % (face.name, describe_shape(dims)))
    return face


def _check_morph_input(morph: TensorSpec) -> TensorSpec:
    if "morph_value" not in morph.name:
        raise DFMContractError("DFM input 1 must be named like 'morph_value:0', got %s" % _describe(morph))
    if not (morph.dtype == np.float32 and morph.rank == 1
            and (morph.dims[0] == 1 or not isinstance(morph.dims[0], int))):
        raise DFMContractError("DFM input %r must be float32 [1], got %s %s"
                               % (morph.name, _type_of(morph), describe_shape(morph.dims)))
    return morph


def _check_outputs(outputs: List[TensorSpec]) -> Tuple[int, int, int]:
    if len(outputs) != 3:
        raise DFMContractError("DFM model: expected 3 outputs (%s), got %d: %s"
                               % (", ".join(DFM_OUTPUT_NAMES), len(outputs), [s.name for s in outputs]))
    order = _output_order([s.name for s in outputs])
    for index, role, channels in zip(order, DFM_OUTPUT_NAMES, _OUTPUT_CHANNELS):
        spec = outputs[index]
        if spec.dtype != np.float32:
            raise DFMContractError("DFM output %r must be float32, got %s" % (spec.name, _type_of(spec)))
        if spec.rank != 4 or spec.dims[3] not in (None, channels):
            raise DFMContractError("DFM output %r must be %s [N, res, res, %d], got %s (outputs are taken by DFL's "
                                   "names, else in DFL's order: %s)" % (spec.name, role, channels,
                                                                       describe_shape(spec.dims),
                                                                       ", ".join(DFM_OUTPUT_NAMES)))
    return order


def _output_order(names: List[str]) -> Tuple[int, int, int]:
    """Map by name when the outputs carry DFL's names, else DFL's positional order."""
    bare = [n.split(":")[0] for n in names]
    if sorted(bare) == sorted(DFM_OUTPUT_NAMES):
        a, b, c = (bare.index(n) for n in DFM_OUTPUT_NAMES)
        return a, b, c
    return 0, 1, 2


class _FaceState:
    __slots__ = ("batch", "feeds")

    def __init__(self) -> None:
        self.batch: Optional[np.ndarray] = None
        self.feeds: dict = {}


class DFMRunner:
    """DeepFaceLive's DFM step: aligned uint8 BGR faces in, three float32 masks/faces out.

    ``run(faces, morph_factor=DEFAULT_MORPH_FACTOR)`` takes one face ``(res, res, 3)``, a batch
    ``(N, res, res, 3)`` or a list of faces, uint8 (scaled by 1/255, bit-identical to DFL's
    ``astype(float32) / 255``) or float32 already in 0..1, and runs them in one batch.
    ``morph_factor`` (0..1) feeds ``morph_value:0`` on AMP models and is ignored otherwise, as in
    DFL. Returns DFMOutputs (face_mask, celeb_face, celeb_face_mask). ``resolution``: when given,
    the model must have it.

    ``io_binding=True`` (default): the faces are scaled straight into a pooled float32 input bound
    with IOBinding (a ``BoundSession``, made here from an InferenceSession, or given); no per-frame
    arrays, and the outputs are pooled views, valid until the next run on the same thread.
    ``io_binding=False``: DFL's own way, for baselines: a fresh input array and ``session.run``
    every call; the outputs are new arrays the caller owns.
    """

    def __init__(self, session_or_bound: Any, device: str = "cpu", device_id: int = 0, *,
                 host_pool: Optional[BufferPool] = None, io_binding: bool = True,
                 resolution: Optional[int] = None) -> None:
        given = session_or_bound if isinstance(session_or_bound, BoundSession) else None
        if given is not None and not io_binding:
            raise ValueError("io_binding=False runs the InferenceSession itself: pass it, not a BoundSession")
        self.session = given.session if given is not None else session_or_bound
        contract = check_dfm_contract(self.session.get_inputs(), self.session.get_outputs(), resolution)
        self.resolution = contract.resolution
        self.input_name = contract.input_name
        self.morph_name = contract.morph_name
        self._fixed_batch = contract.fixed_batch
        self._order = contract.output_order
        self._face_shape = (self.resolution, self.resolution, 3)
        self._owns_bound = given is None and io_binding
        self.bound: Optional[BoundSession] = given
        if self._owns_bound:
            self.bound = BoundSession(self.session, device, device_id, host_pool=host_pool)
        self._threads: PerThread[_FaceState] = PerThread(self._new_state, self._release_state)
        self._guard = RunGuard("DFMRunner is closed: make a new one to run the model again")

    @property
    def has_morph_value(self) -> bool:
        """True for AMP models, which take ``morph_value:0``."""
        return self.morph_name is not None

    def run(self, faces: Faces, morph_factor: float = DEFAULT_MORPH_FACTOR) -> DFMOutputs:
        """Swap a face or a batch of faces; see the class docstring."""
        with self._guard.running():
            morph = self._morph_value(morph_factor)
            if self.bound is None:
                return self._run_plain(faces, morph)
            return self._run_bound(faces, morph)

    def _morph_value(self, morph_factor: Any) -> Optional[float]:
        if self.morph_name is None:
            return None
        if isinstance(morph_factor, bool) or not isinstance(morph_factor, (int, float, np.floating, np.integer)):
            raise TypeError("%s: morph_factor must be a number, got %s"
                            % (self.morph_name, type(morph_factor).__name__))
        if not 0.0 <= morph_factor <= 1.0:
            raise ValueError("%s: morph_factor must be within 0..1, got %r" % (self.morph_name, morph_factor))
        return float(morph_factor)

    def _run_plain(self, faces: Faces, morph: Optional[float]) -> DFMOutputs:
        batch = np.empty((self._count(faces),) + self._face_shape, np.float32)
        self._write_faces(faces, batch)
        feeds = {self.input_name: batch}
        if self.morph_name is not None:
            feeds[self.morph_name] = np.array([morph], np.float32)
        outputs = self.session.run(None, feeds)
        a, b, c = self._order
        return DFMOutputs(outputs[a], outputs[b], outputs[c])

    def _run_bound(self, faces: Faces, morph: Optional[float]) -> DFMOutputs:
        state = self._threads.get()
        batch = self._batch_buffer(state, self._count(faces))
        self._write_faces(faces, batch)
        feeds = state.feeds
        feeds[self.input_name] = batch
        if self.morph_name is not None:
            feeds[self.morph_name][0] = morph
        outputs = self.bound.run(feeds)  # type: ignore[union-attr]
        a, b, c = self._order
        return DFMOutputs(outputs[a], outputs[b], outputs[c])

    def _new_state(self) -> _FaceState:
        state = _FaceState()
        if self.morph_name is not None:
            state.feeds[self.morph_name] = np.zeros((1,), np.float32)
        return state

    def _release_state(self, state: _FaceState) -> None:
        """Give a thread's batch buffer back to the pool (its thread has ended, or the runner closes)."""
        if state.batch is not None:
            self.bound.host_pool.release(state.batch)  # type: ignore[union-attr]
            state.batch = None

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
            pool = self.bound.host_pool  # type: ignore[union-attr]
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
        """Wait for runs in progress, then return the pooled input buffers (and close the
        BoundSession if this runner made it). Idempotent; safe from another thread."""
        if not self._guard.close():
            return
        for state in self._threads.take_all():
            self._release_state(state)
        if self._owns_bound:
            self.bound.close()  # type: ignore[union-attr]

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
