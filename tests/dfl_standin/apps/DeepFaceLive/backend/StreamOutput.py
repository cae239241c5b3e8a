import time

from ._report import describe_process
from .BackendBase import STOP, BackendWorker


class StreamOutputWorker(BackendWorker):
    """Runs no model: stamps each frame's arrival and passes it to the app."""

    def on_tick(self):
        bcd = self.bc_in.read(timeout=0.005)
        if bcd is None:
            return
        if bcd == STOP:
            self.bc_out.write(STOP)
            self.stop()
            return
        self.bc_out.write({"id": bcd["id"], "t0": bcd["t0"], "t1": time.perf_counter()})

    def on_stop(self):
        self.send_msg("report", describe_process([]))
