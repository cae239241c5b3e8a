"""Stand-in for DFL's ``xlib.mp.csw.CSWBase``: controllable subprocess workers (start, stop, restart).

Written from DFL's documented behaviour and interface, not its code:

- ``PMPI``: named messages ``(name, args, kwargs)`` over a ``multiprocessing.Pipe``, handlers by name;
- ``ControlHost`` / ``ControlClient`` (the worker's and the app's halves of one control) and a
  ``Sheet`` listing its controls; a new worker's controls tell the app's halves to reset;
- ``Host.start()`` opens a pipe and starts ``Worker._start_proc(worker_cls, sheet_cls, pipe, state,
  start_args, start_kwargs)`` in a new process (multiprocessing's default start method, which
  ``xlib.mp`` sets to spawn, as DFL's does), from a helper thread; ``process_messages``
  handles ``_start``, ``_state`` (the worker's saved state) and ``_stop``: it ends the process and,
  for a restart, spawns a new one with the saved state (a new interpreter, full imports, new
  sessions: what every model or device change in DFL costs);
- the worker builds itself, runs ``on_start(*start_args)``, sends ``_start``, then each loop sends its
  state when asked (``save_state``), processes messages and ticks, until stopped or ``restart()``;
  then ``on_stop()``, ``_stop(error, restart)``, and it lingers 1 s before exiting, as DFL's does.
"""

import multiprocessing
import threading
import time
import traceback


class PMPI:
    def __init__(self, pipe=None):
        self.pipe = pipe
        self.funcs = {}

    def set_pipe(self, pipe):
        self.pipe = pipe

    def call_on_msg(self, name, func):
        self.funcs.setdefault(name, []).append(func)

    def send_msg(self, name, *args, **kwargs):
        if self.pipe is not None:
            self.pipe.send((name, args, kwargs))

    def process_messages(self, timeout=0):
        try:
            while self.pipe is not None and self.pipe.poll(timeout):
                timeout = 0
                name, args, kwargs = self.pipe.recv()
                for func in self.funcs.get(name, []):
                    func(*args, **kwargs)
        except (BrokenPipeError, EOFError):
            self.pipe = None


class Control:
    def __init__(self):
        self._name = None
        self._pmpi = None
        self._pending = []
        self.resets = 0

    def _set_pmpi(self, pmpi):
        self._pmpi = pmpi
        for name, args in self._pending:
            pmpi.send_msg("__%s_%s__" % (self._name, name), *args)
        self._pending = []

    def _send_msg(self, name, *args):
        if self._pmpi is None:
            self._pending.append((name, args))
        else:
            self._pmpi.send_msg("__%s_%s__" % (self._name, name), *args)


class ControlHost(Control):
    """The worker's half: a new one tells the app's half to reset."""

    def __init__(self):
        super().__init__()
        self._send_msg("_reset")


class ControlClient(Control):
    """The app's half."""

    def _set_pmpi(self, pmpi):
        pmpi.call_on_msg("__%s__reset__" % self._name, self._reset)
        super()._set_pmpi(pmpi)

    def _reset(self):
        self.resets += 1


class Sheet:
    def __init__(self, controls=()):
        self._controls = []
        for name in controls:
            setattr(self, name, None)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if isinstance(value, Control):
            value._name = name
            self._controls.append(value)


class WorkerState:
    pass


class _Base:
    def __init__(self, sheet):
        self._pmpi = PMPI()
        self._sheet = sheet
        for control in sheet._controls:
            control._set_pmpi(self._pmpi)

    def get_control_sheet(self):
        return self._sheet

    def _get_pmpi(self):
        return self._pmpi


class Host(_Base):
    class _ProcessStatus:
        STOPPING, STOPPED, STARTING, STARTED = range(4)

    def __init__(self, sheet_cls=None, worker_cls=None, worker_state_cls=None, worker_start_args=None,
                 worker_start_kwargs=None):
        super().__init__(sheet_cls.Host() if sheet_cls is not None else Sheet())
        self._worker_cls = worker_cls
        self._worker_sheet_cls = sheet_cls.Worker if sheet_cls is not None else Sheet
        self._worker_state_cls = worker_state_cls or WorkerState
        self._worker_start_args = list(worker_start_args or [])
        self._worker_start_kwargs = dict(worker_start_kwargs or {})
        self._state = self._worker_state_cls()
        self._process_status = Host._ProcessStatus.STOPPED
        self._is_busy = False
        self._process = None
        self._reset_restart = False
        self.errors = []
        self.processes = []
        self.status_log = []
        self._pmpi.call_on_msg("_start", self._on_worker_start)
        self._pmpi.call_on_msg("_stop", self._on_worker_stop)
        self._pmpi.call_on_msg("_state", self._on_worker_state)

    def call_on_msg(self, name, func):
        self._pmpi.call_on_msg(name, func)

    def send_msg(self, name, *args, **kwargs):
        self._pmpi.send_msg(name, *args, **kwargs)

    def _on_state_change_evl_call(self):
        self.status_log.append(self._process_status)

    def start(self):
        if self._process_status != Host._ProcessStatus.STOPPED:
            return False
        pipe, worker_pipe = multiprocessing.Pipe()
        self._pmpi.set_pipe(pipe)
        self._process_status = Host._ProcessStatus.STARTING
        self._on_state_change_evl_call()
        # the default start method, as DFL's (its xlib.mp forces spawn; dfl_perf may pick forkserver)
        self._process = multiprocessing.Process(target=Worker._start_proc, daemon=True,
                                    args=[self._worker_cls, self._worker_sheet_cls, worker_pipe, self._state,
                                          self._worker_start_args, self._worker_start_kwargs])
        self.processes.append(self._process)
        threading.Thread(target=self._process.start, daemon=True).start()
        time.sleep(0.016)
        return True

    def stop(self, force=False):
        if self._process_status == Host._ProcessStatus.STOPPED:
            return False
        if not force and self._process_status == Host._ProcessStatus.STARTED:
            self.send_msg("_stop")
            self._process_status = Host._ProcessStatus.STOPPING
            self._on_state_change_evl_call()
            return True
        if force:
            if self._process is not None and self._process.pid is not None:
                self._process.terminate()
                self._process.join()
            self._process = None
            self._pmpi.set_pipe(None)
            for control in self._sheet._controls:
                if isinstance(control, ControlClient):
                    control._reset()
            self._process_status = Host._ProcessStatus.STOPPED
            self._is_busy = False
            self._on_state_change_evl_call()
            return True
        return False

    def reset_state(self):
        if self.is_stopped():
            self._state = self._worker_state_cls()
        else:
            self._reset_restart = True
            self.stop()

    def is_started(self):
        return self._process_status == Host._ProcessStatus.STARTED

    def is_starting(self):
        return self._process_status == Host._ProcessStatus.STARTING

    def is_stopped(self):
        return self._process_status == Host._ProcessStatus.STOPPED

    def _on_worker_start(self):
        self._process_status = Host._ProcessStatus.STARTED
        self._on_state_change_evl_call()

    def _on_worker_state(self, state):
        self._state = state

    def _on_worker_stop(self, error=None, restart=False):
        if error is not None:
            self.errors.append(error)
            self._state = self._worker_state_cls()
        self.stop(force=True)
        if self._reset_restart:
            self._reset_restart = False
            self._state = self._worker_state_cls()
            restart = True
        if restart:
            self.start()

    def process_messages(self):
        self._pmpi.process_messages()
        if self._process_status == Host._ProcessStatus.STARTED and not self._process.is_alive():
            self.stop(force=True)


class Worker(_Base):
    def __init__(self, sheet):
        super().__init__(sheet)
        self._started = False
        self._run = True
        self._req_restart = False
        self._req_save_state = False
        self._state = None
        self._pmpi.call_on_msg("_stop", lambda: setattr(self, "_run", False))

    def on_start(self, *args, **kwargs):
        """overridable"""

    def on_tick(self):
        """overridable"""

    def on_stop(self):
        """overridable"""

    def send_msg(self, name, *args, **kwargs):
        self._pmpi.send_msg(name, *args, **kwargs)

    def call_on_msg(self, name, func):
        self._pmpi.call_on_msg(name, func)

    def restart(self):
        self._req_restart = True
        self._run = False

    def get_state(self):
        return self._state

    def save_state(self):
        self._req_save_state = True

    def is_started(self):
        return self._started

    @staticmethod
    def _start_proc(cls_, sheet_cls, pipe, state, worker_start_args, worker_start_kwargs):
        self = cls_(sheet=sheet_cls())
        self._get_pmpi().set_pipe(pipe)
        self._state = state
        error = None
        try:
            self.on_start(*worker_start_args, **worker_start_kwargs)
            self._started = True
            self.send_msg("_start")
            while True:
                if self._req_save_state:
                    self._req_save_state = False
                    self.send_msg("_state", self._state)
                if not self._run:
                    break
                self._pmpi.process_messages()
                self.on_tick()
            self.on_stop()
        except Exception as exc:
            error = "%s %s" % (exc, traceback.format_exc())
        self.send_msg("_stop", error=error, restart=self._req_restart)
        time.sleep(1.0)
