"""``dfl-perf run --ray [ADDRESS]``: options, joining or starting Ray, the job from start to summary.

Ray is imported only here (``import_ray``) and in ``job.py``, which this module imports once Ray is
found. ADDRESS: none starts a local Ray (unless ``RAY_ADDRESS`` is set: then that cluster is
joined); ``auto`` joins the cluster running on this machine; ``HOST:PORT`` a cluster's head;
``ray://HOST:10001`` goes through Ray Client.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from dfl_perf.cluster.plan import (
    ClusterJobError,
    VideoPlan,
    default_range_frames,
    expand_sources,
    output_paths,
    probe_video,
    split_ranges,
)

__all__ = ["RayRunOptions", "run_on_ray", "import_ray", "main_args", "format_summary"]

EXTRA_HINT = 'pip install "dfl_perf[ray]"'
#: seconds to wait for the workers to start and load their sessions
WORKER_START_TIMEOUT = 300.0
#: tries at a Ray Client session (ray://) before the job gives up
CLIENT_ATTEMPTS = 3


@dataclass
class RayRunOptions:
    model: Optional[str]  # None: the DFM-shaped stand-in (as for a local run)
    sources: List[str]
    output: str
    address: Optional[str] = None
    provider: Optional[str] = None
    max_faces: int = 1
    max_frames: Optional[int] = None  # per video
    workers: Optional[int] = None  # default: as many as the cluster's CPUs (GPUs) allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    range_frames: Optional[int] = None  # default: about four ranges per worker
    retries: int = 2  # attempts after the first, per range (and restarts per worker)
    audio: bool = True
    progress: bool = True
    detector: str = "yunet_n_320_320"
    local_cpus: Optional[int] = None  # a local Ray only: its CPUs (default: all)
    object_store_mb: Optional[int] = None  # a local Ray only: its object store (default: Ray's)
    on_status: Optional[Callable[[Any], None]] = field(default=None, repr=False)


def import_ray() -> Any:
    """``ray``, or a ClusterJobError that says how to install it (the ``[ray]`` extra)."""
    try:
        import ray
    except ImportError as exc:
        note = ""
        if sys.version_info < (3, 10):
            note = " (Ray needs Python 3.10 or newer; this is Python %d.%d)" % sys.version_info[:2]
        raise ClusterJobError("--ray needs Ray, which is not installed: %s%s [%s]" % (EXTRA_HINT, note, exc)) from None
    try:
        import av  # noqa: F401  the driver joins segments with it
    except ImportError:
        raise ClusterJobError("--ray needs PyAV (the av package) to join segments: %s" % EXTRA_HINT) from None
    return ray


def _host_port(address: str) -> Tuple[str, int]:
    text = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterJobError("bad Ray address %r: use auto, HOST:PORT (a cluster's head) or ray://HOST:10001 "
                              "(Ray Client)" % address)
    return host.strip("[]"), int(port)


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    host, port = _host_port(address)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise ClusterJobError("cannot reach Ray at %s: %s (is the cluster up? Ray Client listens on "
                              "ray://HEAD:10001)" % (address, exc.strerror or exc)) from None


def connect(ray: Any, options: RayRunOptions) -> bool:
    """Join or start Ray as ``options.address`` says; True when this call did (so it shuts it down)."""
    if ray.is_initialized():
        return False
    address = options.address or os.environ.get("RAY_ADDRESS") or None
    quiet: Dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address is None:
            store = options.object_store_mb * 2 ** 20 if options.object_store_mb else None
            ray.init(address="local", num_cpus=options.local_cpus, object_store_memory=store,
                     include_dashboard=False, **quiet)
        else:
            if address != "auto":
                _check_reachable(address)
            _join(ray, address, quiet)
    except ClusterJobError:
        raise
    except Exception as exc:  # ConnectionError, timeouts, version mismatch: Ray's words, one line
        where = "start a local Ray" if address is None else "join Ray at %s" % address
        first = (str(exc).strip().splitlines() or [repr(exc)])[0]
        raise ClusterJobError("cannot %s: %s" % (where, first)) from exc
    return True


def _join(ray: Any, address: str, quiet: Dict[str, Any], attempts: int = CLIENT_ATTEMPTS) -> None:
    """``ray.init(address)``; Ray Client is tried again when its server fails to start a session for
    us (it starts a process per client, which can time out on a busy head node)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **quiet)
            return
        except ConnectionAbortedError:
            if not address.startswith("ray://") or attempt == attempts:
                raise
            time.sleep(2.0 * attempt)


def _plan(options: RayRunOptions) -> List[VideoPlan]:
    from dfl_perf.headless import VIDEO_FOURCC, check_output

    if options.max_frames is not None and options.max_frames < 1:
        raise ClusterJobError("--max-frames must be at least 1, got %d" % options.max_frames)
    if options.model is not None and not Path(options.model).is_file():
        raise ClusterJobError("model not found: %s" % options.model)
    sources = expand_sources(options.sources)
    outputs = output_paths(sources, options.output, sorted(VIDEO_FOURCC))
    if len(outputs) > 1 or outputs[0] != Path(options.output):
        Path(options.output).mkdir(exist_ok=True)
    for path in outputs:
        try:
            check_output(str(path))
        except Exception as exc:  # HeadlessError: extension or folder
            raise ClusterJobError(str(exc)) from None
    return [probe_video(i, s, o, options.max_frames) for i, (s, o) in enumerate(zip(sources, outputs))]


def _model_paths(options: RayRunOptions) -> List[Path]:
    """[detector, DFM]: files on the driver, sent to the workers through the object store."""
    from dfl_perf.facepipe.workload import Workload

    workload = Workload(detector=options.detector, dfm=options.model)
    return [Path(workload.detector_path()), Path(workload.dfm_path())]


def _worker_count(ray: Any, options: RayRunOptions) -> int:
    resources = ray.cluster_resources()
    if options.gpus_per_worker:
        have, need, kind = resources.get("GPU", 0.0), options.gpus_per_worker, "GPU"
    else:
        have, need, kind = resources.get("CPU", 0.0), options.cpus_per_worker, "CPU"
    count = int(have // need) if need > 0 else 0
    if count < 1:
        raise ClusterJobError("the Ray cluster has %g %s; a worker needs %g" % (have, kind, need))
    return count if options.workers is None else min(count, options.workers)


def run_on_ray(options: RayRunOptions) -> Dict[str, Any]:
    """Run the job; returns its summary (videos written, frames, seconds, FPS, start-up, per-range times)."""
    from dfl_perf.cluster.assemble import SegmentJoiner

    ray = import_ray()
    # before connecting: the actor is then defined as in a plain driver (so Ray Client keeps its retry options)
    from dfl_perf.cluster import job

    videos = _plan(options)
    models = _model_paths(options)
    t0 = time.perf_counter()
    owns = connect(ray, options)

    actors: List[Any] = []
    try:
        workers = _worker_count(ray, options)
        total = sum(v.frames for v in videos)
        range_frames = options.range_frames or default_range_frames(total, workers)
        ranges = split_ranges(videos, range_frames)
        workers = min(workers, len(ranges))
        model_refs = [ray.put(path.read_bytes()) for path in models]  # held until the job ends (restarts)
        actors, info = job.start_workers(workers, model_refs, options.provider, options.max_faces,
                                         options.cpus_per_worker, options.gpus_per_worker, options.retries,
                                         WORKER_START_TIMEOUT)
        startup = time.perf_counter() - t0

        def open_joiner(video: VideoPlan) -> SegmentJoiner:
            return SegmentJoiner(video.output, video.fps, video.source, audio=options.audio)

        with _progress(options, total) as on_status:
            summary = job.run_ranges(actors, videos, ranges, open_joiner, window=(job.DEPTH + 1) * workers,
                                     on_status=on_status, workers_info=info)
    finally:
        for actor in actors:
            ray.kill(actor)
        if owns:
            ray.shutdown()
    summary.update({"startup_seconds": startup, "workers": info, "range_frames": range_frames,
                    "ranges": len(ranges), "nodes": len({w["node"] for w in info})})
    return summary


class _progress:
    """The cluster-wide progress bar (frames done of the total, FPS), fed by the job's status polls."""

    def __init__(self, options: RayRunOptions, total: int) -> None:
        from dfl_perf.progress import ProgressBar

        self.user = options.on_status
        self.bar = ProgressBar("run --ray", total, enabled=None if options.progress else False, unit="frame")

    def __call__(self, status: Any) -> None:
        self.bar.update(status.frames_done, "%.1f FPS on the cluster" % status.fps)
        if self.user is not None:
            self.user(status)

    def __enter__(self) -> _progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()


def format_summary(summary: Dict[str, Any]) -> str:
    """A few lines: the workers, each output, the totals."""
    providers = sorted({w["provider"] for w in summary["workers"]})
    lines = ["ray: %d workers on %d node%s (%s), ready in %.1f s; %d ranges of %d frames"
             % (len(summary["workers"]), summary["nodes"], "" if summary["nodes"] == 1 else "s", ", ".join(providers),
                summary["startup_seconds"], summary["ranges"], summary["range_frames"])]
    for video in summary["videos"]:
        lines.append("wrote %s: %d frames from %s; %s" % (video["output"], video["frames"], video["source"],
                                                           video["audio"]))
    lines.append("frames %d in %.1f s, %.1f FPS (after start-up)" % (summary["frames"], summary["seconds"],
                                                                      summary["fps"]))
    return "\n".join(lines)


def main_args(args: Any) -> int:
    """``dfl-perf run --ray`` with parsed arguments; prints errors in words and returns the exit code."""
    if args.show:
        print("dfl-perf run: --show is for a local run; --ray writes files only", file=sys.stderr)
        return 2
    if not args.output:
        print("dfl-perf run: --ray needs --output (a file for one source, a folder for several)", file=sys.stderr)
        return 2
    options = RayRunOptions(model=args.model, sources=list(args.source), output=args.output, address=args.ray or None,
                            provider=args.provider, max_faces=args.max_faces, max_frames=args.max_frames,
                            workers=args.ray_workers, gpus_per_worker=args.ray_gpus_per_worker or 0.0,
                            range_frames=args.range_frames, progress=not args.no_progress)
    try:
        summary = run_on_ray(options)
    except ClusterJobError as exc:
        print("dfl-perf run --ray: %s" % exc, file=sys.stderr)
        return 2
    print(format_summary(summary))
    if getattr(args, "json", None):
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2, default=str)
        print("wrote %s" % args.json)
    return 0
