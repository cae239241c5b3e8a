"""Stand-in StreamOutput: picks the view image (DFL's source types), keeps ``target_delay`` ms of views
in a delay buffer (DFL: 500 ms by default) and "streams" each view as uint8. It records what reached
the output: arrival times, frames whose merged image was lost (faces were swapped, the merged image
reads as missing) or whose frame image was lost, and a few output frames saved as .npy."""

import time
from collections import deque
from enum import IntEnum
from pathlib import Path

import numpy as np
from xlib import time as lib_time
from xlib.image import ImageProcessor

from .BackendBase import BackendWorker


class SourceType(IntEnum):
    SOURCE_FRAME = 0
    ALIGNED_FACE = 1
    SWAPPED_FACE = 2
    MERGED_FRAME = 3
    MERGED_FRAME_OR_SOURCE_FRAME = 4
    SOURCE_N_MERGED_FRAME = 5
    SOURCE_N_MERGED_FRAME_OR_SOURCE_FRAME = 6
    ALIGNED_N_SWAPPED_FACE = 7


class DelayedBuffers:
    """Holds view images until they are ``target_delay`` seconds old, then lets the newest due one out."""

    def __init__(self, target_delay):
        self._buffers = deque()
        self._target_delay = target_delay

    def add_buffer(self, timestamp, data):
        self._buffers.append((timestamp, data))

    def process(self):
        now = time.time()
        due = None
        while self._buffers and now - self._buffers[0][0] >= self._target_delay:
            due = self._buffers.popleft()[1]
        return due


class StreamOutputWorker(BackendWorker):
    def on_start(self, weak_heap, reemit_frame_signal, bc_in, out_dir=None):
        self.weak_heap = weak_heap
        self.bc_in = bc_in
        state = self.get_state()
        if state.source_type is None:
            state.source_type = SourceType.MERGED_FRAME_OR_SOURCE_FRAME
        self.buffered_frames = DelayedBuffers(state.get("target_delay", 500) / 1000.0)
        self.fps_counter = lib_time.FPSCounter()
        self.out_dir = Path(out_dir) if out_dir else None
        self.save_frames = set(state.get("save_frames", ()))
        self.arrivals, self.frame_nums = [], []
        self.lost_merged, self.lost_frame, self.no_face = [], [], 0
        self.merged_dtypes = set()
        self.avg_fps = 0.0

    def _view_image(self, bcd):
        source_type = self.get_state().source_type
        if source_type == SourceType.SOURCE_FRAME:
            return bcd.get_image(bcd.get_frame_image_name())
        if source_type in (SourceType.MERGED_FRAME, SourceType.MERGED_FRAME_OR_SOURCE_FRAME):
            view = bcd.get_image(bcd.get_merged_image_name())
            if view is None and source_type == SourceType.MERGED_FRAME_OR_SOURCE_FRAME:
                view = bcd.get_image(bcd.get_frame_image_name())
            return view
        if source_type in (SourceType.SOURCE_N_MERGED_FRAME, SourceType.SOURCE_N_MERGED_FRAME_OR_SOURCE_FRAME):
            source = bcd.get_image(bcd.get_frame_image_name())
            if source is not None:
                source = ImageProcessor(source).to_ufloat32().get_image("HWC")
            merged = bcd.get_image(bcd.get_merged_image_name())
            if merged is None and source_type == SourceType.SOURCE_N_MERGED_FRAME_OR_SOURCE_FRAME:
                merged = source
            if source is not None and merged is not None:
                return np.concatenate((source, merged), 1)
            return None
        for fsi in bcd.get_face_swap_info_list():
            name = fsi.face_align_image_name if source_type == SourceType.ALIGNED_FACE else fsi.face_swap_image_name
            view = bcd.get_image(name)
            if view is not None:
                return view
        return None

    def _account(self, bcd):
        """Counts what reached the output without copying an image (DFL's StreamOutput has no such step)."""
        frame_num = bcd.get_frame_num()
        swapped = [fsi for fsi in bcd.get_face_swap_info_list() if fsi.face_swap_image_name is not None]
        merged_name = bcd.get_merged_image_name()
        merged = bcd.has_image(merged_name)
        if merged:
            self.merged_dtypes.add(str(bcd.get_image_shape_dtype(merged_name)[1]))
        if not bcd.get_face_swap_info_list():
            self.no_face += 1
        if not bcd.has_image(bcd.get_frame_image_name()):
            self.lost_frame.append(frame_num)
        elif not merged and (swapped or merged_name is not None):
            self.lost_merged.append(frame_num)

    def on_tick(self):
        bcd = self.bc_in.read(timeout=0.005)
        if bcd is None:
            return
        bcd.assign_weak_heap(self.weak_heap)
        self.arrivals.append(time.perf_counter())
        self.frame_nums.append(bcd.get_frame_num())
        self.send_msg("output_frame", bcd.get_frame_num())
        self.avg_fps = self.fps_counter.step()
        self._account(bcd)
        view_image = self._view_image(bcd)
        if view_image is not None:
            self.buffered_frames.add_buffer(bcd.get_frame_timestamp(), view_image)
            streamed = ImageProcessor(view_image, copy=True).to_uint8().get_image("HWC")
            if self.out_dir is not None and bcd.get_frame_num() in self.save_frames:
                np.save(str(self.out_dir / ("frame_%06d.npy" % bcd.get_frame_num())), streamed)
        self.buffered_frames.process()

    def report(self):
        return {"frames": len(self.arrivals), "arrivals": self.arrivals, "frame_nums": self.frame_nums,
                "lost_merged": self.lost_merged, "lost_frame": self.lost_frame, "no_face": self.no_face,
                "merged_dtypes": sorted(self.merged_dtypes), "avg_fps": self.avg_fps}
