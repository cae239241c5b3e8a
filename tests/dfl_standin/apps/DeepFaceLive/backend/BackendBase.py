"""Stand-in backend base, with DFL's interfaces: frame data (``BackendConnectionData``) whose images live
in the shared ``BackendWeakHeap``, a pickled-record ring between two stages (``BackendConnection``),
and ``BackendWorker`` with DFL's ``start_profile_timing``/``stop_profile_timing`` hooks.

A worker runs in its own spawned process: ``on_start(*start_args)``, then ``on_tick()`` until the
app's stop event is set, then ``on_stop()``; ``send_msg`` reaches the app (DFL: the Qt host).
"""

import multiprocessing
import os
import pickle

from xlib import mp as lib_mp
from xlib import time as lib_time


class BackendFaceSwapInfo:
    def __init__(self):
        self.image_name = None
        self.face_urect = None
        self.face_pose = None
        self.face_ulmrks = None
        self.face_resolution = None
        self.face_align_image_name = None
        self.face_align_mask_name = None
        self.face_align_lmrks_mask_name = None
        self.face_anim_image_name = None
        self.face_swap_image_name = None
        self.face_swap_mask_name = None
        self.image_to_align_uni_mat = None
        self.face_align_ulmrks = None

    def __getstate__(self):
        return self.__dict__.copy()

    def __setstate__(self, state):
        self.__init__()
        self.__dict__.update(state)


class BackendConnectionData:
    """One frame's metadata; its images are weak references into the shared heap."""

    def __init__(self, uid):
        self._weak_heap = None
        self._weak_heap_refs = {}
        self._weak_heap_image_infos = {}
        self._uid = uid
        self._is_frame_reemitted = None
        self._frame_image_name = None
        self._frame_count = None
        self._frame_num = None
        self._frame_fps = None
        self._frame_timestamp = None
        self._merged_image_name = None
        self._face_swap_info_list = []

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_weak_heap"] = None
        return state

    def assign_weak_heap(self, weak_heap):
        self._weak_heap = weak_heap

    def set_file(self, key, data):
        self._weak_heap_refs[key] = self._weak_heap.add_data(data)

    def get_file(self, key):
        ref = self._weak_heap_refs.get(key)
        return self._weak_heap.get_data(ref) if ref is not None else None

    def set_image(self, key, image):
        self.set_file(key, image.data)
        self._weak_heap_image_infos[key] = (image.shape, image.dtype)

    def has_image(self, key):
        """True if the image was set and is not overwritten yet, without copying it (the stand-in's accounting)."""
        ref = self._weak_heap_refs.get(key) if key is not None else None
        return ref is not None and self._weak_heap.has_data(ref)

    def get_image_shape_dtype(self, key):
        return self._weak_heap_image_infos.get(key, (None, None)) if key is not None else (None, None)

    def get_image(self, key):
        """The image as a new array (a copy out of the heap), or None if it was never set or was overwritten."""
        if key is None:
            return None
        info = self._weak_heap_image_infos.get(key)
        buffer = self.get_file(key)
        if info is None or buffer is None:
            return None
        import numpy as np

        shape, dtype = info
        return np.ndarray(shape, dtype=dtype, buffer=buffer)

    def get_uid(self):
        return self._uid

    def get_is_frame_reemitted(self):
        return self._is_frame_reemitted

    def set_is_frame_reemitted(self, value):
        self._is_frame_reemitted = value

    def get_frame_count(self):
        return self._frame_count

    def set_frame_count(self, value):
        self._frame_count = value

    def get_frame_num(self):
        return self._frame_num

    def set_frame_num(self, value):
        self._frame_num = value

    def get_frame_fps(self):
        return self._frame_fps

    def set_frame_fps(self, value):
        self._frame_fps = value

    def get_frame_timestamp(self):
        return self._frame_timestamp

    def set_frame_timestamp(self, value):
        self._frame_timestamp = value

    def get_frame_image_name(self):
        return self._frame_image_name

    def set_frame_image_name(self, value):
        self._frame_image_name = value

    def get_merged_image_name(self):
        return self._merged_image_name

    def set_merged_image_name(self, value):
        self._merged_image_name = value

    def get_face_swap_info_list(self):
        return self._face_swap_info_list

    def add_face_swap_info(self, fsi):
        if not isinstance(fsi, BackendFaceSwapInfo):
            raise ValueError("fsi must be an instance of BackendFaceSwapInfo")
        self._face_swap_info_list.append(fsi)


class BackendConnection:
    def __init__(self, multi_producer=False):
        self._rd = lib_mp.MPSPSCMRRingData(table_size=8192, heap_size_mb=8, multi_producer=multi_producer)

    def write(self, bcd):
        self._rd.write(pickle.dumps(bcd))

    def read(self, timeout=0):
        data = self._rd.read(timeout=timeout)
        return pickle.loads(data) if data is not None else None

    def get_write_id(self):
        return self._rd.get_write_id()

    def get_by_id(self, record_id):
        data = self._rd.get_by_id(record_id)
        return pickle.loads(data) if data is not None else None

    def is_full_read(self, buffer_size=0):
        """True when the reader has read everything written but ``buffer_size`` records."""
        return self._rd.get_read_id() >= self._rd.get_write_id() - buffer_size


class BackendSignal:
    def __init__(self):
        self._ev = multiprocessing.Event()

    def send(self):
        self._ev.set()

    def recv(self):
        is_set = self._ev.is_set()
        if is_set:
            self._ev.clear()
        return is_set


class BackendWeakHeap(lib_mp.MPWeakHeap):
    pass


class BackendWorkerState(dict):
    """A module's settings: attributes as in DFL's worker states (None when unset), and dict access."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name, value):
        self[name] = value


class BackendWorker:
    def __init__(self, msg_queue, stop_event, state):
        self._msg_queue = msg_queue
        self._stop_event = stop_event
        self._state = state if isinstance(state, BackendWorkerState) else BackendWorkerState(state or {})
        self._profile_timing_measurer = lib_time.AverageMeasurer(samples=120)

    def get_state(self):
        return self._state

    def send_msg(self, name, *args):
        self._msg_queue.put((type(self).__name__, name, args))

    def start_profile_timing(self):
        self._profile_timing_measurer.start()

    def stop_profile_timing(self):
        self.send_msg("_profile_timing", self._profile_timing_measurer.stop())

    def on_start(self, *args):
        pass

    def on_tick(self):
        pass

    def on_stop(self):
        pass

    @staticmethod
    def _start_proc(worker_cls, msg_queue, stop_event, state, start_args):
        worker = worker_cls(msg_queue, stop_event, state)
        worker.on_start(*start_args)
        worker.send_msg("started", os.getpid())
        while not stop_event.is_set():
            worker.on_tick()
        worker.on_stop()
        from ._report import describe_process, sessions_of

        report = describe_process(sessions_of(worker))
        report.update(getattr(worker, "report", dict)())
        worker.send_msg("report", report)
