"""`dfl-perf run` on a real video file: every frame written, in order, faces swapped; clear errors."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.cli import main  # noqa: E402
from dfl_perf.headless import HeadlessError, HeadlessOptions, run_headless  # noqa: E402

FRAMES = 10


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from dfl_perf.facepipe.clip import make_clip

    path = tmp_path_factory.mktemp("video") / "in.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240))
    assert writer.isOpened()
    for frame in make_clip(size=(320, 240), frames=FRAMES).to_list():
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def dfm(tmp_path_factory):
    from dfl_perf.facepipe.standin import save_dfm_standin

    return save_dfm_standin(tmp_path_factory.mktemp("model") / "standin.dfm", cost="5ms")


def _read(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


@pytest.mark.timeout(180)
def test_run_writes_every_frame_swapped(video, dfm, tmp_path, no_thread_leak):
    out = tmp_path / "out.avi"
    summary = run_headless(HeadlessOptions(model=dfm, source=str(video), output=str(out), progress=False))
    assert summary["frames"] == FRAMES and summary["dropped"] == 0
    written, original = _read(out), _read(video)
    assert len(written) == FRAMES
    changed = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(written, original)]
    assert min(changed) > 0.5, "faces were not swapped in every frame"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("extra", [[], ["--low-memory"]])
def test_cli_run(video, dfm, tmp_path, capsys, extra):
    out = tmp_path / "out.mp4"
    assert main(["run", "--model", dfm, "--source", str(video), "--output", str(out), "--no-progress"] + extra) == 0
    assert "frames %d" % FRAMES in capsys.readouterr().out
    assert out.stat().st_size > 0


@pytest.mark.parametrize("change, message", [
    ({"source": "missing.avi"}, "video file not found"),
    ({"model": "missing.dfm"}, "model not found"),
    ({"output": "/nonexistent-dir/out.mp4"}, "does not exist"),
    ({"output": "out.xyz"}, "unsupported extension"),
    ({"output": None}, "nothing to do"),
])
def test_clear_errors(video, dfm, tmp_path, change, message):
    args = dict(model=dfm, source=str(video), output=str(tmp_path / "out.mp4"), progress=False)
    args.update({k: (str(tmp_path / v) if k in ("source", "model") else v) for k, v in change.items()})
    with pytest.raises(HeadlessError, match=message):
        run_headless(HeadlessOptions(**args))


@pytest.mark.timeout(120)
def test_not_an_onnx_model(video, tmp_path, capsys):
    bad = tmp_path / "bad.dfm"
    bad.write_bytes(b"not a model")
    assert main(["run", "--model", str(bad), "--source", str(video), "--output", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert "bad.dfm" in err and "not a valid ONNX model" in err


@pytest.mark.timeout(180)
def test_cli_run_without_model_writes_a_json_summary(video, tmp_path, cache_dir, capsys):
    import json
    import time

    out, report_path = tmp_path / "out.avi", tmp_path / "run.json"
    t0 = time.perf_counter()
    assert main(["run", "--source", str(video), "--output", str(out), "--json", str(report_path), "--no-progress"]) == 0
    wall = time.perf_counter() - t0
    assert "wrote %s" % report_path in capsys.readouterr().out

    def no_nan(value):
        raise ValueError("not JSON: %s" % value)

    report = json.loads(report_path.read_text(), parse_constant=no_nan)
    assert (report["frames"], report["dropped"], report["late"], report["failed"]) == (FRAMES, 0, 0, 0)
    assert report["accounting"] == {"submitted": FRAMES, "done": FRAMES, "dropped": 0, "late": 0, "error": 0}
    assert FRAMES / wall <= report["fps_mean"] < 10_000  # frames over the run's active time, within the call's
    lat = report["latency"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"] < wall
    assert lat["count"] == FRAMES
    assert report["options"]["model"] is None and report["options"]["source"] == str(video)
    written, original = _read(out), _read(video)
    assert len(written) == FRAMES
    assert min(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(written, original)) > 0.5


def test_cli_run_json_folder_is_checked_before_the_run(video, tmp_path, capsys):
    code = main(["run", "--source", str(video), "--output", str(tmp_path / "o.avi"),
                 "--json", str(tmp_path / "nowhere" / "run.json"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "does not exist" in err
    assert not (tmp_path / "o.avi").exists()


@pytest.mark.timeout(180)
def test_memory_budget_keeps_the_runners_buffers_and_sessions_in_bounds(video, dfm, tmp_path, caplog):
    import logging

    roomy = run_headless(HeadlessOptions(model=dfm, source=str(video), output=str(tmp_path / "a.avi"), progress=False,
                                         memory_budget="2G"))
    assert roomy["memory"]["budget"] == 2 * 10 ** 9 and 0 < roomy["memory"]["held"] <= 2 * 10 ** 9
    assert roomy["memory"]["freed"] == 0
    with caplog.at_level(logging.WARNING, logger="dfl_perf.memory"):
        tight = run_headless(HeadlessOptions(model=dfm, source=str(video), output=str(tmp_path / "b.avi"),
                                             progress=False, memory_budget="1M"))
    # the sessions in use are bigger than 1 MB: idle buffers are freed as the pool grows, and it is said once
    assert tight["frames"] == FRAMES and tight["memory"]["freed"] > 0
    assert len([r for r in caplog.records if "cannot hold" in r.getMessage()]) == 1
    assert len(_read(tmp_path / "b.avi")) == FRAMES


def test_cli_memory_budget_is_reported_and_checked(video, dfm, tmp_path, capsys):
    assert main(["run", "--model", dfm, "--source", str(video), "--output", str(tmp_path / "o.avi"),
                 "--memory-budget", "500M", "--no-progress"]) == 0
    assert "held of a 500.0 MB budget" in capsys.readouterr().out
    assert main(["run", "--model", dfm, "--source", str(video), "--output", str(tmp_path / "o.avi"),
                 "--memory-budget", "lots", "--no-progress"]) == 2
    assert "memory budget 'lots'" in capsys.readouterr().err
