"""draw_overlay: a small performance HUD drawn onto a BGR frame in place (cv2)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

__all__ = ["draw_overlay"]

_MB = 1024.0 * 1024.0
_GB = _MB * 1024.0


def _check_frame(frame: Any) -> None:
    import numpy as np

    if not isinstance(frame, np.ndarray):
        raise TypeError("draw_overlay needs a numpy BGR image, got %s" % type(frame).__name__)
    if frame.dtype != np.uint8:
        raise ValueError("draw_overlay needs a uint8 BGR image, got dtype %s" % frame.dtype)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError("draw_overlay needs a BGR image of shape (H, W, 3), got shape %s" % (frame.shape,))
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError("draw_overlay needs a non-empty image, got shape %s" % (frame.shape,))
    if not frame.flags.writeable:
        raise ValueError("draw_overlay draws in place, but the frame is read-only")


def _hud_lines(stats: Mapping[str, Any]) -> List[str]:
    latency: Dict[str, Any] = stats.get("latency") or {}
    p95 = latency.get("p95")
    lines = [
        "FPS %.1f" % stats.get("fps", 0.0),
        "p95 %s" % ("%.1f ms" % (p95 * 1000.0) if p95 is not None else "-"),
        "drop %d late %d fail %d" % (stats.get("dropped", 0), stats.get("late", 0), stats.get("failed", 0)),
    ]
    system = stats.get("system") or {}
    if system.get("process_rss") is not None:
        lines.append("RSS %.0f MB" % (system["process_rss"] / _MB))
    gpus = system.get("gpus") or []
    for gpu in gpus[:2]:
        if gpu.get("memory_used") is not None and gpu.get("memory_total"):
            label = "VRAM%d" % gpu["index"] if len(gpus) > 1 else "VRAM"
            lines.append("%s %.1f/%.1f GB" % (label, gpu["memory_used"] / _GB, gpu["memory_total"] / _GB))
    return lines


def draw_overlay(
    frame: Any,
    monitor: Union[Any, Mapping[str, Any]],
    origin: Tuple[int, int] = (8, 8),
    scale: Optional[float] = None,
    color: Tuple[int, int, int] = (255, 255, 255),
) -> Any:
    """Draw FPS, p95 latency, dropped/late/failed, RSS and VRAM onto ``frame`` in place; returns it.

    ``frame``: uint8 BGR ``(H, W, 3)``, shape and dtype unchanged. ``monitor``: a PerformanceMonitor
    (its ``summary()`` is read) or a summary dict. ``scale``: font scale (default from frame height).
    """
    import cv2  # imported on first use: importing dfl_perf.monitor stays cheap
    import numpy as np

    _check_frame(frame)
    stats = monitor if isinstance(monitor, Mapping) else monitor.summary(stages=False)
    lines = _hud_lines(stats)
    height, width = frame.shape[:2]
    if scale is None:
        scale = min(1.0, max(0.35, height / 1440.0))
    thickness = 1 if scale < 0.8 else 2
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(line, font, scale, thickness) for line in lines]
    line_height = max(size[1] + baseline for size, baseline in sizes) + 4
    text_width = max(size[0] for size, _ in sizes)
    x0, y0 = max(0, int(origin[0])), max(0, int(origin[1]))
    x1, y1 = min(width, x0 + text_width + 8), min(height, y0 + line_height * len(lines) + 4)
    canvas = frame if frame.flags.c_contiguous else np.ascontiguousarray(frame)
    if x1 > x0 and y1 > y0:
        box = canvas[y0:y1, x0:x1]
        np.right_shift(box, 1, out=box)  # darken the box behind the text
    for row, line in enumerate(lines):
        baseline_y = y0 + 2 + line_height * (row + 1) - 4
        cv2.putText(canvas, line, (x0 + 4, baseline_y), font, scale, color, thickness, cv2.LINE_AA)
    if canvas is not frame:
        frame[...] = canvas
    return frame
