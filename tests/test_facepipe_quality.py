"""The live quality knobs (``dfl_perf/facepipe/quality.py``) and the runner holding a target FPS with them."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from dfl_perf.facepipe.quality import LiveQuality, QualityControl, free_size_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_thread_leak")


class _Detector:
    def __init__(self, size):
        self.input_shape = (1, 3, size, size)


def _quality():
    return LiveQuality({320: (_Detector(320), "run320"), 256: (_Detector(256), "run256")})


def test_detection_runs_on_one_frame_in_n_counted_as_frames_come():
    quality = _quality()
    assert [quality.detection_due() for _ in range(4)] == [True] * 4
    quality.set_detect_every(3)
    assert [quality.detection_due() for _ in range(7)] == [True, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="detect_every must be an int >= 1"):
        quality.set_detect_every(0)


def test_detection_due_is_exact_under_several_detect_workers():
    quality = _quality()
    quality.set_detect_every(4)
    due = []
    lock = threading.Lock()

    def worker():
        for _ in range(1000):
            d = quality.detection_due()
            with lock:
                due.append(d)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(due) == 1000  # one in four of 4000 frames, whatever the interleaving


def test_detector_size_switches_and_knobs_list_best_first():
    quality = _quality()
    assert quality.detector().run == "run320" and quality.detector_size == 320
    quality.set_detector_size(256)
    assert quality.detector().run == "run256" and quality.detector_size == 256
    with pytest.raises(ValueError, match="192 not one of"):
        quality.set_detector_size(192)
    knobs = {k.name: k.values for k in quality.knobs()}
    assert knobs == {"detect_every": (1, 2, 3), "detector_size": (320, 256)}
    assert [k.name for k in LiveQuality({320: (_Detector(320), None)}).knobs()] == ["detect_every"]


def test_quality_control_measures_windows_and_says_when_the_source_set_the_rate():
    now = [0.0]
    quality = _quality()
    control = QualityControl(quality, target_fps=30.0, window=1.0, clock=lambda: now[0])
    seen = []
    control.controller.update = lambda fps, source_bound=False: seen.append((round(fps, 3), source_bound))
    for i in range(61):  # 30 frames a second, all done: the first result only opens the window
        now[0] = i / 30.0
        control.frame(done=True, lost=False)
    assert seen == [(30.0, True), (30.0, True)]
    for i in range(61, 91):  # one second where one frame in three is dropped
        now[0] = i / 30.0
        control.frame(done=i % 3 != 0, lost=i % 3 == 0)
    assert seen[-1] == (20.0, False)


def test_free_size_model_finds_the_same_face_at_smaller_inputs(cache_dir):
    pytest.importorskip("onnx")
    from dfl_perf.facepipe.clip import make_clip
    from dfl_perf.facepipe.detector import FaceDetector
    from dfl_perf.facepipe.models import model_path

    path = free_size_model(model_path("yunet_n_320_320"))
    stamp = path.stat().st_mtime_ns
    assert free_size_model(model_path("yunet_n_320_320")) == path and path.stat().st_mtime_ns == stamp  # once
    frame = make_clip(size=(640, 480), frames=1, faces=1).to_list()[0]
    native = FaceDetector(model_path("yunet_n_320_320")).detect(frame)
    assert len(native) == 1
    for size in (256, 192):
        faces = FaceDetector(str(path), input_size=(size, size)).detect(frame)
        assert len(faces) == 1
        # the same face: keypoints within a few pixels of the full-size detector's
        assert np.abs(faces[0].keypoints - native[0].keypoints).max() < 12


def _clip(n=30):
    from dfl_perf.facepipe.clip import make_clip

    return np.stack(make_clip(size=(320, 240), frames=n, faces=1).to_list())


def test_runner_detects_on_one_frame_in_n_and_the_others_keep_their_face(cache_dir):
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload

    frames = _clip(24)
    with OptimizedRunner(Workload(dfm_cost="5ms"), swap_workers=1) as runner:
        calls = []
        decode = runner.detector.decode
        runner.detector.decode = lambda *a, **k: calls.append(1) or decode(*a, **k)
        runner.quality.set_detect_every(3)
        swapped = []
        stats = runner.run(frames, sink=lambda i, f: swapped.append(int(np.abs(f.astype(int) - frames[i]).max())))
    assert stats.frames == 24 and len(calls) == 8  # the detector ran on 8 of 24 frames
    assert all(d > 0 for d in swapped)  # every frame still had its face swapped (the stand-in changes it)


def test_runner_live_holds_the_target_by_turning_the_knobs(cache_dir):
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload, paced_frames

    frames = _clip()
    with OptimizedRunner(Workload(dfm_cost="5ms"), live=True, deadline=0.2, target_fps=2000.0) as runner:
        assert runner.quality.sizes[0] == 320 and len(runner.quality.sizes) == 3  # 320, 256, 192
        stats = runner.run(paced_frames(frames, 2000.0, 2.5))  # far more than any CPU here does
    report = stats.adaptive
    assert report["target_fps"] == 2000.0 and report["changes"]
    assert all(c["direction"] == "degrade" for c in report["changes"][:2])  # behind: cheaper first
    first = report["changes"][0]
    assert (first["knob"], first["old"], first["new"]) == ("detect_every", 1, 2) and "below" in first["reason"]
    assert report["settings"] != {"detect_every": 1, "detector_size": 320}


def test_runner_live_under_its_capacity_keeps_full_quality(cache_dir):
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload, paced_frames

    frames = _clip()
    with OptimizedRunner(Workload(dfm_cost="5ms"), live=True, deadline=1.0, target_fps=10.0) as runner:
        stats = runner.run(paced_frames(frames, 10.0, 2.0))
    assert stats.adaptive["changes"] == [] and stats.adaptive["settings"] == {"detect_every": 1, "detector_size": 320}
    assert stats.not_done == 0 and stats.frames == 20
    with pytest.raises(ValueError, match="target_fps must be None or > 0"):
        OptimizedRunner(Workload(dfm_cost="5ms"), live=True, target_fps=0)


def test_dfl_perf_run_holds_the_camera_rate_unless_told_otherwise(cache_dir):
    from dfl_perf.headless import HeadlessError, HeadlessOptions, _build_runner

    def target(live, **options):
        with _build_runner(HeadlessOptions(model=None, source=0, **options), live=live, monitor=None,
                           source_fps=25.0) as runner:
            return runner.target_fps

    assert target(True) == 25.0  # a camera: its own rate
    assert target(True, target_fps=15.0) == 15.0
    assert target(True, target_fps=0.0) is None  # fixed quality
    assert target(False) is None  # a file: every frame, no target
    with pytest.raises(HeadlessError, match="target FPS must be >= 0"):
        target(True, target_fps=-1.0)
