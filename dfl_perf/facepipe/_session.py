"""Turn a model argument (path, registry name or ready session) into an onnxruntime session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

ModelArg = Union[str, "os.PathLike[str]", Any]

__all__ = ["ModelArg", "ensure_session", "is_session"]


def is_session(obj: Any) -> bool:
    """True for an onnxruntime InferenceSession (or anything with the same run/inputs API)."""
    return callable(getattr(obj, "run", None)) and callable(getattr(obj, "get_inputs", None))


def ensure_session(model: ModelArg, providers: Optional[Sequence[Any]] = None):
    """Return ``model`` if it is a session, else open it the plain way (no tuning, like DFL).

    ``model`` may be a session, a path to an .onnx file, or a name from ``facepipe.models.REGISTRY``
    (resolved through ``model_path``: mirror, user cache, then download).
    """
    if is_session(model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError("model must be an onnxruntime InferenceSession, a path or a model name, got %r"
                        % type(model).__name__)
    path = Path(model)
    if not path.is_file():
        from dfl_perf.facepipe.models import REGISTRY, model_path
        if str(model) in REGISTRY:
            path = model_path(str(model))
        else:
            raise FileNotFoundError("model file not found: %s (and %r is not a registered model name: %s)"
                                    % (path, str(model), ", ".join(sorted(REGISTRY))))
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; DFL uses 4
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=list(providers) if providers else ["CPUExecutionProvider"])
