"""dfl_perf.monitor: honest performance numbers for a live frame pipeline.

``PerformanceMonitor`` times stages and frames (bounded rings, cheap ``record``); FPS is right from
the first frame (DeepFaceLive's meter divides by a zero-filled 120-sample history and counts the
read wait as busy time). ``SystemSampler`` reads CPU, memory and NVML GPU state on a thread.
``PerformanceMonitor.export_json/export_csv/prometheus_text/serve_http`` export what it measured.
``draw_overlay`` draws a HUD with cv2; ``AdaptiveController`` moves ``Knob``s to hold a target FPS.

``PerformanceMonitor.summary()`` layout (seconds as floats; None where nothing was measured)::

    {"uptime": s, "window": s, "fps": sliding-window FPS, "fps_mean": frames / active time,
     "frames": n, "dropped": n, "late": n, "failed": n,
     "latency": {"count", "mean", "p50", "p95", "p99", "max", "sum"},     # end to end
     "stages": {name: {"count" (lifetime), "window" (samples in the stats), "mean", "p50", "p95",
                       "p99", "max", "sum" (lifetime seconds)}},
     "marks": {name: seconds since start},
     "system": latest SystemSampler sample or None}

Importing this package loads no psutil, pynvml, cv2 or numpy; each is imported on first use.
"""

from __future__ import annotations

from .adaptive import AdaptiveController, Knob
from .core import PerformanceMonitor
from .overlay import draw_overlay
from .sampler import SystemSampler

__all__ = ["PerformanceMonitor", "SystemSampler", "draw_overlay", "AdaptiveController", "Knob"]
