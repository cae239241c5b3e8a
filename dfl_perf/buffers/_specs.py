"""What a session expects: input/output specs and the checks that turn bad feeds into clear errors."""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from dfl_perf.ortinfo import numpy_dtype_of

__all__ = ["TensorSpec", "tensor_specs", "check_feed_names", "describe_shape"]

Dim = Any  # int, or a symbolic name / None for a dynamic axis


def describe_shape(dims: Sequence[Dim]) -> str:
    """[N, 224, 224, 3] style text for a declared shape (dynamic axes by their name or '?')."""
    return "[%s]" % ", ".join(str(d) if isinstance(d, int) else (str(d) if d else "?") for d in dims)


class TensorSpec:
    """One model input or output: name, numpy dtype, declared dims (ints, or symbols for dynamic axes)."""

    __slots__ = ("name", "dtype", "dims", "ort_type", "_fixed", "rank")

    def __init__(self, name: str, dtype: np.dtype, dims: Sequence[Dim], ort_type: str) -> None:
        self.name = name
        self.dtype = dtype
        self.dims = tuple(d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
                          for d in dims)
        self.ort_type = ort_type
        self.rank = len(self.dims)
        self._fixed = tuple((i, d) for i, d in enumerate(self.dims) if isinstance(d, int))

    @property
    def static_shape(self) -> Optional[Tuple[int, ...]]:
        """The shape when every axis is fixed, else None."""
        return self.dims if len(self._fixed) == self.rank else None

    def accepts(self, shape: Sequence[int]) -> bool:
        if len(shape) != self.rank:
            return False
        for i, d in self._fixed:
            if shape[i] != d:
                return False
        return True

    def check_array(self, value: np.ndarray) -> None:
        """Raise TypeError/ValueError naming this tensor when dtype or shape do not fit."""
        if value.dtype != self.dtype:
            raise TypeError("input %r: expected dtype %s, got %s (convert it explicitly; no silent casts)"
                            % (self.name, self.dtype, value.dtype))
        if not self.accepts(value.shape):
            raise ValueError("input %r: expected shape %s, got %s"
                             % (self.name, describe_shape(self.dims), tuple(value.shape)))

    def check_ortvalue(self, value: Any) -> Tuple[int, ...]:
        """Same checks for an OrtValue; returns its shape."""
        got_type = value.data_type()
        if got_type != self.ort_type:
            raise TypeError("input %r: expected an OrtValue of %s, got %s" % (self.name, self.ort_type, got_type))
        shape = tuple(value.shape())
        if not self.accepts(shape):
            raise ValueError("input %r: expected shape %s, got %s" % (self.name, describe_shape(self.dims), shape))
        return shape


def tensor_specs(args: Sequence[Any], what: str) -> List[TensorSpec]:
    """Specs from session.get_inputs()/get_outputs(); non-tensor or exotic types raise ValueError."""
    specs = []
    for arg in args:
        dtype = numpy_dtype_of(arg.type)
        if dtype is None or dtype.hasobject:
            raise ValueError("%s %r has type %s; BoundSession handles numeric and bool tensors only"
                             % (what, arg.name, arg.type))
        specs.append(TensorSpec(arg.name, dtype, list(arg.shape or []), arg.type))
    return specs


def check_feed_names(feeds: Mapping[str, Any], names: Sequence[str]) -> None:
    """Raise ValueError naming missing and unknown inputs (called only when names do not match)."""
    missing = [n for n in names if n not in feeds]
    unknown = [n for n in feeds if n not in names]
    parts = []
    if missing:
        parts.append("missing input(s) %s" % ", ".join(repr(n) for n in missing))
    if unknown:
        parts.append("unknown input name(s) %s" % ", ".join(repr(n) for n in unknown))
    raise ValueError("%s (the model's inputs: %s)" % ("; ".join(parts), ", ".join(repr(n) for n in names)))
