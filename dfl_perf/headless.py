"""``dfl-perf run``: the optimized face-swap pipeline on a video file or a camera, written to a video.

The headless mode DeepFaceLive users asked for (DFL #51, #36). A file is processed frame by frame,
every frame, in order, with a progress bar; a camera runs live: the oldest waiting frame is
dropped (and frames older than ``deadline``), so the output stays real-time.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

__all__ = ["HeadlessOptions", "run_headless", "HeadlessError", "write_json", "check_output", "open_writer",
           "VIDEO_FOURCC"]

#: output file extension -> the codec the output video is written with
VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


class HeadlessError(RuntimeError):
    """A problem with the source, the model or the output, said in words."""


@dataclass
class HeadlessOptions:
    model: Optional[str]  # None: the DFM-shaped stand-in (dfl_perf.facepipe.standin), built into the user cache
    source: Union[str, int]
    output: Optional[str] = None
    show: bool = False
    provider: Optional[str] = None
    detector: str = "yunet_n_320_320"
    max_faces: int = 1
    deadline: float = 0.25  # seconds; live sources only
    max_frames: Optional[int] = None
    progress: bool = True
    low_memory: bool = False  # OptimizedRunner(low_memory=True, merge_in_place=True): smaller peak, a bit less FPS
    memory_budget: Optional[str] = None  # '512M', '25%': the host memory of the runner's buffers and sessions
    remote: Optional[str] = None  # a dfl-perf serve URL: the swap step runs there (dfl_perf.remote.runner)
    token: Optional[str] = None  # the server's token (None: DFL_PERF_SERVE_TOKEN)
    remote_codec: str = "raw"
    target_fps: Optional[float] = None  # cameras: the rate held by the detect knobs (None: the camera's; 0: off)


class _Stop(Exception):
    """Raised from the frame sink when the user closes the preview window."""


def check_output(output: str) -> str:
    """The output video's extension, after checking it is one we write and its folder is writable (HeadlessError)."""
    path = Path(output)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FOURCC:
        raise HeadlessError("output %s: unsupported extension %r (use one of %s)"
                            % (path, suffix, ", ".join(sorted(VIDEO_FOURCC))))
    _check_folder(output)
    return suffix


def _check_folder(output: str) -> None:
    path = Path(output)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise HeadlessError("output %s: folder %s does not exist" % (path, folder))
    if not os.access(str(folder), os.W_OK):
        raise HeadlessError("output %s: folder %s is not writable" % (path, folder))


def open_writer(output: str, fps: float, size: Any) -> Any:
    """An open ``cv2.VideoWriter`` for ``output`` (the codec by its extension); HeadlessError if it cannot write it."""
    import cv2

    code = VIDEO_FOURCC[check_output(output)]
    # MJPG through OpenCV's own encoder: every frame coded alone, so a video cut into ranges
    # (``run --ray``) gives the same bytes as one run; FFmpeg's MJPEG carries rate control across frames
    api = cv2.CAP_OPENCV_MJPEG if code == "MJPG" else cv2.CAP_ANY
    writer = cv2.VideoWriter(output, api, cv2.VideoWriter_fourcc(*code), fps, size)
    if not writer.isOpened():
        raise HeadlessError("output %s: OpenCV cannot write this format here (codec %s)"
                            % (output, VIDEO_FOURCC[Path(output).suffix.lower()]))
    return writer


def _build_runner(options: HeadlessOptions, live: bool, monitor: Any, source_fps: float = 30.0) -> Any:
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload

    if options.model is not None and not Path(options.model).is_file():
        raise HeadlessError("model not found: %s" % options.model)
    if options.target_fps is not None and not options.target_fps >= 0:
        raise HeadlessError("target FPS must be >= 0 (0: fixed quality), got %r" % (options.target_fps,))
    workload = Workload(detector=options.detector, dfm=options.model, max_faces=options.max_faces)
    dfm = _remote_dfm(options, live) if options.remote else None
    try:
        target = (options.target_fps if options.target_fps is not None else source_fps) if live else None
        return OptimizedRunner(workload, options.provider, live=live, deadline=options.deadline if live else None,
                               monitor=monitor, low_memory=options.low_memory,
                               merge_in_place=options.low_memory,  # a reader's frames are new arrays
                               dfm=dfm, swap_workers=dfm.connections if dfm is not None else None,
                               target_fps=target or None)
    except Exception as exc:  # ModelLoadError, DFMContractError, ModelFetchError: each says what is wrong
        if dfm is not None:
            dfm.close()
        raise HeadlessError("cannot use model %s: %s" % (options.model or "(the stand-in)", exc)) from exc


def _remote_dfm(options: HeadlessOptions, live: bool) -> Any:
    """The swap step on a dfl-perf serve server: live (short timeout) or for files (waits for the server)."""
    from dfl_perf.remote import RemoteSwapError
    from dfl_perf.remote.runner import RemoteDFM

    if options.model is not None:
        raise HeadlessError("give --model or --remote, not both: with --remote the server's model swaps")
    try:
        return RemoteDFM.connect(options.remote, options.token, options.remote_codec, live=live)
    except (RemoteSwapError, ValueError) as exc:
        raise HeadlessError("remote swap server %s: %s" % (options.remote, exc)) from exc


def run_headless(options: HeadlessOptions) -> Dict[str, Any]:
    """Swap faces in ``options.source`` and write ``options.output``; returns the monitor's summary
    with the runner's frame accounting added (``"accounting"``: submitted, done, dropped, late, error)."""
    from dfl_perf.facepipe.clip import VideoSource
    from dfl_perf.monitor import PerformanceMonitor, draw_overlay
    from dfl_perf.progress import ProgressBar

    if options.output is None and not options.show:
        raise HeadlessError("nothing to do: give --output PATH and/or --show")
    if options.output is not None:
        check_output(options.output)
    try:
        source = VideoSource(options.source, max_frames=options.max_frames)
    except (OSError, ValueError) as exc:
        raise HeadlessError(str(exc)) from exc
    budget = _parse_budget(options.memory_budget)
    with source, PerformanceMonitor(sample_system=options.show) as monitor:
        runner = _build_runner(options, live=source.is_camera, monitor=monitor, source_fps=source.fps)
        memory = _memory_manager(budget, runner)
        writer = open_writer(options.output, source.fps, source.size) if options.output else None
        bar = ProgressBar("run", source.frame_count or 0, enabled=None if options.progress and source.frame_count else False)

        def sink(index: int, frame: Any) -> None:
            if writer is not None:
                writer.write(frame)
            if options.show:
                import cv2

                draw_overlay(frame, monitor)
                cv2.imshow("dfl-perf run (q to stop)", frame)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    raise _Stop()
            bar.advance()

        accounting: Dict[str, int] = {}
        adaptive: Dict[str, Any] = {}
        try:
            with runner:
                stats = runner.run(source, sink=sink)
                accounting = {k: int(v) for k, v in stats.accounting.items()
                              if k in ("submitted", "done", "dropped", "late", "error")}
                adaptive = stats.adaptive
        except _Stop:
            pass
        except ValueError as exc:  # the source went bad mid-stream
            raise HeadlessError(str(exc)) from exc
        except RuntimeError as exc:  # files: a frame the server could not swap, even after waiting for it
            if not options.remote:
                raise
            raise HeadlessError(str(exc).splitlines()[0]) from exc
        finally:
            if options.remote:
                runner.dfm.close()
            bar.close()
            if memory is not None:
                memory.close()
            if writer is not None:
                writer.release()
            if options.show:
                import cv2

                cv2.destroyAllWindows()
        summary = dict(monitor.summary(), accounting=accounting, adaptive=adaptive)
        if memory is not None:
            books = memory.summary()
            summary["memory"] = dict(books["budgets"]["host"], freed=books["freed"]["budget"])
        return summary


def _parse_budget(text: Optional[str]) -> Any:
    if text is None:
        return None
    from dfl_perf.memory._budget import parse_budget, resolve_budget

    try:
        return resolve_budget(parse_budget(text), "host")
    except (TypeError, ValueError) as exc:
        raise HeadlessError(str(exc)) from exc


def _memory_manager(budget: Optional[int], runner: Any) -> Any:
    """``--memory-budget``: a MemoryManager over the runner's buffer pool and session cache, which
    trims them whenever either grows past the budget, and every second (buffers that went idle)."""
    if budget is None:
        return None
    from dfl_perf.memory import MemoryManager

    manager = MemoryManager(host_budget=budget)
    manager.register(runner.pool, name="buffers")
    manager.register(runner.cache, name="sessions")
    return manager.start_sampling(interval=1.0)


def format_summary(summary: Dict[str, Any]) -> str:
    """One short paragraph of what the run did."""
    lat = summary.get("latency") or {}
    return "frames %s, dropped %s, late %s, failed %s, %.1f FPS, latency p50 %.1f ms p95 %.1f ms" % (
        summary.get("frames"), summary.get("dropped"), summary.get("late"), summary.get("failed"),
        summary.get("fps_mean") or 0.0, 1000 * (lat.get("p50") or 0.0), 1000 * (lat.get("p95") or 0.0)) + (
        "; memory %.1f MB held of a %.1f MB budget, %.1f MB freed" % (
            summary["memory"]["held"] / 1e6, summary["memory"]["budget"] / 1e6, summary["memory"]["freed"] / 1e6)
        if summary.get("memory") else "")


def write_json(path: str, options: HeadlessOptions, summary: Dict[str, Any]) -> None:
    """The run's summary as JSON: the monitor's figures (frames, dropped, late, failed, fps, fps_mean,
    latency p50/p95/p99/max in seconds, stages), the runner's accounting, and the options."""
    with open(path, "w") as fh:
        json.dump(dict(summary, options=asdict(options)), fh, indent=2)


def main_args(args: Any) -> int:
    """``dfl-perf run`` with parsed arguments; prints errors in words and returns the exit code."""
    options = HeadlessOptions(model=args.model, source=args.source, output=args.output, show=args.show,
                              provider=args.provider, max_faces=args.max_faces, max_frames=args.max_frames,
                              progress=not args.no_progress, low_memory=args.low_memory,
                              memory_budget=getattr(args, "memory_budget", None),
                              remote=getattr(args, "remote", None), token=getattr(args, "token", None),
                              remote_codec=getattr(args, "remote_codec", "raw"),
                              target_fps=getattr(args, "target_fps", None))
    json_path = getattr(args, "json", None)
    try:
        if json_path:
            _check_folder(json_path)
        summary = run_headless(options)
    except HeadlessError as exc:
        print("dfl-perf run: %s" % exc, file=sys.stderr)
        return 2
    print(format_summary(summary))
    if options.output:
        print("wrote %s" % options.output)
    if json_path:
        write_json(json_path, options, summary)
        print("wrote %s" % json_path)
    return 0
