"""The reference workload both ways: same frames in, same frames out; the optimized runner's
pipeline accounts for every frame, drops in live mode, and leaves no thread or leased buffer."""

from __future__ import annotations

import time
import weakref

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.benchmark import MATCH_TOLERANCE  # noqa: E402
from dfl_perf.facepipe.workload import (  # noqa: E402
    BaselineRunner,
    OptimizedRunner,
    Workload,
    merge_face_dfl_style,
    standin_model_path,
)

FAST = Workload(dfm_cost="5ms")


@pytest.fixture(scope="module")
def frames():
    from dfl_perf.facepipe.clip import make_clip

    return make_clip(size=(640, 480), frames=12, seed=3).to_list()


@pytest.fixture(autouse=True)
def _cache(cache_dir):
    return cache_dir


@pytest.mark.timeout(180)
def test_both_ways_give_the_same_frames(frames, no_thread_leak):
    expected = {}
    base = BaselineRunner(FAST)
    stats_b = base.run(frames, sink=lambda i, f: expected.__setitem__(i, f.copy()))
    got = {}
    with OptimizedRunner(FAST, swap_workers=2) as runner:
        runner.run(frames[:4])
        held = runner.pool.stats()["leased"]  # the runners' own per-thread IOBinding buffers
        stats_o = runner.run(frames, sink=lambda i, f: got.__setitem__(i, f.copy()))
        assert runner.pool.stats()["leased"] == held, "frame buffers were not given back to the pool"
    assert sorted(got) == sorted(expected) == list(range(len(frames)))
    assert stats_b.frames == stats_o.frames == len(frames)
    for i in expected:  # MATCH_TOLERANCE says why a few levels
        assert np.abs(got[i].astype(int) - expected[i].astype(int)).max() <= MATCH_TOLERANCE
        assert (got[i] != frames[i]).any(), "the face was not swapped"
    acc = stats_o.accounting
    assert acc["submitted"] == acc["done"] == len(frames) and acc["in_flight"] == 0


@pytest.mark.timeout(180)
def test_outputs_arrive_in_order_with_several_workers(frames):
    order = []
    with OptimizedRunner(FAST, swap_workers=3) as runner:
        runner.run(frames, sink=lambda i, f: order.append(i))
    assert order == list(range(len(frames)))


@pytest.mark.timeout(180)
def test_files_mode_holds_at_most_max_in_flight_frames_through_a_stall(frames, no_thread_leak):
    held = []  # frames taken from the source and not yet handed to the sink, at each take
    counts = {"taken": 0, "sunk": 0}

    def source():
        for i in range(40):
            held.append(counts["taken"] - counts["sunk"])
            counts["taken"] += 1
            yield frames[i % len(frames)]

    def sink(index, frame):
        counts["sunk"] += 1

    with OptimizedRunner(FAST, swap_workers=3, max_in_flight=4) as runner:
        swap = runner.swap

        def stalling_swap(item):  # frame 3 stalls; the other workers finish the frames behind it
            if item.index == 3:
                time.sleep(1.0)
            return swap(item)

        runner.swap = stalling_swap
        stats = runner.run(source(), sink=sink)
    assert stats.frames == 40
    # the feeder waits for room before it takes a frame, and the sink's frame keeps its place
    assert max(held) <= 4, held
    with pytest.raises(ValueError, match="max_in_flight must be None or >= 1"):
        OptimizedRunner(FAST, max_in_flight=0)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("merge_in_place", [False, True])
def test_files_mode_keeps_no_more_than_max_in_flight_frames_alive(frames, merge_in_place, no_thread_leak):
    alive = []  # source frames still referenced anywhere, counted as each new one is made
    made = []

    def source():
        for i in range(30):
            alive.append(sum(ref() is not None for ref in made))
            frame = frames[i % len(frames)].copy()  # a new array each time, like a video reader's
            made.append(weakref.ref(frame))
            yield frame
            del frame

    with OptimizedRunner(FAST, swap_workers=2, max_in_flight=3, merge_in_place=merge_in_place) as runner:
        stats = runner.run(source(), sink=lambda i, f: None)
    assert stats.frames == 30
    # 3 in flight, counted before the 4th is made: the frame the sink last had is already gone
    assert max(alive) <= 3, alive


@pytest.mark.timeout(180)
def test_low_memory_gives_the_same_frames_with_one_swap_worker(frames, no_thread_leak):
    outputs = {}
    for low in (False, True):
        got = outputs[low] = {}
        with OptimizedRunner(FAST, low_memory=low) as runner:
            runner.run(frames, sink=lambda i, f, got=got: got.__setitem__(i, f.copy()))
            if low:
                assert (runner.swap_workers, runner.max_in_flight) == (1, 3)
    assert sorted(outputs[True]) == list(range(len(frames)))
    for i in outputs[False]:
        np.testing.assert_array_equal(outputs[True][i], outputs[False][i])


def test_session_settings_per_mode(no_thread_leak, caplog):
    with OptimizedRunner(FAST, provider="cpu") as runner:  # the memory pattern only costs memory on a CPU
        assert runner.session_config.enable_mem_pattern is False and not runner.session_config.lean_weights
    with caplog.at_level("WARNING", logger="dfl_perf.facepipe"):
        with OptimizedRunner(FAST, provider="cpu", low_memory=True, disk_cache=True) as runner:
            config = runner.session_config
    assert config.lean_weights and not config.disk_cache and config.enable_mem_pattern is False
    assert "disk_cache is off" in caplog.text
    with OptimizedRunner(FAST, provider="cpu", mem_pattern=True) as runner:  # the caller's choice wins
        assert runner.session_config.enable_mem_pattern is True


@pytest.mark.timeout(180)
def test_merge_in_place_writes_into_the_source_frame_and_matches(frames, no_thread_leak):
    expected = {}
    with OptimizedRunner(FAST) as runner:
        runner.run(frames, sink=lambda i, f: expected.__setitem__(i, f.copy()))
    fresh = [f.copy() for f in frames]  # a video reader's frames: new arrays the runner may change
    readonly = frames[0].copy()
    readonly.flags.writeable = False
    seen = {}
    with OptimizedRunner(FAST, merge_in_place=True) as runner:
        runner.run([f.copy() for f in frames[:6]])  # every worker binds its buffers
        held = runner.pool.stats()["leased"]
        runner.run(fresh + [readonly], sink=lambda i, f: seen.__setitem__(i, (f, f.copy())))
        assert runner.pool.stats()["leased"] == held, "an output frame was not given back"
    for i, (given, copy) in seen.items():
        if i < len(fresh):
            assert given is fresh[i], "frame %d: the sink did not get the source frame merged in place" % i
            np.testing.assert_array_equal(copy, expected[i])
    np.testing.assert_array_equal(seen[len(fresh)][1], expected[0])  # read-only: a pooled output
    np.testing.assert_array_equal(readonly, frames[0])


@pytest.mark.timeout(180)
def test_live_mode_drops_and_accounts_for_every_frame(frames, no_thread_leak):
    def flood():
        for _ in range(6):
            yield from frames  # as fast as possible: far over what two cores can swap

    with OptimizedRunner(FAST, live=True, deadline=0.5) as runner:
        stats = runner.run(flood())
    acc = stats.accounting
    assert acc["submitted"] == len(frames) * 6
    assert acc["done"] + acc["dropped"] + acc["late"] + acc["error"] == acc["submitted"]
    assert acc["dropped"] + acc["late"] > 0
    assert stats.frames == acc["done"]


def test_dfl_style_merge_matches_rect_merge(frames):
    from dfl_perf.facepipe.align import align_matrix
    from dfl_perf.facepipe.merge import merge_face

    rng = np.random.RandomState(0)
    celeb = cv2.GaussianBlur(rng.rand(224, 224, 3).astype(np.float32), (9, 9), 3)  # smooth, like a face
    mask = np.ones((224, 224), np.float32)
    M = align_matrix(np.array([[300, 200], [340, 200], [320, 225], [305, 250], [335, 250]], np.float32), 224)
    a = merge_face_dfl_style(frames[0], celeb, mask, M)
    b = merge_face(frames[0], celeb, mask, M)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= MATCH_TOLERANCE


def test_missing_dfm_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.dfm"):
        BaselineRunner(Workload(dfm=str(tmp_path / "nope.dfm")))


def test_negative_stand_in_weights_are_a_clear_error():
    with pytest.raises(ValueError, match="dfm_weights_mb must be >= 0"):
        Workload(dfm_weights_mb=-5)


def test_timeline_has_a_row_even_for_a_run_shorter_than_a_fifth_of_a_window():
    from dfl_perf.facepipe.workload import RunStats

    short = RunStats(frames=3, started=10.0, finished=10.06, latencies=[0.01, 0.02, 0.03],
                     completions=[10.02, 10.04, 10.06])
    assert short.timeline() == [{"t": pytest.approx(0.06), "fps": pytest.approx(50.0), "latency_p50": 0.02}]
    longer = RunStats(frames=4, started=0.0, finished=0.55, latencies=[0.01] * 4, completions=[0.1, 0.2, 0.3, 0.55])
    assert [row["t"] for row in longer.timeline()] == [0.5]  # a 0.05 s last window is left out


def test_standin_file_is_built_once(cache_dir):
    a = standin_model_path(224, "5ms")
    before = a.stat()
    assert standin_model_path(224, "5ms") == a
    after = a.stat()  # a rebuild writes a new file and renames it over: a new inode, whatever the clock
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert str(a).startswith(str(cache_dir))


@pytest.mark.timeout(60)
def test_dfl_live_loop_takes_the_newest_frame(no_thread_leak):
    import time as _time

    from dfl_perf.facepipe.workload import run_live_latest

    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(50)]  # the camera's 50 frames, numbered
    seen = []

    def slow(frame):  # 4x slower than the camera: most frames are never taken
        seen.append(int(frame[0, 0, 0]))
        _time.sleep(0.08)

    stats = run_live_latest(slow, frames, fps=50, duration=1.0)
    assert stats.frames == len(seen) >= 2 and stats.frames + stats.not_done == 50
    steps = np.diff(seen)
    assert (steps >= 1).all() and steps.mean() > 1.5, seen  # never an older frame; most frames skipped
    assert stats.frames < 50 and seen[0] == 0
    assert all(0.08 <= lat < 1.0 for lat in stats.latencies)  # capture to end of process: >= the 80 ms sleep
