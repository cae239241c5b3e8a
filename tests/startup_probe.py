"""A worker for tests/test_adapters_startup.py, run by the stand-in's ``xlib.mp.csw`` host in a spawned process.

It follows the start-up sequence of a DFL model module (FaceSwapDFM): imports at unpickling,
``on_start``, then the model's session is built on a later tick, then frames are read and written.
Like DFL's modules on a model change, it saves its new state and calls ``restart()`` once (the
state counts its lives), so the host restarts it: in a new process (DFL) or in the same one
(dfl_perf's ``restart_in_process``).
"""

import os
import time

from xlib.mp.csw import ControlClient, ControlHost, Sheet, Worker, WorkerState


class ProbeSheet:
    class Host(Sheet):
        def __init__(self):
            super().__init__()
            self.model = ControlClient()

    class Worker(Sheet):
        def __init__(self):
            super().__init__()
            self.model = ControlHost()


class ProbeState(WorkerState):
    def __init__(self):
        self.lives = 0
        self.pids = []
        self.ppids = []


class Connection:
    """Named like DFL's BackendConnection; a local list here."""

    def __init__(self, items=()):
        self.items = list(items)

    def read(self, timeout=0):
        return self.items.pop(0) if self.items else None

    def write(self, bcd):
        self.items.append(bcd)


class ProbeWorker(Worker):
    def on_start(self, model_path, restarts):
        from xlib import onnxruntime as lib_ort

        self.lib_ort = lib_ort
        self.model_path = model_path
        self.restarts = restarts
        self.connection_in = Connection(["frame"] * 3)
        self.connection_out = Connection()
        self.session = None
        self.ticks = 0
        state = self.get_state()
        state.lives += 1
        state.pids.append(os.getpid())
        state.ppids.append(os.getppid())
        self.save_state()

    def on_tick(self):
        self.ticks += 1
        if self.session is None and self.ticks >= 2:
            self.session = self.lib_ort.InferenceSession_with_device(self.model_path, self.lib_ort.get_cpu_device_info())
            if self.get_state().lives <= self.restarts:
                self.save_state()
                self.restart()
                return
        if self.session is not None:
            frame = self.connection_in.read()
            if frame is not None:
                self.connection_out.write(frame)
        time.sleep(0.005)
