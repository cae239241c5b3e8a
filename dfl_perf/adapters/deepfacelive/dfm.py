"""A faster ``DFMModel.convert`` with DeepFaceLive's exact inputs and returns.

DFL's ``convert(img, morph_factor=0.75)`` takes an HW, HWC or NHWC uint8/float32 image of any size,
resizes it to the model's resolution (bilinear, in the input's dtype), keeps 3 channels, scales
uint8 by 1/255, runs the model, and returns ``(celeb, celeb_mask, face_mask)`` as NHWC arrays
resized back to the input size in the input dtype (float -> uint8 is ``x * 255``, clipped and
truncated). ``FastDFM`` does the same through ``dfl_perf.buffers.DFMRunner`` (IOBinding into
pooled buffers, the uint8 scale written straight into the bound input) and allocates only the
three arrays it returns, which the caller owns. ``convert_batch`` swaps several faces of a frame in
one run.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any, List, Sequence, Tuple

import numpy as np

from dfl_perf.buffers.dfm import DEFAULT_MORPH_FACTOR

__all__ = ["FastDFM", "fast_convert", "convert_faces", "patch_dfm_class", "session_device"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

DFMResult = Tuple[np.ndarray, np.ndarray, np.ndarray]  # celeb (N,H,W,3), celeb_mask (N,H,W,1), face_mask (N,H,W,1)
_FAST_ATTR = "_dfl_perf_fast_dfm"
_MEMORY_ATTR = "_dfl_perf_memory"  # on the patched DFMModel class: the installed MemoryManager
_SCALE = np.float32(255.0)


def session_device(session: Any) -> Tuple[str, int]:
    """('cuda', id) for a session running on the CUDA provider, else ('cpu', 0) (host-bound buffers)."""
    providers = list(session.get_providers())
    if providers and providers[0] == "CUDAExecutionProvider":
        options = session.get_provider_options().get("CUDAExecutionProvider", {})
        return "cuda", int(options.get("device_id", 0) or 0)
    return "cpu", 0


def _as_nhwc(img: Any) -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError("DFM convert: img must be a numpy array (HW, HWC or NHWC), got %s" % type(img).__name__)
    if img.dtype != np.uint8 and img.dtype != np.float32:
        raise TypeError("DFM convert: img must be uint8 or float32 (as in DeepFaceLive), got %s" % img.dtype)
    if img.ndim == 2:
        return img[None, :, :, None]
    if img.ndim == 3:
        return img[None]
    if img.ndim == 4:
        return img
    raise ValueError("DFM convert: img must be HW, HWC or NHWC, got shape %s" % (img.shape,))


def _resize_into(src: np.ndarray, dst: np.ndarray) -> None:
    """Bilinear resize of each NHWC image in src into dst (cv2.INTER_LINEAR, as DFL's ImageProcessor)."""
    import cv2

    height, width = dst.shape[1], dst.shape[2]
    for i in range(src.shape[0]):
        target = dst[i] if dst.shape[3] > 1 else dst[i, :, :, 0]
        image = src[i] if src.shape[3] > 1 else src[i, :, :, 0]
        cv2.resize(image, (width, height), dst=target, interpolation=cv2.INTER_LINEAR)


def _channels(x: np.ndarray, count: int) -> np.ndarray:
    """DFL's ``ch(count)``: keep the first ``count`` channels, or repeat the first one (a view)."""
    have = x.shape[3]
    if have == count:
        return x
    if have > count:
        return x[..., :count]
    return np.broadcast_to(x[..., :1], x.shape[:3] + (count,))


class FastDFM:
    """DeepFaceLive's DFM ``convert`` through pooled buffers and IOBinding; thread-safe.

    ``session``: the DFM's onnxruntime session (``DFMModel._sess``). ``convert`` returns exactly what
    DFL's does; ``convert_batch`` takes a list of images (any sizes) and runs them in one batch.
    ``runner``: instead of a session, any runner in DFMRunner's shape (the remote swap's RemoteDFM).
    """

    def __init__(self, session: Any, runner: Any = None) -> None:
        from dfl_perf.buffers import BufferPool, DFMRunner

        self.pool = BufferPool()
        if runner is None:
            device, device_id = session_device(session)
            runner = DFMRunner(session, device, device_id, host_pool=self.pool)
        self.runner = runner
        self.resolution = self.runner.resolution

    @property
    def has_morph_value(self) -> bool:
        """True for AMP models (``morph_value:0`` input)."""
        return self.runner.has_morph_value

    def convert(self, img: np.ndarray, morph_factor: float = DEFAULT_MORPH_FACTOR) -> DFMResult:
        """DFL's ``DFMModel.convert``: (celeb NHW3, celeb_mask NHW1, face_mask NHW1), input size and dtype."""
        faces = _as_nhwc(img)
        return self._convert([faces], morph_factor)[0]

    def convert_batch(self, images: Sequence[np.ndarray], morph_factor: float = DEFAULT_MORPH_FACTOR) -> List[DFMResult]:
        """``convert`` for several images in one model run; one (celeb, celeb_mask, face_mask) per image."""
        if isinstance(images, np.ndarray) or not len(images):
            raise ValueError("DFM convert_batch: expected a non-empty list of images")
        return self._convert([_as_nhwc(img) for img in images], morph_factor)

    def _convert(self, groups: List[np.ndarray], morph_factor: float) -> List[DFMResult]:
        leases: List[np.ndarray] = []
        try:
            faces = self._prepare(groups, leases)
            outputs = self.runner.run(faces, morph_factor)
            results = []
            start = 0
            for group in groups:
                n, height, width, _ = group.shape
                end = start + n
                results.append((
                    self._finish(outputs.celeb_face[start:end], height, width, 3, group.dtype, leases),
                    self._finish(outputs.celeb_face_mask[start:end], height, width, 1, group.dtype, leases),
                    self._finish(outputs.face_mask[start:end], height, width, 1, group.dtype, leases),
                ))
                start = end
            return results
        finally:
            for buf in leases:
                self.pool.release(buf)

    def _prepare(self, groups: List[np.ndarray], leases: List[np.ndarray]) -> List[np.ndarray]:
        """Each group resized to the model resolution in its own dtype, then 3 channels (views where possible)."""
        res = self.resolution
        faces: List[np.ndarray] = []
        for group in groups:
            n, height, width, channels = group.shape
            if (height, width) != (res, res):
                resized = self.pool.acquire((n, res, res, channels), group.dtype)
                leases.append(resized)
                _resize_into(group, resized)
                group = resized
            group = _channels(group, 3)
            faces.extend(group)
        return faces

    def _finish(self, x: np.ndarray, height: int, width: int, channels: int, dtype: np.dtype,
                leases: List[np.ndarray]) -> np.ndarray:
        """One model output back to the caller's size, channel count and dtype, as a new array."""
        n = x.shape[0]
        if x.shape[1:3] != (height, width):
            resized = self.pool.acquire((n, height, width, x.shape[3]), np.float32)
            leases.append(resized)
            _resize_into(x, resized)
            x = resized
        x = _channels(x, channels)
        if dtype == np.float32:
            return np.array(x, dtype=np.float32, copy=True)
        scaled = self.pool.acquire(x.shape, np.float32)
        leases.append(scaled)
        np.multiply(x, _SCALE, out=scaled)
        np.clip(scaled, 0, 255, out=scaled)
        out = np.empty(x.shape, np.uint8)
        np.copyto(out, scaled, casting="unsafe")  # truncation, as DFL's astype(np.uint8)
        return out

    def close(self) -> None:
        """Release the pooled buffers and the IOBinding state."""
        self.runner.close()
        self.pool.trim()

    def __enter__(self) -> FastDFM:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ------------------------------------------------------------------------------ DFMModel integration

def _fast_for(model: Any) -> Any:
    """The FastDFM attached to a DFL DFMModel (made on first use), or None when it cannot be used."""
    fast = model.__dict__.get(_FAST_ATTR)
    if fast is None:
        session = model.__dict__.get("_sess")
        try:
            if session is None:
                raise AttributeError("DFMModel has no _sess session")
            fast = FastDFM(session)
        except Exception as exc:  # an unexpected model layout: keep DFL's own path for this model
            log.warning("dfl_perf: fast DFM path off for %s (%s); using DeepFaceLive's convert",
                        model.__dict__.get("_model_path", "this model"), exc)
            fast = False
        model.__dict__[_FAST_ATTR] = fast
        if fast:
            _register_pool(model, fast)
    return fast or None


def _register_pool(model: Any, fast: FastDFM) -> None:
    """Put the FastDFM's pool under the installed MemoryManager (``DFLConfig.memory_budget``), for as
    long as the FastDFM lives (DFL drops a DFMModel when the user switches models)."""
    memory = getattr(type(model), _MEMORY_ATTR, None)
    if memory is None:
        return
    memory.register(fast.pool)
    weakref.finalize(fast, _forget_pool, memory, fast.pool)


def _forget_pool(memory: Any, pool: Any) -> None:
    with contextlib.suppress(KeyError):  # already taken off (the manager was closed and dropped it)
        memory.unregister(pool)


def fast_convert(dfm_model: Any, img: np.ndarray, morph_factor: float = DEFAULT_MORPH_FACTOR) -> DFMResult:
    """``dfm_model.convert(img, morph_factor)`` through the fast path (DFL's path if it cannot apply)."""
    fast = _fast_for(dfm_model)
    if fast is None:
        original = getattr(type(dfm_model).convert, "dfl_perf_original", type(dfm_model).convert)
        return original(dfm_model, img, morph_factor)
    return fast.convert(img, morph_factor)


def convert_faces(dfm_model: Any, images: Sequence[np.ndarray], morph_factor: float = DEFAULT_MORPH_FACTOR) -> List[DFMResult]:
    """Several faces of one frame through one DFM run; DFL's path face by face if the fast path cannot apply."""
    fast = _fast_for(dfm_model)
    if fast is None:
        return [fast_convert(dfm_model, img, morph_factor) for img in images]
    return fast.convert_batch(images, morph_factor)


def patch_dfm_class(module: Any, patcher: Any, memory: Any = None) -> None:
    """Point ``module.DFMModel.convert`` at the fast path and add ``convert_batch`` (undone by ``patcher``);
    with a ``memory`` manager, each fast path's buffer pool is registered with it."""
    def fast(original: Any) -> Any:
        def convert(self, img, morph_factor=DEFAULT_MORPH_FACTOR):
            runner = _fast_for(self)
            if runner is None:
                return original(self, img, morph_factor)
            return runner.convert(img, morph_factor)
        return convert

    def convert_batch(self, images, morph_factor=DEFAULT_MORPH_FACTOR):
        return convert_faces(self, images, morph_factor)

    cls = patcher.wrap_method(module, "DFMModel", "convert", fast, "fast DFM path")
    if cls is None:
        return
    patcher.replace(cls, "convert_batch", convert_batch)
    if memory is not None:
        patcher.replace(cls, _MEMORY_ATTR, memory)
