"""What the DeepFaceLive adapter changes, as one picklable, JSON-serialisable settings object.

The launcher hands the settings to every spawned DFL worker through the environment variable
``DFL_PERF_DFL_CONFIG`` (JSON), so the main process and its children use the same values.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple, Union

__all__ = ["DFLConfig", "CONFIG_ENV", "config_from_env"]

#: environment variable carrying the JSON settings to spawned worker processes
CONFIG_ENV = "DFL_PERF_DFL_CONFIG"

#: DFL modules that run a model at the same time in the default live pipeline
#: (FaceDetector, FaceMarker, FaceSwapDFM), each in its own process
DEFAULT_MODEL_PROCESSES = 3


@dataclass
class DFLConfig:
    """Settings of the DeepFaceLive adapter (all optional; the defaults are the tuned ones).

    - ``model_processes``: DFL worker processes running a model at once; the CPU budget is split
      between them. ``intra_op_threads`` overrides the resulting per-session thread count.
    - ``allow_spinning``: keep onnxruntime's busy-waiting intra-op threads (off: they starve the
      other DFL processes).
    - ``cpu_fallback``: when the CUDA/DirectML provider cannot load, build a CPU session with a
      warning instead of raising (DFL's behaviour kills the module). Never for the model files
      named in ``cpu_fallback_exclude`` (DFL keeps CenterFace off the CPU: wrong results there).
    - ``cudnn_conv_algo_search``: CUDA convolution search (``HEURISTIC`` avoids the slow first run).
    - ``tensorrt``: put TensorRT (with its engine cache) before CUDA when it is installed.
    - ``optimized_model_cache``: save and reuse onnxruntime's optimized graph on disk.
    - ``lean_weights``: load model files from their lean copy (``SessionConfig.lean_weights``):
      less memory while a big DFM loads (about half for dense weights, a quarter less for conv
      weights on onnxruntime 1.32; benchmarks/RESULTS.md) and a much faster session creation (the
      weights are memory-mapped, not parsed and copied: a 200 MB DFM in 0.02-0.06 s instead of
      1.4-2.9 s); replaces the optimized-model cache. ``"auto"`` (default): model files of 64 MB or
      more on the CPU (DFMs; not DFL's detectors and markers), True: every model, False: none.
    - ``cache_dir``: disk cache folder for this process and its workers (``install`` sets
      ``DFL_PERF_CACHE_DIR``; default: dfl_perf's user cache dir).
    - ``cache_sessions``: reuse a session within a process for the same model and device.
    - ``cuda_cache_maxsize``: value for the real ``CUDA_CACHE_MAXSIZE`` (None: leave it alone).
    - ``fast_dfm``: replace ``DFMModel.convert`` with the pooled-buffer path.
    - ``meter``: replace DFL's per-module timing with dfl_perf's monitor; ``meter_dir`` also
      writes each process's numbers there for ``collect_meter``.
    - ``remote_swap``: URL of a ``dfl-perf serve``: FaceSwapDFM's model list offers the server's
      model, whose swaps run there (``remote_codec`` 'raw' or 'jpeg'; the token comes from
      ``DFL_PERF_SERVE_TOKEN``, never from these settings).
    - ``lazy_imports``: modules imported lazily in launched processes, so workers that never run
      a model never load them (h5py: DFL's ``xlib.face`` imports it for the trainer's facesets;
      about 10 MB in each worker on DFL's stack).
    - ``restart_in_process``: a module restart (DFL restarts a worker on every model or device
      change) keeps the worker's process and runs the worker anew in it, instead of a new process
      that imports everything again (``restart``).
    - ``lazy_heap``: DFL's 2 GiB frame heap is mapped without writing it full of zeros first
      (``lazy_heap``): its pages are touched as frames fill them, not all before the first worker starts.
    - ``forkserver``: DFL's workers are forked from one server process that imported their libraries
      and DFL's backend once, instead of each spawning a fresh interpreter that imports them again
      (``forkserver``; Linux and macOS; Windows keeps spawn).
    - ``forkserver_at_launch``: the launcher starts that server before DFL's ``main.py`` runs, so that
      it imports the third-party libraries while the app starts (False: at the first worker's start).
    - ``forkserver_backend``: the server also imports DFL's backend package once, just before its first
      fork, with the app's environment (only when the app has enumerated its devices); False: each
      worker imports it after its fork.
    - ``startup_dir``: every process writes its start-up timeline there (``startup``; default:
      ``meter_dir``, else env ``DFL_PERF_STARTUP_DIR``; none: nothing is recorded).
    - ``memory_budget``: per DFL process ('2G', '1500M', '25%' of RAM; None: off): a
      ``MemoryManager`` keeps dfl_perf's buffer pools (the fast DFM path's) within it as they grow
      and watches the process's memory against it: one warning per crossing of 85%, idle buffers
      freed past 95% (a sampling thread every 2 s).
    - ``fast_merge``: FaceMerger's CPU merge on the face's rectangle only (``merger``; same picture);
      ``merged_uint8``: the merged frame travels as uint8 (DFL: float32, 4x the bytes).
    - ``fast_detector``: YoloV5Face's pre- and post-processing without full-size copies (``detector``).
    - ``thread_pools``: OpenCV, numexpr and the BLAS under numpy get ``threads_per_session()``
      threads in every worker (``threads``).
    - ``frame_heap``: DFL's shared frame heap reserved without being touched and its ring sized by
      need (``heap``); ``frame_heap_mb``: a fixed ring of that many MB instead (also its reservation).
    - ``malloc_reuse``: glibc's malloc keeps freed blocks for reuse in every DFL process
      (``dfl_perf.memory.allocator``), so each frame's arrays do not fault fresh pages in again; Linux
      with glibc only, not undone by ``uninstall``.
    """

    model_processes: int = DEFAULT_MODEL_PROCESSES
    intra_op_threads: Optional[int] = None
    allow_spinning: bool = False
    cpu_fallback: bool = True
    cpu_fallback_exclude: Tuple[str, ...] = field(default_factory=lambda: ("CenterFace",))
    cudnn_conv_algo_search: str = "HEURISTIC"
    tensorrt: bool = False
    optimized_model_cache: bool = True
    lean_weights: Union[bool, str] = "auto"
    cache_dir: Optional[str] = None
    cache_sessions: bool = True
    cuda_cache_maxsize: Optional[int] = 2147483647
    fast_dfm: bool = True
    meter: bool = True
    meter_dir: Optional[str] = None
    meter_interval_s: float = 2.0
    lazy_imports: Tuple[str, ...] = field(default_factory=lambda: ("onnxruntime", "onnx", "h5py"))
    startup_dir: Optional[str] = None
    restart_in_process: bool = True
    lazy_heap: bool = True
    forkserver: bool = True
    forkserver_at_launch: bool = True
    forkserver_backend: bool = True
    memory_budget: Optional[str] = None
    remote_swap: Optional[str] = None
    remote_codec: str = "raw"
    fast_merge: bool = True
    merged_uint8: bool = True
    fast_detector: bool = True
    thread_pools: bool = True
    frame_heap: bool = True
    frame_heap_mb: Optional[int] = None
    malloc_reuse: bool = True

    def __post_init__(self) -> None:
        self.lazy_imports = tuple(self.lazy_imports)
        self.cpu_fallback_exclude = tuple(self.cpu_fallback_exclude)
        if int(self.model_processes) < 1:
            raise ValueError("DFLConfig.model_processes must be >= 1, got %r" % (self.model_processes,))
        if self.intra_op_threads is not None and int(self.intra_op_threads) < 1:
            raise ValueError("DFLConfig.intra_op_threads must be >= 1 or None, got %r" % (self.intra_op_threads,))
        if self.lean_weights not in (True, False, "auto"):
            raise ValueError("DFLConfig.lean_weights must be True, False or 'auto', got %r" % (self.lean_weights,))
        if self.memory_budget is not None:
            from dfl_perf.memory._budget import parse_budget

            parse_budget(self.memory_budget)  # a ValueError that says how to write one
        if self.remote_codec not in ("raw", "jpeg"):
            raise ValueError("DFLConfig.remote_codec must be 'raw' or 'jpeg', got %r" % (self.remote_codec,))
        if self.frame_heap_mb is not None and int(self.frame_heap_mb) < 1:
            raise ValueError("DFLConfig.frame_heap_mb must be >= 1 or None, got %r" % (self.frame_heap_mb,))
        if self.cudnn_conv_algo_search not in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            raise ValueError("DFLConfig.cudnn_conv_algo_search must be EXHAUSTIVE, HEURISTIC or DEFAULT, got %r"
                             % (self.cudnn_conv_algo_search,))

    def threads_per_session(self) -> int:
        """Intra-op threads for one session: the explicit value, else the CPU budget split over the model processes."""
        if self.intra_op_threads is not None:
            return int(self.intra_op_threads)
        from dfl_perf.sessions import SessionConfig

        return SessionConfig.for_pipeline(int(self.model_processes))[0].intra_op_threads

    def startup_folder(self) -> Optional[str]:
        """Where the start-up timeline goes: ``startup_dir``, else ``meter_dir``, else env ``DFL_PERF_STARTUP_DIR``."""
        return self.startup_dir or self.meter_dir or os.environ.get("DFL_PERF_STARTUP_DIR") or None

    def to_json(self) -> str:
        """The settings as a JSON object string."""
        data = asdict(self)
        data["lazy_imports"] = list(self.lazy_imports)
        data["cpu_fallback_exclude"] = list(self.cpu_fallback_exclude)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DFLConfig:
        """Settings from ``to_json`` output; unknown keys raise ValueError naming them."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError("dfl_perf DFL config is not valid JSON: %s" % exc) from None
        if not isinstance(data, dict):
            raise ValueError("dfl_perf DFL config must be a JSON object, got %s" % type(data).__name__)
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> DFLConfig:
        """Settings from a dict; unknown keys raise ValueError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError("unknown dfl_perf DFL config keys %s; known: %s" % (unknown, sorted(known)))
        return cls(**data)


def config_from_env(environ: Optional[Dict[str, str]] = None) -> Optional[DFLConfig]:
    """The settings the launcher put in ``DFL_PERF_DFL_CONFIG``, or None when it is not set."""
    text = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if not text:
        return None
    return DFLConfig.from_json(text)
