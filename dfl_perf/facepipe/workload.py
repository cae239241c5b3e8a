"""The reference face-swap workload, run two ways on the same frames and models.

- ``BaselineRunner`` (``baseline.py``): what DeepFaceLive does today. Sessions built exactly like DFL's
  ``InferenceSession_with_device`` (ORT defaults: spinning thread pools), one sequential loop,
  fresh arrays for every step, and DFL's merge (the whole frame as float32).
- ``OptimizedRunner`` (``optimized.py``): dfl_perf. Tuned sessions from a ``ModelCache`` (spinning off, one intra-op
  thread each), IOBinding runners with pooled buffers (``BoundSession``, ``DFMRunner``), and a
  ``Pipeline`` of three stages (detect+align, swap, merge) so the detection of frame N+1 overlaps
  the swap of frame N, with several swap workers on a CPU.

Both produce the same output frames (within a couple of uint8 levels: the merge quantises the
swapped face in crop space, DFL in frame space). ``Workload`` names the models: YuNet for
detection and a real DFM or the DFM-shaped stand-in (``standin.py``) for the swap. This module
only gathers the names: each lives in the module that the runners import (``job.py``, ``frames.py``)
or in its runner's own module.
"""

from __future__ import annotations

from dfl_perf.facepipe.baseline import BaselineRunner, merge_face_dfl_style, run_live_latest
from dfl_perf.facepipe.frames import BadFrameError, FrameItem, check_frame
from dfl_perf.facepipe.job import FrameSink, RunStats, Workload, paced_frames, standin_model_path
from dfl_perf.facepipe.optimized import OptimizedRunner, swap_workers_for

__all__ = ["Workload", "RunStats", "FrameSink", "FrameItem", "paced_frames", "standin_model_path",
           "BadFrameError", "check_frame", "BaselineRunner", "merge_face_dfl_style", "run_live_latest",
           "OptimizedRunner", "swap_workers_for"]
