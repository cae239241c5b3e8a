"""``RemoteDFM``: the remote swap in ``DFMRunner``'s shape, so a pipeline's swap step (and DFL's
``convert``) can use the server exactly where it would use the local model.

Standard library and numpy only (Python 3.8), like the client it wraps.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Union

import numpy as np

from dfl_perf.remote.client import RemoteSwapError, RemoteSwapper, as_float

__all__ = ["RemoteDFM", "LIVE_TIMEOUT", "FILES_TIMEOUT", "FILES_PATIENCE"]

LIVE_TIMEOUT = 1.0  # s: a live frame older than this is useless anyway
FILES_TIMEOUT = 10.0
FILES_PATIENCE = 60.0  # s: how long a file job waits for a server that went away (a restart, a lost node)


class RemoteDFM:
    """``resolution``, ``has_morph_value``, ``run(faces, morph_factor) -> DFMOutputs``, ``close()``.

    ``patience``: seconds to keep retrying a swap the server could not do (down, timeout, 5xx) before
    raising ``RemoteSwapError``; 0 (live) fails the frame at once. A 4xx is never retried. Outputs are
    float32 0..1 like DFMRunner's (new arrays, the caller's). ``connections``: swaps that can be in
    flight at once, so the pipeline gives the swap step that many workers.
    """

    def __init__(self, swapper: RemoteSwapper, patience: float = 0.0, owns_swapper: bool = True) -> None:
        info = swapper.info()
        self.swapper = swapper
        self.resolution = int(info["resolution"])
        self.model_name = str(info.get("model", "remote model"))
        self.has_morph_value = bool(info.get("morph"))
        self.patience = float(patience)
        self.connections = swapper.connections
        self.retries = 0
        self._owns = owns_swapper

    @classmethod
    def connect(cls, url: str, token: Optional[str] = None, codec: str = "raw", live: bool = True,
                connections: int = 4, cafile: Optional[str] = None) -> RemoteDFM:
        """A RemoteDFM on a new client: live (short timeout, no retry) or for files (waits for the server)."""
        swapper = RemoteSwapper(url, token=token, codec=codec, connections=connections, cafile=cafile,
                                timeout=LIVE_TIMEOUT if live else FILES_TIMEOUT)
        try:
            return cls(swapper, patience=0.0 if live else FILES_PATIENCE)
        except BaseException:
            swapper.close()
            raise

    def run(self, faces: Union[np.ndarray, Sequence[np.ndarray]], morph_factor: float = 0.75) -> Any:
        """Swap ``faces`` (N, R, R, 3) uint8 BGR (or float32 0..1, or a list): DFMOutputs, float32 0..1."""
        from dfl_perf.buffers.dfm import DFMOutputs

        morph = float(morph_factor) if self.has_morph_value else None
        celeb, celeb_mask, face_mask = as_float(self._swap(faces, morph))
        return DFMOutputs(face_mask, celeb, celeb_mask)

    def _swap(self, faces: Any, morph: Optional[float]) -> Any:
        give_up = time.monotonic() + self.patience
        while True:
            try:
                return self.swapper.swap_uint8(faces, morph)
            except RemoteSwapError as exc:
                if exc.http_status is not None and exc.http_status < 500:
                    raise  # the request itself is wrong: sending it again will not help
                left = give_up - time.monotonic()
                if left <= 0:
                    if self.patience:
                        raise RemoteSwapError("%s (retried for %.0f s)" % (exc.reason, self.patience),
                                              exc.status, exc.http_status) from None
                    raise
                self.retries += 1
                time.sleep(min(0.5, left))

    def close(self) -> None:
        if self._owns:
            self.swapper.close()

    def __enter__(self) -> RemoteDFM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
