"""dfl_perf.adapters.deepfacelive.startup: each DFL process's start-up timeline, and the reports on it.

Real spawned processes through the launcher's sitecustomize, the stand-in's ``xlib.mp.csw`` host
(DFL's start / restart sequence) and a real onnxruntime session of a model built with ``onnx``;
nothing of the start-up path is mocked. Needs nothing outside the repo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from dfl_perf.adapters.deepfacelive import startup
from dfl_perf.adapters.deepfacelive._hooks import Patcher
from dfl_perf.adapters.deepfacelive._install import SITE_DIR
from dfl_perf.adapters.deepfacelive.config import CONFIG_ENV, DFLConfig
from dfl_perf.adapters.deepfacelive.launcher import dfl_main

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STANDIN = TESTS / "dfl_standin"


@pytest.fixture
def fresh_recorder(monkeypatch, tmp_path):
    """A new process-wide recorder writing into tmp_path/startup; the old one put back afterwards."""
    monkeypatch.setattr(startup, "_recorder", None)
    folder = tmp_path / "startup"
    rec = startup.recorder(folder)
    yield rec
    monkeypatch.setattr(startup, "_recorder", None)


def test_process_start_time_is_before_now_and_recent():
    started = startup.process_start_time()
    if started is None:
        pytest.skip("no /proc/self/stat on this platform")
    import time

    assert started <= time.time()
    assert time.time() - started < 24 * 3600


def test_recorder_writes_each_event_once_atomically(fresh_recorder):
    fresh_recorder.mark("adapter", when=100.0)
    assert fresh_recorder.mark("adapter", when=200.0) is False  # the first mark stands
    fresh_recorder.add_session("/m/model.dfm", 101.0, 103.5, "hit", ["CPUExecutionProvider"])
    files = list(fresh_recorder.folder.glob("startup-*.json"))
    assert len(files) == 1 and not list(fresh_recorder.folder.glob("*.partial"))
    doc = json.loads(files[0].read_text())
    assert doc["events"]["adapter"] == 100.0
    assert doc["sessions"] == [{"model": "/m/model.dfm", "started": 101.0, "ended": 103.5, "seconds": 2.5,
                                "disk_cache": "hit", "providers": ["CPUExecutionProvider"]}]


def test_set_module_renames_the_file(fresh_recorder):
    fresh_recorder.mark("adapter")
    fresh_recorder.set_module("FaceSwapDFM")
    names = [p.name for p in fresh_recorder.folder.glob("startup-*.json")]
    assert names == ["startup-FaceSwapDFM-%d.json" % os.getpid()]


def test_worker_base_patch_records_imports_and_on_start_and_is_undone(fresh_recorder):
    calls = []

    class Worker:
        @staticmethod
        def _start_proc(cls_, *args):
            worker = cls_()
            worker.on_start(*args)
            calls.append(args)

    class FaceMarkerWorker(Worker):
        def on_start(self, *args):
            calls.append("on_start")

    module = types.SimpleNamespace(Worker=Worker)
    patcher = Patcher()
    startup.patch_worker_base(module, patcher)
    module.Worker._start_proc(FaceMarkerWorker, 1, 2)
    assert calls == ["on_start", (1, 2)]
    assert fresh_recorder.module == "FaceMarker"
    events = fresh_recorder.events
    assert events["spawned"] <= events["imports_done"] <= events["on_start_done"]
    patcher.restore()
    assert "on_start" not in FaceMarkerWorker.__dict__ or FaceMarkerWorker.__dict__["on_start"].__name__ == "on_start"
    assert not hasattr(Worker._start_proc, "dfl_perf_original")


def test_connection_patch_records_first_in_out_and_swapped(fresh_recorder):
    class Info:
        def __init__(self, swapped):
            self.face_swap_image_name = "face_swapped" if swapped else None

    class Frame:
        def __init__(self, swapped):
            self.infos = [Info(swapped)]

        def get_face_swap_info_list(self):
            return self.infos

    class BackendConnection:
        def __init__(self):
            self.items = []

        def read(self, timeout=0):
            return self.items.pop(0) if self.items else None

        def write(self, bcd):
            self.items.append(bcd)

    patcher = Patcher()
    startup.patch_connections(types.SimpleNamespace(BackendConnection=BackendConnection), patcher)
    conn = BackendConnection()
    assert conn.read() is None and "first_frame_in" not in fresh_recorder.events
    conn.write(Frame(False))
    assert "first_frame_out" in fresh_recorder.events and "first_swapped_out" not in fresh_recorder.events
    conn.write(Frame(True))
    assert "first_swapped_out" in fresh_recorder.events
    assert conn.read() is not None and "first_frame_in" in fresh_recorder.events
    patcher.restore()
    assert BackendConnection.read.__name__ == "read"


def test_format_startup_is_relative_to_the_app_process(tmp_path):
    folder = tmp_path / "s"
    app = startup.StartupRecorder(folder, module="app")
    app.events["spawned"] = 1000.0
    app.flush()
    worker = startup.StartupRecorder(folder, module="FaceSwapDFM")
    worker.events.update({"spawned": 1001.0, "imports_done": 1002.5, "first_swapped_out": 1009.25})
    worker.sessions.append({"model": "/x/a.dfm", "started": 1003.0, "ended": 1005.0, "seconds": 2.0,
                            "disk_cache": "stored", "providers": ["CPUExecutionProvider"]})
    worker.pid = worker.pid + 1  # two processes
    worker.flush()
    view = startup.collect_startup(folder)
    assert view["t0"] == 1000.0 and [p["module"] for p in view["processes"]] == ["app", "FaceSwapDFM"]
    text = startup.format_startup(view)
    assert "FaceSwapDFM" in text and "a.dfm 3.00-5.00 stored" in text
    assert "first swapped frame written by FaceSwapDFM: 9.25 s" in text
    with pytest.raises(FileNotFoundError, match="start-up folder not found"):
        startup.collect_startup(tmp_path / "missing")


def test_meter_command_prints_the_startup_table(tmp_path, capsys):
    rec = startup.StartupRecorder(tmp_path, module="app")
    rec.mark("adapter")
    assert dfl_main(["meter", str(tmp_path), "--startup"]) == 0
    assert "DFL start-up timeline" in capsys.readouterr().out
    assert dfl_main(["meter", str(tmp_path), "--startup", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["processes"][0]["module"] == "app"


def test_no_folder_no_recording_hooks():
    assert DFLConfig(meter_dir=None, startup_dir=None).startup_folder() in (None, os.environ.get("DFL_PERF_STARTUP_DIR"))
    assert DFLConfig(meter_dir="/m").startup_folder() == "/m"
    assert DFLConfig(meter_dir="/m", startup_dir="/s").startup_folder() == "/s"


_HOST_SCRIPT = textwrap.dedent("""
    import json, sys, time
    sys.path[:0] = [{standin!r}, {tests!r}, {repo!r}]
    from xlib.mp.csw import Host
    from startup_probe import ProbeSheet, ProbeState, ProbeWorker

    if __name__ == "__main__":
        host = Host(sheet_cls=ProbeSheet, worker_cls=ProbeWorker, worker_state_cls=ProbeState,
                    worker_start_args=[{model!r}, {restarts!r}])
        host.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (host._state.lives > {restarts!r} and host.is_started()):
            host.process_messages()
            time.sleep(0.01)
        time.sleep(0.5)  # the last worker builds its session on its second tick
        host.process_messages()
        host.stop()
        while not host.is_stopped() and time.monotonic() < deadline:
            host.process_messages()
            time.sleep(0.01)
        import os
        print(json.dumps({{"errors": host.errors, "lives": host._state.lives, "pids": host._state.pids,
                          "ppids": host._state.ppids, "app_pid": os.getpid(),
                          "processes": len(host.processes), "status": host.status_log,
                          "resets": host.get_control_sheet().model.resets}}))
""")


def _run_host(tmp_path: Path, config, restarts: int = 1) -> dict:
    import onnx
    from onnx_models import tiny_model

    model = tmp_path / "model.onnx"
    onnx.save(tiny_model(), str(model))
    script = tmp_path / "host.py"
    script.write_text(_HOST_SCRIPT.format(standin=str(STANDIN), tests=str(TESTS), repo=str(REPO), model=str(model),
                                          restarts=restarts))
    env = dict(os.environ, ORT_DEVICES_INITIALIZED="1", ORT_DEVICES_COUNT="0")
    env.pop("DFL_PERF_STARTUP_DIR", None)
    env.pop(CONFIG_ENV, None)
    if config is not None:
        env.update(PYTHONPATH=SITE_DIR)
        env[CONFIG_ENV] = config.to_json()
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["errors"], result["errors"]
    assert result["lives"] == restarts + 1
    return result


def _config(tmp_path: Path, **kwargs) -> DFLConfig:
    return DFLConfig(cache_dir=str(tmp_path / "cache"), meter=False, fast_dfm=False, **kwargs)


def test_dfl_restarts_a_worker_in_a_new_process(tmp_path):
    plain = _run_host(tmp_path, None)
    assert plain["processes"] == 2 and len(set(plain["pids"])) == 2
    kept = _run_host(tmp_path, _config(tmp_path, restart_in_process=False))
    assert kept["processes"] == 2 and len(set(kept["pids"])) == 2


def test_workers_fork_from_a_preloaded_server_unless_turned_off(tmp_path):
    forked = _run_host(tmp_path, _config(tmp_path, restart_in_process=False))
    assert all(ppid != forked["app_pid"] for ppid in forked["ppids"])  # children of the forkserver
    assert len(set(forked["ppids"])) == 1
    spawned = _run_host(tmp_path, _config(tmp_path, restart_in_process=False, forkserver=False))
    assert spawned["ppids"] == [spawned["app_pid"]] * 2  # DFL's spawn: children of the app
    plain = _run_host(tmp_path, None)
    assert plain["ppids"] == [plain["app_pid"]] * 2


def test_forkserver_patch_needs_dfls_spawn_and_is_undone():
    import multiprocessing

    from dfl_perf.adapters.deepfacelive import forkserver

    if not forkserver.available():
        pytest.skip("no forkserver start method on this platform (Windows): DFL's spawn stays")
    default = multiprocessing.context._default_context
    saved = default._actual_context
    try:
        default._actual_context = multiprocessing.get_context("spawn")
        patcher = Patcher()
        forkserver.patch_mp_module(types.SimpleNamespace(__name__="xlib.mp"), patcher)
        assert multiprocessing.get_start_method() == "forkserver"
        patcher.restore()
        assert multiprocessing.get_start_method() == "spawn"
        default._actual_context = multiprocessing.get_context("fork")
        forkserver.patch_mp_module(types.SimpleNamespace(__name__="xlib.mp"), patcher)
        assert multiprocessing.get_start_method() == "fork"  # not DFL's spawn: left alone
    finally:
        default._actual_context = saved


_ENV_SCRIPT = textwrap.dedent("""
    import json, multiprocessing, os, sys
    sys.path[:0] = [{fake!r}, {standin!r}]
    from envprobe import report  # imports the (fake) DFL backend in the app, as DFL's app does

    if __name__ == "__main__":
        from dfl_perf.adapters.deepfacelive import forkserver
        early = forkserver.server_pid()  # before DFL's xlib.mp is imported
        os.environ["PROBE_LATE"] = "set by the app after launch"
        if {devices!r}:
            os.environ["ORT_DEVICES_INITIALIZED"] = "1"  # as DFL's device module does in the app
        import xlib.mp  # forces spawn, as DFL's does
        queue = multiprocessing.SimpleQueue()
        worker = multiprocessing.Process(target=report, args=(queue,))
        worker.start()
        result = queue.get()
        worker.join(60)
        result.update(app_pid=os.getpid(), early_server=early, server=forkserver.server_pid(),
                      folder=forkserver._ours["folder"], method=multiprocessing.get_start_method())
        print(json.dumps(result))
""")

_FAKE_BACKEND = textwrap.dedent("""
    import os, sys
    IMPORTED_IN = os.getpid()
    NUMPY_BEFORE = "numpy" in sys.modules
    PROBE_AT_IMPORT = os.environ.get("PROBE_LATE")
""")

_ENV_PROBE = textwrap.dedent("""
    import os
    import apps.DeepFaceLive.backend as backend

    def report(queue):
        queue.put({"pid": os.getpid(), "ppid": os.getppid(), "probe": os.environ.get("PROBE_LATE"),
                   "imported_in": backend.IMPORTED_IN, "numpy_before": backend.NUMPY_BEFORE,
                   "probe_at_import": backend.PROBE_AT_IMPORT,
                   "handoff": os.environ.get("DFL_PERF_FORKSERVER_HANDOFF")})
""")


def _launch_env_probe(tmp_path: Path, flags, devices: bool = True) -> dict:
    """The launcher runs an app that sets environment after launch and starts one worker; what the worker saw."""
    fake = tmp_path / "fake_dfl"
    backend = fake / "apps" / "DeepFaceLive" / "backend"
    backend.mkdir(parents=True, exist_ok=True)
    for package in (fake / "apps", fake / "apps" / "DeepFaceLive"):
        (package / "__init__.py").write_text("")
    (backend / "__init__.py").write_text(_FAKE_BACKEND)
    (fake / "envprobe.py").write_text(_ENV_PROBE)
    script = tmp_path / "app.py"
    script.write_text(_ENV_SCRIPT.format(fake=str(fake), standin=str(STANDIN), devices=devices))
    env = dict(os.environ)
    for name in ("DFL_PERF_STARTUP_DIR", CONFIG_ENV, "ORT_DEVICES_INITIALIZED", "PROBE_LATE"):
        env.pop(name, None)
    command = [sys.executable, "-m", "dfl_perf.adapters.deepfacelive", "--no-meter", "--cache-dir",
               str(tmp_path / "cache")] + list(flags) + [str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gone(pid: int, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_forkserver_starts_at_launch_and_workers_get_the_apps_environment(tmp_path):
    from dfl_perf.adapters.deepfacelive import forkserver

    if not forkserver.available():
        pytest.skip("no forkserver start method on this platform (Windows): DFL's spawn stays")
    seen = _launch_env_probe(tmp_path, [])
    assert seen["method"] == "forkserver" and seen["early_server"] is not None  # running before DFL's main ran
    assert seen["ppid"] == seen["early_server"] != seen["app_pid"]  # forked from that server
    assert seen["probe"] == "set by the app after launch"  # the app's environment at the worker's start
    assert seen["handoff"] is None  # the hand-over file's name stays in the server
    # DFL's backend imported once in the server, before the fork, with the app's environment
    assert seen["imported_in"] == seen["early_server"]
    assert seen["probe_at_import"] == "set by the app after launch"
    assert seen["numpy_before"] is True  # the third-party libraries first
    assert not Path(seen["folder"]).exists()  # the hand-over folder is removed at exit
    assert _gone(seen["server"])  # and the server ends with the app


def test_forkserver_imports_no_dfl_module_before_the_app_enumerated_its_devices(tmp_path):
    from dfl_perf.adapters.deepfacelive import forkserver

    if not forkserver.available():
        pytest.skip("no forkserver start method on this platform (Windows): DFL's spawn stays")
    seen = _launch_env_probe(tmp_path, [], devices=False)  # no ORT_DEVICES_INITIALIZED in the app
    assert seen["ppid"] == seen["early_server"] and seen["imported_in"] == seen["pid"]  # imported after the fork
    assert seen["numpy_before"] is True and seen["probe_at_import"] == "set by the app after launch"
    no_backend = _launch_env_probe(tmp_path, ["--no-forkserver-backend"])
    assert no_backend["imported_in"] == no_backend["pid"] and no_backend["numpy_before"] is True
    assert no_backend["probe"] == "set by the app after launch"


def test_forkserver_late_or_off(tmp_path):
    from dfl_perf.adapters.deepfacelive import forkserver

    if not forkserver.available():
        pytest.skip("no forkserver start method on this platform (Windows): DFL's spawn stays")
    late = _launch_env_probe(tmp_path, ["--forkserver-late"])
    assert late["early_server"] is None and late["method"] == "forkserver"
    assert late["ppid"] == late["server"] != late["app_pid"] and late["imported_in"] == late["server"]
    assert late["probe"] == late["probe_at_import"] == "set by the app after launch"
    spawned = _launch_env_probe(tmp_path, ["--no-forkserver"])
    assert spawned["method"] == "spawn" and spawned["early_server"] is None and spawned["server"] is None
    assert spawned["ppid"] == spawned["app_pid"] and spawned["imported_in"] == spawned["pid"]
    assert spawned["numpy_before"] is False and spawned["probe"] == "set by the app after launch"


def test_restart_in_process_keeps_the_process_and_what_the_app_sees(tmp_path):
    plain = _run_host(tmp_path, None, restarts=2)
    fast = _run_host(tmp_path, _config(tmp_path), restarts=2)
    assert fast["processes"] == 1 and len(set(fast["pids"])) == 1
    assert fast["status"] == plain["status"]  # starting, started, stopped, starting, started, ... stopping, stopped
    assert fast["resets"] == plain["resets"]  # the app's controls reset as when a new process starts


def test_spawned_workers_write_their_timeline_across_a_restart(tmp_path):
    folder = tmp_path / "startup"
    _run_host(tmp_path, _config(tmp_path, startup_dir=str(folder), restart_in_process=False))
    view = startup.collect_startup(folder)
    modules = [p["module"] for p in view["processes"]]
    assert modules == ["app", "Probe", "Probe"], modules
    first, second = view["processes"][1:]
    assert first["pid"] != second["pid"]
    for proc in (first, second):
        ev = proc["events"]
        assert ev["spawned"] <= ev["adapter"] <= ev["imports_done"] <= ev["on_start_done"]
        assert len(proc["sessions"]) == 1
        session = proc["sessions"][0]
        assert session["model"].endswith("model.onnx") and session["ended"] >= session["started"] >= ev["on_start_done"]
    # the restarted worker finds the optimized model its predecessor stored on disk
    assert first["sessions"][0]["disk_cache"] == "stored"
    assert second["sessions"][0]["disk_cache"] == "hit"
    assert second["events"]["spawned"] >= first["events"]["on_start_done"]
    assert view["t0"] == view["processes"][0]["events"]["spawned"]


def test_timeline_of_an_in_process_restart_has_one_line_per_life(tmp_path):
    folder = tmp_path / "startup"
    _run_host(tmp_path, _config(tmp_path, startup_dir=str(folder)))
    view = startup.collect_startup(folder)
    probes = [p for p in view["processes"] if p["module"] == "Probe"]
    assert [p["cycle"] for p in probes] == [0, 1] and probes[0]["pid"] == probes[1]["pid"]
    second = probes[1]
    assert second["events"]["spawned"] >= probes[0]["events"]["on_start_done"]
    assert second["sessions"][0]["disk_cache"] == "hit"
    assert "Probe" in startup.format_startup(view)


def test_no_startup_folder_writes_nothing(tmp_path):
    _run_host(tmp_path, _config(tmp_path))
    assert not list(tmp_path.rglob("startup-*.json"))


# ------------------------------------------------------------------------------------ the lazy heap

def test_shared_bytes_is_a_zeroed_raw_array_that_workers_share(tmp_path):
    import ctypes
    import multiprocessing

    from dfl_perf.adapters.deepfacelive.lazy_heap import shared_bytes

    size = 64 * 1024 * 1024
    array = shared_bytes(size)
    reference = multiprocessing.RawArray("B", 16)
    assert type(array)._type_ is type(reference)._type_ and ctypes.sizeof(array) == size
    view = memoryview(array).cast("B")
    assert view[0] == 0 and view[size // 2] == 0 and view[size - 1] == 0
    view[123] = 7
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_and_write, args=(array, queue))
    proc.start()
    assert queue.get(timeout=60) == (7, 0)
    proc.join(timeout=60)
    assert view[456] == 9  # written by the worker into the same memory


def _read_and_write(array, queue):
    view = memoryview(array).cast("B")
    view[456] = 9
    queue.put((view[123], view[len(view) - 1]))


def test_shared_bytes_clears_reused_memory():
    import ctypes

    from dfl_perf.adapters.deepfacelive.lazy_heap import shared_bytes

    first = shared_bytes(1 << 20)
    ctypes.memset(ctypes.addressof(first), 0xAB, 1 << 20)
    del first  # its block goes back to multiprocessing's heap; the next one may be carved from it
    second = shared_bytes(1 << 20)
    assert bytes(memoryview(second)[:4096]) == bytes(4096)
    assert max(memoryview(second).cast("B")) == 0


def test_patched_shared_memory_allocates_lazily_and_is_undone():
    import multiprocessing

    from dfl_perf.adapters.deepfacelive.lazy_heap import patch_shared_memory_module

    class MPSharedMemory:  # DFL's interface (xlib.mp.MPSharedMemory)
        def __init__(self, size):
            self._size = size
            self._ar = multiprocessing.RawArray("B", size)
            self._mv = memoryview(self._ar).cast("B")

        def get_ar(self):
            return self._ar

        def get_mv(self):
            return self._mv

    module = types.SimpleNamespace(MPSharedMemory=MPSharedMemory, __name__="xlib.mp.MPSharedMemory")
    original = MPSharedMemory.__init__
    patcher = Patcher()
    patch_shared_memory_module(module, patcher)
    assert MPSharedMemory.__init__ is not original
    shm = MPSharedMemory(1 << 20)
    assert len(shm.get_mv()) == 1 << 20 and shm.get_mv()[100] == 0 and shm._size == 1 << 20
    patcher.restore()
    assert MPSharedMemory.__init__ is original


# ------------------------------------------------------------------------------------ lean weights "auto"

def test_lean_weights_auto_picks_big_model_files_on_the_cpu(tmp_path):
    from dfl_perf.adapters.deepfacelive.factory import LEAN_AUTO_BYTES, session_config
    from dfl_perf.sessions.source import resolve_model

    big, small = tmp_path / "big.dfm", tmp_path / "small.onnx"
    with open(str(big), "wb") as f:
        f.truncate(LEAN_AUTO_BYTES)
    small.write_bytes(b"x" * 1000)
    cpu, cuda = [("CPUExecutionProvider", {})], [("CUDAExecutionProvider", {"device_id": "0"})]
    auto = DFLConfig()
    assert auto.lean_weights == "auto"
    assert session_config(auto, cpu, 1, resolve_model(str(big))).lean_weights is True
    assert session_config(auto, cpu, 1, resolve_model(str(big))).disk_cache is False
    assert session_config(auto, cpu, 1, resolve_model(str(small))).lean_weights is False
    assert session_config(auto, cpu, 1, resolve_model(str(small))).disk_cache is True
    assert session_config(auto, cuda, 1, resolve_model(str(big))).lean_weights is False  # measured on the CPU only
    assert session_config(DFLConfig(lean_weights=False), cpu, 1, resolve_model(str(big))).lean_weights is False
    assert session_config(DFLConfig(lean_weights=True), cpu, 1, resolve_model(str(small))).lean_weights is True
    with pytest.raises(ValueError, match="lean_weights must be True, False or 'auto'"):
        DFLConfig(lean_weights="yes")


def test_startup_report_at_exit(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DFL_PERF_STARTUP_DIR", raising=False)
    main_py = tmp_path / "main.py"
    main_py.write_text("print('DFL ran')\n")
    try:
        code = dfl_main(["--startup-report", "--no-meter", "--cache-dir", str(tmp_path / "cache"), str(main_py)])
    finally:
        startup._recorder = None
    assert code == 0
    captured = capsys.readouterr()
    assert "DFL ran" in captured.out
    assert "DFL start-up timeline" in captured.err and "\napp " in captured.err
