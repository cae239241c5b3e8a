import time

import numpy as np

from ._report import describe_process
from .BackendBase import STOP, BackendWorker


class FileSourceWorker(BackendWorker):
    """Sends the same frame ``frames`` times, then STOP (no model)."""

    def on_start(self):
        path = self.settings.get("frame_path")
        frame = None
        if path:
            import cv2
            frame = cv2.imread(path)
        if frame is None:
            frame = np.random.RandomState(0).randint(0, 255, (512, 512, 3)).astype(np.uint8)
        self.frame = frame
        self.sent = 0

    def on_tick(self):
        if self.sent >= self.settings["frames"]:
            self.bc_out.write(STOP)
            self.stop()
            return
        self.bc_out.write({"id": self.sent, "t0": time.perf_counter(), "frame": self.frame})
        self.sent += 1

    def on_stop(self):
        self.send_msg("report", describe_process([]))
