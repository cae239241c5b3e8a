"""Run a session once or more on zero inputs so its first real frame is not the slow one."""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional

from dfl_perf.ortinfo import numpy_dtype_of

__all__ = ["warmup_session", "zero_inputs"]


def zero_inputs(session: Any, dims: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """Zero arrays for every input of ``session``: declared sizes, symbolic dimensions from ``dims``
    (name -> size) or 1, unknown dimensions 1. Raises ValueError for a type it cannot build."""
    import numpy as np  # here: importing dfl_perf.sessions costs a DFL worker no numpy before DFL's own

    dims = dict(dims or {})
    feeds = {}
    for arg in session.get_inputs():
        dtype = numpy_dtype_of(arg.type)
        if dtype is None:
            raise ValueError("cannot build a warm-up value for input %r of type %s" % (arg.name, arg.type))
        shape = []
        for dim in arg.shape or []:
            if isinstance(dim, int) and dim >= 0:
                shape.append(dim)
            else:
                shape.append(int(dims.get(dim, 1)) if isinstance(dim, str) else 1)
        array = np.zeros(shape, dtype=dtype)
        if dtype.hasobject:
            array[...] = ""
        feeds[arg.name] = array
    return feeds


def warmup_session(session: Any, runs: int = 1, dims: Optional[Mapping[str, int]] = None) -> List[float]:
    """Run ``session`` ``runs`` times on ``zero_inputs``; return the seconds of each run."""
    feeds = zero_inputs(session, dims)
    seconds = []
    for _ in range(max(0, runs)):
        started = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - started)
    return seconds
