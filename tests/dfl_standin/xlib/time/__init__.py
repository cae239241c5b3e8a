"""DFL's timing helpers: ``AverageMeasurer`` (mean of the last N samples, zero-filled at start) and
``FPSCounter`` (arrivals over the span of the last N)."""

import time
from collections import deque


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


class FPSCounter:
    def __init__(self, samples=120):
        self._steps = deque(maxlen=samples)

    def step(self):
        self._steps.append(time.time())
        if len(self._steps) >= 2:
            span = self._steps[-1] - self._steps[0]
            if span:
                return len(self._steps) / span
        return 0.0
