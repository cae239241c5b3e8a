"""DeepFaceLive's real backend, headless: the app process that benchmarks/bench_dfl_real.py starts.

Run as ``python _dfl_real_app.py SPEC.json`` (plain), or as DFL's main.py through the launcher
(``python -m dfl_perf.adapters.deepfacelive _dfl_real_app.py SPEC.json``). This is our code driving
DFL's public backend classes the way DFL's Qt window does (QLiveSwap): the same 11 backend hosts,
connections, 2 GiB weak heap and settings database, started with ``restore_on_off_state``, their
pipe messages processed every 5 ms, their control sheets set programmatically where a user would
click (input file, not real-time, play; CPU device; the DFM model). No DFL code is copied here.

Spawned workers re-import this file as ``__mp_main__``, so its top level is standard library only,
plus what DFL's own main.py would run at its top: the one-line ``install()`` when the spec asks for
it (env ``DFL_BENCH_INSTALL=1``), and on Python >= 3.10 (the current stack) the aliases DFL's code
needs there: ``collections.Iterable`` and numpy's removed ``np.int``/``np.float``/``np.bool``/...
(numpy is imported for that; every DFL worker imports it anyway).
"""

import collections
import collections.abc
import json
import os
import sys
import threading
import time

if not hasattr(collections, "Iterable"):  # DFL imports collections.Iterable (removed in Python 3.10)
    collections.Iterable = collections.abc.Iterable


def _numpy_aliases():
    """numpy >= 1.24 dropped np.int, np.float, np.bool, np.object, which DFL's code uses: alias them (3.11 stack)."""
    import warnings

    import numpy

    for name, value in (("int", int), ("float", float), ("bool", bool), ("object", object), ("complex", complex)):
        if name not in numpy.__dict__:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                present = hasattr(numpy, name)
            if not present:
                setattr(numpy, name, value)


if sys.version_info >= (3, 10):
    _numpy_aliases()

if os.environ.get("DFL_BENCH_INSTALL") == "1":  # the one line a user puts at the top of DFL's main.py
    import dfl_perf.adapters.deepfacelive as dp

    dp.install()

def _process_start():
    """This process's creation time as time.time() seconds (Linux /proc), else now."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / float(os.sysconf("SC_CLK_TCK")))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


T0 = _process_start()  # every time reported is seconds since the app process was created


# ------------------------------------------------------------------------------------------- /proc

def _children(pid):
    found = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return found
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                found.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return found


def process_tree(pid):
    """pid and all its descendants."""
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(_children(p))
    return seen


def pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """user + system CPU seconds of a process and its waited-for children (0 when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


class PssSampler:
    """Peak of the summed PSS of this process and all its descendants, sampled every ``interval`` s."""

    def __init__(self, interval=0.25):
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pss-sampler", daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            total = sum(pss_kb(p) for p in process_tree(os.getpid()))
            self.peak_kb = max(self.peak_kb, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------------------------------- the app

def now():
    return time.time() - T0


class HeadlessDFL:
    """DFL's backend graph as QLiveSwap builds it, without Qt."""

    def __init__(self, spec):
        from apps.DeepFaceLive import backend

        self.backend = backend
        self.spec = spec
        userdata = _path(spec["userdata"])
        settings = userdata / "settings"
        settings.mkdir(parents=True, exist_ok=True)
        for sub in ("dfm_models", "animatables", "output_sequence"):
            (userdata / sub).mkdir(parents=True, exist_ok=True)
        db = self.db = backend.BackendDB(settings / "states.dat")
        heap = backend.BackendWeakHeap(size_mb=2048)
        reemit = backend.BackendSignal()
        c = self.connections = {name: backend.BackendConnection(multi_producer=(name == "sources"))
                                for name in ("sources", "detector", "marker", "aligner", "swapper", "adjuster",
                                             "merger")}
        self.hosts = collections.OrderedDict([
            ("FileSource", backend.FileSource(weak_heap=heap, reemit_frame_signal=reemit, bc_out=c["sources"],
                                              backend_db=db)),
            ("CameraSource", backend.CameraSource(weak_heap=heap, bc_out=c["sources"], backend_db=db)),
            ("FaceDetector", backend.FaceDetector(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["sources"],
                                                  bc_out=c["detector"], backend_db=db)),
            ("FaceMarker", backend.FaceMarker(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["detector"],
                                              bc_out=c["marker"], backend_db=db)),
            ("FaceAligner", backend.FaceAligner(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["marker"],
                                                bc_out=c["aligner"], backend_db=db)),
            ("FaceAnimator", backend.FaceAnimator(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["aligner"],
                                                  bc_out=c["merger"], animatables_path=userdata / "animatables",
                                                  backend_db=db)),
            ("FaceSwapInsight", backend.FaceSwapInsight(weak_heap=heap, reemit_frame_signal=reemit,
                                                        bc_in=c["aligner"], bc_out=c["swapper"],
                                                        faces_path=userdata / "animatables", backend_db=db)),
            ("FaceSwapDFM", backend.FaceSwapDFM(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["aligner"],
                                                bc_out=c["swapper"], dfm_models_path=userdata / "dfm_models",
                                                backend_db=db)),
            ("FrameAdjuster", backend.FrameAdjuster(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["swapper"],
                                                    bc_out=c["adjuster"], backend_db=db)),
            ("FaceMerger", backend.FaceMerger(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["adjuster"],
                                              bc_out=c["merger"], backend_db=db)),
            ("StreamOutput", backend.StreamOutput(weak_heap=heap, reemit_frame_signal=reemit, bc_in=c["merger"],
                                                  save_default_path=userdata, backend_db=db)),
        ])
        self.inputs = {"FaceDetector": "sources", "FaceMarker": "detector", "FaceAligner": "marker",
                       "FaceSwapDFM": "aligner", "FrameAdjuster": "swapper", "FaceMerger": "adjuster",
                       "StreamOutput": "merger"}
        self.outputs = {"FileSource": "sources", "FaceDetector": "detector", "FaceMarker": "marker",
                        "FaceAligner": "aligner", "FaceSwapDFM": "swapper", "FrameAdjuster": "adjuster",
                        "FaceMerger": "merger"}
        self.model_name = spec["model"]
        self.played_pid = None
        self.timeline = {}        # module -> list of per-process dicts of event times
        self._procs = {}          # module -> the multiprocessing.Process last seen
        self._seen = {"swapper": 0, "merger": 0}
        self.swapped = []         # (time, uid, ring id) of swapped frames written by FaceSwapDFM
        self.dfm_stops = []       # (time, swapper ring id) each time FaceSwapDFM's worker stopped (restarts)
        self.hosts["FaceSwapDFM"].call_on_state_change(self._on_dfm_state)
        self.delivered = []       # (time, uid, swapped) of frames written by FaceMerger (read by StreamOutput)
        self.heap = heap
        self.keep = {int(n): None for n in spec.get("keep_frames", [])}  # frame number -> saved file

    def _on_dfm_state(self, host, started, starting, stopping, stopped, busy):
        if stopped:
            self.dfm_stops.append((now(), self.connections["swapper"].get_write_id()))

    # -------------------------------------------------------------- what QLiveSwap does
    def initialize(self):
        for name, host in self.hosts.items():
            host.restore_on_off_state(default_state=name not in ("CameraSource", "FaceAnimator", "FaceSwapInsight"))

    def process_messages(self):
        self.db.process_messages()
        for host in self.hosts.values():
            host.process_messages()

    def finalize(self, timeout=60.0):
        for host in self.hosts.values():
            deadline = time.monotonic() + timeout
            while (host.is_starting() or host.is_stopping()) and time.monotonic() < deadline:
                self.process_messages()
                time.sleep(0.005)
            host.save_on_off_state()
            host.stop()
        deadline = time.monotonic() + timeout
        while not all(h.is_stopped() for h in self.hosts.values()) and time.monotonic() < deadline:
            self.process_messages()
            time.sleep(0.005)
        for host in self.hosts.values():
            if not host.is_stopped():
                host.stop(force=True)
        self.db.finish_pending_jobs()

    # -------------------------------------------------------------- what a user clicks
    def drive(self):
        """Set the controls a user would set, once each worker offers them (no-op when the saved state has them)."""
        fs = self.hosts["FileSource"].get_control_sheet()
        if fs.input_type.is_enabled() and fs.input_type.get_selected_idx() != 1:  # InputType.VIDEO_FILE
            fs.input_type.select(1)
        video = _path(self.spec["video"])
        if fs.input_paths.is_enabled() and fs.input_paths.get_paths() != [video]:
            fs.input_paths.set_paths(video)
        if fs.is_realtime.is_enabled() and fs.is_realtime.get_flag() is not False:
            fs.is_realtime.set_flag(False)
        if fs.is_autorewind.is_enabled() and fs.is_autorewind.get_flag() is not True:
            fs.is_autorewind.set_flag(True)
        process = self.hosts["FileSource"]._process
        if fs.play.is_enabled() and process is not None and self.played_pid != process.pid:
            fs.play.signal()
            self.played_pid = process.pid
        for name in ("FaceDetector", "FaceMarker", "FaceSwapDFM"):
            _select(self.hosts[name].get_control_sheet().device, lambda d: hasattr(d, "is_cpu") and d.is_cpu())
        _select(self.hosts["FaceMerger"].get_control_sheet().device, lambda d: d == "CPU")
        self.select_model(self.model_name)

    def select_model(self, name):
        self.model_name = name
        _select(self.hosts["FaceSwapDFM"].get_control_sheet().model, lambda m: str(m) == name)

    # -------------------------------------------------------------- what we watch
    def observe(self):
        t = now()
        for name, host in self.hosts.items():
            process = host._process
            if process is not None and process is not self._procs.get(name):
                self._procs[name] = process
                entry = {"spawn_s": t, "pid": None}
                out = self.outputs.get(name)
                inp = self.inputs.get(name)
                entry["_out0"] = self.connections[out].get_write_id() if out else None
                entry["_in0"] = self.connections[inp]._rd.get_read_id() if inp else None
                self.timeline.setdefault(name, []).append(entry)
            if process is None or name not in self.timeline:
                continue
            entry = self.timeline[name][-1]
            if entry["pid"] is None and process.pid is not None:
                entry["pid"] = process.pid
            if "started_s" not in entry and host.is_started():
                entry["started_s"] = t
            if "first_in_s" not in entry and entry["_in0"] is not None \
                    and self.connections[self.inputs[name]]._rd.get_read_id() > entry["_in0"]:
                entry["first_in_s"] = t
            if "first_out_s" not in entry and entry["_out0"] is not None \
                    and self.connections[self.outputs[name]].get_write_id() > entry["_out0"]:
                entry["first_out_s"] = t
        for ring_id, bcd in self._new_items("swapper"):
            if _is_swapped(bcd):
                self.swapped.append((t, bcd.get_uid(), ring_id))
        for _, bcd in self._new_items("merger"):
            swapped = _is_swapped(bcd)
            self.delivered.append((t, bcd.get_uid(), swapped))
            if swapped and self.keep.get(bcd.get_frame_num(), "") is None:
                self._keep_frame(bcd)

    def _keep_frame(self, bcd):
        """Save the merged picture of a kept frame number (its first swapped pass) to compare variants."""
        import numpy as np

        bcd.assign_weak_heap(self.heap)
        image = bcd.get_image(bcd.get_merged_image_name())
        if image is None:
            return
        path = "%s_frame%d.npy" % (self.spec["out"][:-len(".json")], bcd.get_frame_num())
        np.save(path, np.array(image))
        self.keep[bcd.get_frame_num()] = path

    def _new_items(self, name):
        connection = self.connections[name]
        last, newest = self._seen[name], connection.get_write_id()
        self._seen[name] = newest
        for i in range(max(last + 1, newest - 64), newest + 1):
            bcd = connection.get_by_id(i)
            if bcd is not None:
                yield i, bcd

    def module_pids(self):
        return {name: p.pid for name, p in self._procs.items() if p is not None and p.pid is not None
                and self.hosts[name]._process is p}


def _select(control, wanted):
    """Select the first choice ``wanted`` accepts on a host-side DynamicSingleSwitch, when it is offered."""
    if not control.is_enabled():
        return
    choices = control.get_choices()
    if not choices:
        return
    current = control.get_selected_choice()
    if current is not None and wanted(current):
        return
    for i, choice in enumerate(choices):
        if wanted(choice):
            control.select(i)
            return


def _is_swapped(bcd):
    return any(fsi.face_swap_image_name is not None for fsi in bcd.get_face_swap_info_list())


def _path(text):
    from pathlib import Path

    return Path(text)


# ------------------------------------------------------------------------------------------- a run

def run(spec):
    result = {"spec": spec, "python": sys.version.split()[0], "events": {}}
    app = HeadlessDFL(spec)
    result["events"]["app_built_s"] = now()
    deadline = time.monotonic() + spec.get("timeout_s", 240)
    with PssSampler() as pss:
        app.initialize()
        first_swap = _until(app, lambda: any(s for _, _, s in app.delivered), deadline)
        result["events"]["first_frame_out_s"] = app.delivered[0][0] if app.delivered else None
        result["events"]["first_swapped_out_s"] = first_swap
        if first_swap is not None and spec.get("fps_s", 0) > 0:
            _until(app, lambda: False, time.monotonic() + spec.get("settle_s", 2.0))
            result["fps"] = _measure_fps(app, spec["fps_s"])
        if first_swap is not None and spec.get("switch_models"):
            result["switches"] = [_switch(app, name, deadline) for name in spec["switch_models"]]
        result["pids"] = app.module_pids()
        result["kept_frames"] = {str(n): p for n, p in app.keep.items() if p}
        app.finalize()
        result["peak_pss_mb"] = pss.peak_kb / 1024.0
    result["timeline"] = {name: [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]
                          for name, entries in app.timeline.items()}
    result["total_s"] = now()
    return result


def _until(app, done, deadline):
    """Drive, observe and process messages every 5 ms (DFL's UI timer) until ``done()``; the time, or None."""
    while time.monotonic() < deadline:
        app.process_messages()
        app.drive()
        app.observe()
        if done():
            return now()
        time.sleep(0.005)
    return None


def _measure_fps(app, seconds):
    pids = app.module_pids()
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    main0 = cpu_seconds(os.getpid())
    n0, t0 = len(app.delivered), now()
    _until(app, lambda: False, time.monotonic() + seconds)
    n1, t1 = len(app.delivered), now()
    frames = n1 - n0
    after = app.module_pids()
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items() if after.get(name) == pid}
    cpu["app (main process)"] = cpu_seconds(os.getpid()) - main0
    swapped = sum(1 for _, _, s in app.delivered[n0:n1] if s)
    return {"frames": frames, "seconds": t1 - t0, "fps": frames / (t1 - t0) if t1 > t0 else None,
            "swapped_frames": swapped,
            "cpu_ms_per_frame": {k: (1000.0 * v / frames if frames else None) for k, v in cpu.items()}}


def _switch(app, name, deadline):
    """Select another DFM; seconds until the first frame swapped by it reaches StreamOutput.

    DFL restarts FaceSwapDFM's worker on a model change (in a new process, or with dfl_perf in the same
    one): frames FaceSwapDFM writes after its worker stopped are the new model's."""
    stops_before = len(app.dfm_stops)
    t_select = now()
    app.select_model(name)
    mark = {"uid": None}

    def done():
        if mark["uid"] is None and len(app.dfm_stops) > stops_before:
            ring_id = app.dfm_stops[stops_before][1]
            new = [uid for _, uid, rid in app.swapped[-64:] if rid > ring_id]
            if new:
                mark["uid"] = new[0]
        if mark["uid"] is None:
            return False
        return any(s and uid >= mark["uid"] and t >= t_select for t, uid, s in app.delivered[-64:])

    t_done = _until(app, done, deadline)
    return {"model": name, "selected_s": t_select, "first_swapped_out_s": t_done,
            "switch_s": (t_done - t_select) if t_done is not None else None}


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s SPEC.json  (written by benchmarks/bench_dfl_real.py)\n" % argv[0])
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    sys.path.insert(0, spec["dfl"])
    result = run(spec)
    with open(spec["out"], "w") as f:
        json.dump(result, f, indent=1, default=str)
    return 0 if result["events"]["first_swapped_out_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
