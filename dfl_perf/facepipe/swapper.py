"""DFM face swapper: DeepFaceLive's tensor contract, batched over faces.

Contract (DFL's ``DFMModel``): input 0 named like ``in_face:0``, float32 NHWC ``(N, res, res, 3)``,
BGR 0..1; AMP models add input 1 named like ``morph_value:0``, float32 ``(1,)``; three outputs in
the order ``out_face_mask`` (N,res,res,1), ``out_celeb_face`` (N,res,res,3),
``out_celeb_face_mask`` (N,res,res,1) (taken by these names when the model has them).
``swap`` returns them as DFL's ``convert`` does: ``(celeb, celeb_mask, face_mask)``. The contract
is checked in one place, ``dfl_perf.buffers.dfm.check_dfm_contract``; ``DFMContractError`` here is
the same class.

DFL runs one face per call; ``swap`` takes all faces of a frame in one call (the batch axis of
DFM models is dynamic). ``preprocess`` / ``run`` / ``postprocess`` are public so an optimized loop
can fill a pooled input (``preprocess(faces, out=buf)``) and run through its own IOBinding runner.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dfl_perf.buffers.dfm import DFMContractError, check_dfm_contract
from dfl_perf.facepipe._session import ModelArg, ensure_session

__all__ = ["DFMSwapper", "DFMContractError", "DEFAULT_MORPH_FACTOR"]

DEFAULT_MORPH_FACTOR = 0.75  # DFL's default for AMP models

Faces = Union[np.ndarray, Sequence[np.ndarray]]


class DFMSwapper:
    """Run a DFM model: ``swap(faces) -> (celeb, celeb_mask, face_mask)``, float32 0..1.

    ``model``: an onnxruntime session, a path or a registry name. ``resolution``: when given, the
    model must have it. ``morph_factor``: the default for AMP models (DFL's 0.75); giving one for a
    model without a morph input is an error.
    """

    def __init__(self, model: ModelArg, resolution: Optional[int] = None,
                 morph_factor: Optional[float] = None, providers: Optional[Sequence[Any]] = None) -> None:
        self.session = ensure_session(model, providers)
        self._take_contract(resolution)
        if morph_factor is not None and not self.has_morph:
            raise DFMContractError("morph_factor=%r given, but the model has no 'morph_value:0' input "
                                   "(only AMP models take one)" % (morph_factor,))
        self.morph_factor = self._check_morph(DEFAULT_MORPH_FACTOR if morph_factor is None else morph_factor)
        self._morph_arrays: Dict[float, np.ndarray] = {}

    # -- contract -------------------------------------------------------------------------------

    def _take_contract(self, resolution: Optional[int]) -> None:
        contract = check_dfm_contract(self.session.get_inputs(), self.session.get_outputs(), resolution)
        self.input_name: str = contract.input_name
        self.morph_name: Optional[str] = contract.morph_name
        self.resolution: int = contract.resolution
        self.max_batch: Optional[int] = contract.fixed_batch
        self.output_names: List[str] = contract.output_names  # DFL's order, whatever the session's

    @property
    def has_morph(self) -> bool:
        """True for AMP models (a ``morph_value:0`` input)."""
        return self.morph_name is not None

    @property
    def input_shape(self) -> Tuple[int, int, int]:
        """(res, res, 3): the shape of one face."""
        return (self.resolution, self.resolution, 3)

    @staticmethod
    def _check_morph(value: float) -> float:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError("morph_factor must be within 0..1, got %r" % value)
        return value

    # -- the steps ------------------------------------------------------------------------------

    def preprocess(self, faces: Faces, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Faces (N, res, res, 3) uint8 BGR (or float32 0..1), array or list, to the float32 0..1 batch.

        With ``out`` (float32, at least N faces) the batch is written into ``out[:N]``.
        """
        items = self._as_items(faces)
        count = len(items) if isinstance(items, list) else items.shape[0]
        if out is None:
            out = np.empty((count,) + self.input_shape, dtype=np.float32)
        elif out.dtype != np.float32 or out.shape[1:] != self.input_shape or out.shape[0] < count:
            raise ValueError("out must be float32 (>=%d, %d, %d, 3), got %s %s"
                             % (count, self.resolution, self.resolution, out.dtype, out.shape))
        else:
            out = out[:count]
        if isinstance(items, list):
            for i, face in enumerate(items):
                self._to_unit(face, out[i])
        else:
            self._to_unit(items, out)
        return out

    @staticmethod
    def _to_unit(faces: np.ndarray, out: np.ndarray) -> None:
        if faces.dtype == np.uint8:
            np.divide(faces, 255.0, out=out, dtype=np.float32)
        else:
            np.copyto(out, faces)

    def _as_items(self, faces: Faces) -> Union[np.ndarray, List[np.ndarray]]:
        if isinstance(faces, np.ndarray):
            if faces.ndim == 3:
                faces = faces[None]
            if faces.shape[1:] != self.input_shape:
                raise DFMContractError("faces must be (N, %d, %d, 3) for this model, got %s"
                                       % (self.resolution, self.resolution, faces.shape))
            self._check_dtype(faces)
            return faces
        items = list(faces)
        for face in items:
            if not isinstance(face, np.ndarray) or face.shape != self.input_shape:
                raise DFMContractError("each face must be a (%d, %d, 3) array for this model, got %s"
                                       % (self.resolution, self.resolution, getattr(face, "shape", type(face))))
            self._check_dtype(face)
        return items

    @staticmethod
    def _check_dtype(faces: np.ndarray) -> None:
        if faces.dtype not in (np.uint8, np.float32):
            raise DFMContractError("faces must be uint8 0..255 or float32 0..1, got %s" % faces.dtype)

    def morph_array(self, morph_factor: Optional[float] = None) -> np.ndarray:
        """The ``morph_value:0`` feed, float32 (1,), cached per value."""
        value = self.morph_factor if morph_factor is None else self._check_morph(morph_factor)
        array = self._morph_arrays.get(value)
        if array is None:
            array = self._morph_arrays[value] = np.array([value], dtype=np.float32)
        return array

    def feeds(self, batch: np.ndarray, morph_factor: Optional[float] = None) -> Dict[str, np.ndarray]:
        """The input dict for ``session.run`` (with the morph value for AMP models)."""
        if morph_factor is not None and not self.has_morph:
            raise DFMContractError("morph_factor given, but the model has no 'morph_value:0' input")
        feeds = {self.input_name: batch}
        if self.morph_name is not None:
            feeds[self.morph_name] = self.morph_array(morph_factor)
        return feeds

    def run(self, batch: np.ndarray, morph_factor: Optional[float] = None) -> List[np.ndarray]:
        """Raw outputs in DFL's order (out_face_mask, out_celeb_face, out_celeb_face_mask), by name when the
        model's outputs carry DFL's names."""
        names = self.output_names
        if self.max_batch is not None and batch.shape[0] != self.max_batch:
            parts = [self.session.run(names, self.feeds(batch[i:i + 1], morph_factor)) for i in range(batch.shape[0])]
            return [np.concatenate([p[k] for p in parts]) for k in range(3)]
        return self.session.run(names, self.feeds(batch, morph_factor))

    @staticmethod
    def postprocess(outputs: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reorder raw outputs to DFL's ``convert`` order: (celeb, celeb_mask, face_mask)."""
        face_mask, celeb, celeb_mask = outputs
        return celeb, celeb_mask, face_mask

    def swap(self, faces: Faces, morph_factor: Optional[float] = None
             ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Swap N aligned faces in one run; (celeb (N,res,res,3), celeb_mask (N,res,res,1), face_mask (N,res,res,1))."""
        if morph_factor is not None and not self.has_morph:
            raise DFMContractError("morph_factor given, but the model has no 'morph_value:0' input")
        batch = self.preprocess(faces)
        if batch.shape[0] == 0:
            res = self.resolution
            return (np.zeros((0, res, res, 3), np.float32), np.zeros((0, res, res, 1), np.float32),
                    np.zeros((0, res, res, 1), np.float32))
        return self.postprocess(self.run(batch, morph_factor))
