"""Stand-in for DFL's ``xlib.mp.csw.CSWBase``: a host that spawns one worker process, and DFL's worker loop.

Written from DFL's documented behaviour, not its code:

- ``Host.start()`` opens a pipe and starts ``Worker._start_proc(worker_cls, sheet_cls, pipe, state,
  start_args, start_kwargs)`` in a new (spawned) process, from a helper thread;
- the worker builds itself, runs ``on_start(*start_args)``, sends ``_start``, then ticks
  (``on_tick``) until it is told to stop or calls ``restart()``, runs ``on_stop()`` and sends
  ``_stop`` (with ``restart=True`` after ``restart()``), then lingers 1 s before exiting, as DFL's does;
- ``Host.process_messages()`` handles those messages: on ``_stop`` it ends the process and, for a
  restart, spawns a new one (a new interpreter, full imports, new sessions): what every model or
  device change in DFL costs.
"""

import multiprocessing
import threading
import time
import traceback


class Worker:
    def __init__(self, sheet=None):
        self._sheet = sheet
        self._pipe = None
        self._state = None
        self._run = True
        self._req_restart = False
        self._started = False

    def on_start(self, *args, **kwargs):
        """overridable"""

    def on_tick(self):
        """overridable"""

    def on_stop(self):
        """overridable"""

    def send_msg(self, name, *args, **kwargs):
        self._pipe.send((name, args, kwargs))

    def restart(self):
        self._req_restart = True
        self._run = False

    def get_state(self):
        return self._state

    def is_started(self):
        return self._started

    def _process_messages(self):
        while self._pipe.poll():
            name, args, kwargs = self._pipe.recv()
            if name == "_stop":
                self._run = False

    @staticmethod
    def _start_proc(cls_, sheet_cls, pipe, state, worker_start_args, worker_start_kwargs):
        self = cls_(sheet=sheet_cls() if sheet_cls is not None else None)
        self._pipe = pipe
        self._state = state
        error = None
        try:
            self.on_start(*worker_start_args, **worker_start_kwargs)
            self._started = True
            self.send_msg("_start")
            while self._run:
                self._process_messages()
                self.on_tick()
            self.on_stop()
        except Exception as exc:
            error = "%s %s" % (exc, traceback.format_exc())
        self.send_msg("_stop", error=error, restart=self._req_restart)
        time.sleep(1.0)


class Host:
    STOPPED, STARTING, STARTED, STOPPING = range(4)

    def __init__(self, worker_cls, sheet_cls=None, state=None, worker_start_args=None, worker_start_kwargs=None):
        self._worker_cls = worker_cls
        self._sheet_cls = sheet_cls
        self._state = state
        self._args = list(worker_start_args or [])
        self._kwargs = dict(worker_start_kwargs or {})
        self._status = Host.STOPPED
        self._pipe = None
        self._process = None
        self.errors = []
        self.processes = []

    def start(self):
        if self._status != Host.STOPPED:
            return False
        self._pipe, worker_pipe = multiprocessing.Pipe()
        self._status = Host.STARTING
        ctx = multiprocessing.get_context("spawn")
        self._process = ctx.Process(target=Worker._start_proc, daemon=True,
                                    args=[self._worker_cls, self._sheet_cls, worker_pipe, self._state, self._args,
                                          self._kwargs])
        self.processes.append(self._process)
        threading.Thread(target=self._process.start, daemon=True).start()
        time.sleep(0.016)
        return True

    def stop(self, force=False):
        if self._status == Host.STOPPED:
            return False
        if not force and self._status == Host.STARTED:
            self._pipe.send(("_stop", (), {}))
            self._status = Host.STOPPING
            return True
        if self._process is not None and self._process.pid is not None:
            self._process.terminate()
            self._process.join()
        self._process = None
        self._pipe = None
        self._status = Host.STOPPED
        return True

    def is_started(self):
        return self._status == Host.STARTED

    def is_stopped(self):
        return self._status == Host.STOPPED

    def process_messages(self):
        pipe = self._pipe
        while pipe is not None and pipe.poll():
            try:
                name, args, kwargs = pipe.recv()
            except EOFError:
                break
            if name == "_start":
                self._status = Host.STARTED
            elif name == "_stop":
                if kwargs.get("error"):
                    self.errors.append(kwargs["error"])
                self.stop(force=True)
                if kwargs.get("restart"):
                    self.start()
                return
