"""A mean-of-the-last-N-samples timer, zero-filled at start (DFL's documented AverageMeasurer behaviour)."""

import time


class AverageMeasurer:
    def __init__(self, samples=120):
        self._samples = [0.0] * samples
        self._next = 0
        self._t0 = None

    def start(self):
        self._t0 = time.perf_counter()

    def stop(self):
        self._samples[self._next] = time.perf_counter() - self._t0
        self._next = (self._next + 1) % len(self._samples)
        return sum(self._samples) / len(self._samples)
