"""draw_overlay: in place, shape and dtype kept, pixels changed, clear errors for wrong frames."""

from __future__ import annotations

import numpy as np
import pytest

from dfl_perf.monitor import PerformanceMonitor, draw_overlay


def sample_monitor():
    monitor = PerformanceMonitor()
    for _ in range(20):
        monitor.record("swap", 0.02)
        monitor.frame_done(0.04)
    monitor.frame_dropped(2)
    return monitor


def summary_with_system():
    summary = sample_monitor().summary()
    summary["system"] = {"process_rss": 812 * 2 ** 20, "gpus": [
        {"index": 0, "name": "GPU", "memory_used": 3 * 2 ** 30, "memory_total": 8 * 2 ** 30}]}
    return summary


@pytest.mark.parametrize("shape", [(480, 640, 3), (1080, 1920, 3), (24, 32, 3)])
def test_overlay_draws_in_place_keeping_shape_and_dtype(shape):
    frame = np.full(shape, 200, np.uint8)
    before = frame.copy()
    out = draw_overlay(frame, sample_monitor())
    assert out is frame and frame.shape == shape and frame.dtype == np.uint8
    changed = np.any(frame != before, axis=2)
    assert changed.any()
    rows, cols = np.nonzero(changed)
    # a HUD from the default origin (8, 8) into the top-left corner, clipped to the frame: nothing
    # above or left of the origin changes, and on a real frame it stays within the top-left quarter
    assert rows.min() == 8 and cols.min() == 8
    if shape[0] >= 480:
        assert rows.max() < shape[0] / 4 and cols.max() < shape[1] / 4
    else:  # a tiny frame: the box is clipped at the frame's edges
        assert rows.max() == shape[0] - 1 and cols.max() == shape[1] - 1


def test_overlay_shows_rss_and_vram_from_a_summary_dict():
    plain = np.zeros((480, 640, 3), np.uint8) + 90
    rich = plain.copy()
    draw_overlay(plain, sample_monitor().summary())
    draw_overlay(rich, summary_with_system())
    changed_plain = np.count_nonzero(np.any(plain != 90, axis=2))
    changed_rich = np.count_nonzero(np.any(rich != 90, axis=2))
    assert changed_rich > changed_plain  # two more lines: RSS and VRAM


def test_overlay_on_a_non_contiguous_view_writes_through():
    big = np.full((200, 400, 3), 150, np.uint8)
    view = big[:, ::2]
    assert not view.flags.c_contiguous
    draw_overlay(view, sample_monitor())
    assert np.any(big[:, ::2] != 150) and np.all(big[:, 1::2] == 150)


@pytest.mark.parametrize("frame, error, message", [
    (np.zeros((100, 100, 3), np.float32), ValueError, "uint8 BGR image, got dtype float32"),
    (np.zeros((100, 100), np.uint8), ValueError, r"shape \(H, W, 3\), got shape \(100, 100\)"),
    (np.zeros((100, 100, 4), np.uint8), ValueError, r"got shape \(100, 100, 4\)"),
    (np.zeros((0, 100, 3), np.uint8), ValueError, "non-empty"),
    ([[0, 0, 0]], TypeError, "numpy BGR image, got list"),
])
def test_overlay_rejects_frames_that_are_not_bgr_uint8(frame, error, message):
    with pytest.raises(error, match=message):
        draw_overlay(frame, sample_monitor())


def test_overlay_rejects_a_read_only_frame():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        draw_overlay(frame, sample_monitor())
