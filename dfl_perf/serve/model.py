"""One replica's DFM: a tuned session run through IOBinding with pooled buffers, uint8 in and out.

No Ray here: the Serve deployment (``app``) holds one ``SwapModel`` per replica and hands it
batches; this module only knows faces and the model.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR
from dfl_perf.remote.wire import SwapReply, quantise

__all__ = ["SwapModel"]


class SwapModel:
    """The DFM of ``model_path`` on ``provider`` ('cuda', 'cpu', ...; default: the best available).

    ``swap(faces, morph)`` runs (N, R, R, 3) uint8 faces and returns a ``SwapReply`` of new uint8
    arrays. ``swap_groups`` runs the faces of several requests together: one model run per morph
    value when the model's batch axis is dynamic, else runs of the model's fixed batch (one face
    each for the usual fixed batch of 1, the last run padded). ``threads``: intra-op threads on a
    CPU (default: the cores this process may use).
    """

    def __init__(self, model_path: str, provider: Optional[str] = None, device_id: int = 0,
                 threads: Optional[int] = None) -> None:
        from dfl_perf.buffers import BufferPool, DFMRunner
        from dfl_perf.buffers.dfm import check_dfm_contract
        from dfl_perf.devices import select_providers
        from dfl_perf.sessions import SessionConfig, create_session_with_info
        from dfl_perf.sessions.config import GPU_PROVIDERS

        path = Path(model_path)
        providers = select_providers(provider, device_id) if provider else select_providers(device_id=device_id)
        config = SessionConfig.tuned(threads=threads, providers=providers)
        started = time.perf_counter()
        info = create_session_with_info(str(path), config)
        self.load_seconds = time.perf_counter() - started
        self.provider = info.providers[0]
        device = "cuda" if self.provider == "CUDAExecutionProvider" else "cpu"
        self.pool = BufferPool(max_bytes=512 << 20)
        self.runner = DFMRunner(info.session, device, device_id if device != "cpu" else 0, host_pool=self.pool)
        self.name = path.stem
        self.resolution = self.runner.resolution
        self.fixed_batch = check_dfm_contract(info.session.get_inputs(), info.session.get_outputs()).fixed_batch
        self.on_gpu = self.provider in GPU_PROVIDERS
        self.threads = config.intra_op_threads
        self._scratch = threading.local()
        self.runs = self.faces = 0
        self.run_seconds = 0.0
        self.warm_up()
        self.runs = self.faces = 0  # counters of real requests only
        self.run_seconds = 0.0

    def warm_up(self) -> None:
        """Two runs on a blank face, so that the first client's face does not pay onnxruntime's first run."""
        blank = np.zeros((1, self.resolution, self.resolution, 3), np.uint8)
        for _ in range(2):
            self.swap(blank)

    @property
    def has_morph(self) -> bool:
        return self.runner.has_morph_value

    @property
    def can_batch(self) -> bool:
        """True when faces of several requests can share one model run (a dynamic batch axis)."""
        return self.fixed_batch is None

    def describe(self) -> Dict[str, Any]:
        """What ``GET /info`` reports about the model."""
        return {"model": self.name, "resolution": self.resolution, "morph": self.has_morph,
                "provider": self.provider, "batch_axis": "dynamic" if self.can_batch else self.fixed_batch}

    def swap(self, faces: np.ndarray, morph: Optional[float] = None) -> SwapReply:
        """One request's faces: (N, R, R, 3) uint8 BGR in, new uint8 outputs out."""
        return self.swap_groups([(faces, morph)])[0]

    def swap_groups(self, groups: Sequence[Tuple[np.ndarray, Optional[float]]]) -> List[SwapReply]:
        """Several requests' faces in as few model runs as the model allows; one reply per request."""
        replies: List[Optional[SwapReply]] = [None] * len(groups)
        by_morph: Dict[float, List[int]] = {}
        for i, (_, morph) in enumerate(groups):
            key = DEFAULT_MORPH_FACTOR if morph is None or not self.has_morph else float(morph)
            by_morph.setdefault(key, []).append(i)
        for morph, members in by_morph.items():
            faces = [groups[i][0] for i in members]
            outputs = self._run_all(np.concatenate(faces) if len(faces) > 1 else faces[0], morph)
            start = 0
            for i, group in zip(members, faces):
                end = start + len(group)
                replies[i] = SwapReply(outputs.celeb[start:end], outputs.celeb_mask[start:end],
                                       outputs.face_mask[start:end])
                start = end
        return replies  # type: ignore[return-value]

    def _run_all(self, faces: np.ndarray, morph: float) -> SwapReply:
        n, res = faces.shape[0], self.resolution
        out = SwapReply(np.empty((n, res, res, 3), np.uint8), np.empty((n, res, res), np.uint8),
                        np.empty((n, res, res), np.uint8))
        step = n if self.fixed_batch is None else self.fixed_batch
        for start in range(0, n, step):
            chunk = faces[start:start + step]
            real = len(chunk)
            if real < step:  # a fixed batch larger than the faces left: pad with the last face
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - real, axis=0)])
            began = time.perf_counter()
            result = self.runner.run(chunk, morph)
            self.run_seconds += time.perf_counter() - began
            self.runs += 1
            self.faces += real
            scratch = self._scratch_for(real)
            quantise(result.celeb_face[:real], out.celeb[start:start + real], scratch)
            quantise(result.celeb_face_mask[:real, ..., 0], out.celeb_mask[start:start + real], scratch[..., 0])
            quantise(result.face_mask[:real, ..., 0], out.face_mask[start:start + real], scratch[..., 0])
        return out

    def _scratch_for(self, count: int) -> np.ndarray:
        shape = (count, self.resolution, self.resolution, 3)
        scratch = getattr(self._scratch, "buffer", None)
        if scratch is None or scratch.shape[0] < count:
            scratch = self._scratch.buffer = np.empty(shape, np.float32)
        return scratch[:count]

    def close(self) -> None:
        self.runner.close()
        self.pool.trim()
