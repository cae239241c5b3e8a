"""A worker for tests/test_adapters_startup.py, run by the stand-in's ``xlib.mp.csw`` host in a spawned process.

It follows the start-up sequence of a DFL model module: imports at unpickling, ``on_start``, then the
model session is built on a later tick (DFL's FaceSwapDFM builds it from its tick loop), then it
reads and writes frames. The first process restarts itself once (as DFL's ``restart()`` on a model
change) when ``restart_marker`` does not exist yet.
"""

import os
import time

from xlib.mp.csw import Worker


class Connection:
    """Named like DFL's BackendConnection (the start-up hooks time its read/write); here a local list."""

    def __init__(self, items=()):
        self.items = list(items)

    def read(self, timeout=0):
        return self.items.pop(0) if self.items else None

    def write(self, bcd):
        self.items.append(bcd)


class ProbeWorker(Worker):
    def on_start(self, model_path, restart_marker, connection_cls):
        from xlib import onnxruntime as lib_ort

        self.lib_ort = lib_ort
        self.model_path = model_path
        self.restart_marker = restart_marker
        self.connection_in = connection_cls(["frame"] * 3)
        self.connection_out = connection_cls()
        self.session = None
        self.ticks = 0

    def on_tick(self):
        self.ticks += 1
        if self.session is None and self.ticks >= 2:
            self.session = self.lib_ort.InferenceSession_with_device(self.model_path, self.lib_ort.get_cpu_device_info())
            if not os.path.exists(self.restart_marker):
                open(self.restart_marker, "w").close()
                self.restart()
                return
        if self.session is not None:
            frame = self.connection_in.read()
            if frame is not None:
                self.connection_out.write(frame)
        time.sleep(0.005)
