"""StreamOutput with a uint8 merged frame: every view shows what it showed with DFL's float32 frame.

With the fast merge the merged frame travels as uint8 (``merger``). What DFL does downstream with it:
the merged-frame views, the preview, the JPEG sequence and the stream all convert to uint8 anyway
(cv2.imshow takes both), so they show the same levels. Only the side-by-side views
(``SOURCE_N_MERGED_FRAME`` and ``..._OR_SOURCE_FRAME``) join the source frame, made float32 0..1, with
the merged one: a uint8 merged frame there would be off by 255. While StreamOutput builds one of
those views, ``BackendConnectionData.get_image`` hands it the merged frame as float32 (DFL's own
uint8 -> float conversion), exactly what it had before.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

__all__ = ["patch_stream_output", "SIDE_BY_SIDE"]

log = logging.getLogger("dfl_perf.adapters.deepfacelive")

#: DFL's StreamOutput SourceType values that join the source and merged frames
SIDE_BY_SIDE = (5, 6)
_side_by_side = [False]  # set while StreamOutput's on_tick builds a side-by-side view (one thread per worker)


def patch_stream_output(module: Any, patcher: Any, config: Any) -> None:
    """Patch DFL's ``StreamOutputWorker.on_tick`` and ``BackendConnectionData.get_image`` (see above)."""
    worker_cls = getattr(module, "StreamOutputWorker", None)
    base = sys.modules.get(module.__name__.rpartition(".")[0] + ".BackendBase")  # StreamOutput imports it first
    bcd_cls = getattr(base, "BackendConnectionData", None)
    if worker_cls is None or bcd_cls is None or not callable(getattr(bcd_cls, "get_image", None)):
        log.warning("dfl_perf: %s: no StreamOutputWorker/BackendConnectionData; the merged frame stays float32",
                    module.__name__)
        return
    source_types = getattr(module, "SourceType", None)
    side_by_side = {int(getattr(source_types, name)) for name in ("SOURCE_N_MERGED_FRAME",
                                                                   "SOURCE_N_MERGED_FRAME_OR_SOURCE_FRAME")
                    if hasattr(source_types, name)} or set(SIDE_BY_SIDE)
    original_tick, original_get = worker_cls.on_tick, bcd_cls.get_image

    def on_tick(self):
        source_type = getattr(self.get_state(), "source_type", None)
        _side_by_side[0] = source_type is not None and int(source_type) in side_by_side
        try:
            return original_tick(self)
        finally:
            _side_by_side[0] = False

    def get_image(self, key):
        image = original_get(self, key)
        if _side_by_side[0] and image is not None and image.dtype == np.uint8 and key is not None \
                and key == self.get_merged_image_name():
            image = image.astype(np.float32)
            image /= np.float32(255.0)
        return image

    patcher.replace(worker_cls, "on_tick", on_tick)
    patcher.replace(bcd_cls, "get_image", get_image)
