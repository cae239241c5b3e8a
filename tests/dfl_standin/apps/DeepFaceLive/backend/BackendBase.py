"""Stand-in backend base: DFL's BackendWorker timing hooks and a depth-1 BackendConnection."""

import multiprocessing
import queue

from xlib import time as lib_time

STOP = "stop"


class BackendConnection:
    """A depth-1 process queue: ``write`` blocks while the reader has not taken the last item."""

    def __init__(self, maxsize=1):
        self._queue = multiprocessing.get_context("spawn").Queue(maxsize)

    def write(self, bcd):
        self._queue.put(bcd)

    def read(self, timeout=0):
        try:
            return self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
        except queue.Empty:
            return None


class BackendWorker:
    def __init__(self, msg_queue, bc_in, bc_out, settings):
        self._msg_queue = msg_queue
        self.bc_in = bc_in
        self.bc_out = bc_out
        self.settings = settings
        self._run = True
        self._profile_timing_measurer = lib_time.AverageMeasurer(samples=120)

    def send_msg(self, name, *args):
        self._msg_queue.put((type(self).__name__, name, args))

    def start_profile_timing(self):
        self._profile_timing_measurer.start()

    def stop_profile_timing(self):
        self.send_msg("_profile_timing", self._profile_timing_measurer.stop())

    def stop(self):
        self._run = False

    def on_start(self):
        pass

    def process(self, bcd):
        return bcd

    def on_tick(self):
        self.start_profile_timing()
        bcd = self.bc_in.read(timeout=0.005)
        if bcd is None:
            return
        if bcd == STOP:
            self.bc_out.write(STOP)
            self.stop()
            return
        bcd = self.process(bcd)
        self.stop_profile_timing()
        self.bc_out.write(bcd)

    def on_stop(self):
        pass

    @staticmethod
    def _start_proc(worker_cls, msg_queue, bc_in, bc_out, settings):
        worker = worker_cls(msg_queue, bc_in, bc_out, settings)
        worker.on_start()
        while worker._run:
            worker.on_tick()
        worker.on_stop()
