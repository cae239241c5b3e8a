"""A DFL module restart without a new process: what a model or device change costs, cut to the model load.

DFL restarts a worker on every model, device or detector change: the worker leaves its loop and sends
``_stop(restart=True)``; the host (in the app process) ends that process and spawns a new one, which
starts a fresh interpreter, imports DFL's whole backend again and builds its sessions again. With
``DFLConfig.restart_in_process`` the adapter keeps the process:

- worker side, ``Worker._start_proc`` is replaced by a loop that does what DFL's does (build the
  worker, ``on_start``, ``_start``, tick until stopped, ``on_stop``, ``_stop``) and, after a restart
  request, waits for the host's go-ahead carrying the worker state, then builds a fresh worker object
  in the same process (``gc.collect()`` first, so the old model is freed before the new one loads, as
  when the process ended). Each cycle first tells the host it can do this;
- host side, ``Host._on_worker_stop`` answers such a restart by going through the same states the UI
  sees (stopped, then starting; the host's controls reset, as when the process ended) and sending the
  state, instead of ending the process and spawning another. Anything else (a user's stop, an error,
  a worker that did not announce itself) takes DFL's own path.

Imports, the onnxruntime environment and disk-cached models stay warm, so a switch costs the new model's
session and its first frames. The worker object, its controls and its state are new each cycle, as before.
"""

from __future__ import annotations

import gc
import time
import traceback
from typing import Any

__all__ = ["patch_csw_module", "ANNOUNCE", "GO_AHEAD"]

ANNOUNCE = "_dfl_perf_restart_in_process"  # worker -> host, each cycle: "I can restart in this process"
GO_AHEAD = "_dfl_perf_restart"               # host -> worker: the state to restart with
_WAIT_S = 30.0


def _run_cycle(cls_: Any, sheet_cls: Any, pipe: Any, state: Any, args: Any, kwargs: Any) -> bool:
    """One worker life, as DFL's ``_start_proc`` runs it; True when it ended asking for a restart."""
    worker = cls_(sheet=sheet_cls())
    worker._get_pmpi().set_pipe(pipe)
    worker._state = state
    worker.send_msg(ANNOUNCE)
    error = None
    try:
        worker.on_start(*args, **kwargs)
        worker._started = True
        worker.send_msg("_start")
        while True:
            if worker._req_save_state:
                worker._req_save_state = False
                worker.send_msg("_state", worker._state)
            if not worker._run:
                break
            worker._pmpi.process_messages()
            worker.on_tick()
        worker.on_stop()
    except Exception as exc:
        error = "%s %s" % (exc, traceback.format_exc())
    restart = bool(worker._req_restart)
    worker.send_msg("_stop", error=error, restart=restart)
    return restart and error is None


def _wait_for_go_ahead(pipe: Any) -> Any:
    """The state the host sends for an in-process restart; None if it does not come (the host ends us)."""
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        try:
            if not pipe.poll(0.05):
                continue
            name, args, _ = pipe.recv()
        except (EOFError, OSError):
            return None
        if name == GO_AHEAD:
            return args[0] if args else None
    return None


def _restarting_start_proc(original: Any) -> Any:
    def _start_proc(cls_, sheet_cls, pipe, state, worker_start_args, worker_start_kwargs):
        from dfl_perf.adapters.deepfacelive.startup import recorder

        cycle = 0
        while True:
            if cycle:
                recorder().new_cycle()
            cycle += 1
            if not _run_cycle(cls_, sheet_cls, pipe, state, worker_start_args, worker_start_kwargs):
                break
            gc.collect()  # the old worker's models go before the new ones load (as when its process ended)
            state = _wait_for_go_ahead(pipe)
            if state is None:
                break
        time.sleep(1.0)  # as DFL's worker: let the host read the last message before the pipe closes

    _start_proc.dfl_perf_original = original  # type: ignore[attr-defined]
    _start_proc.__qualname__ = original.__qualname__  # DFL pickles it by name as the process target
    _start_proc.__module__ = original.__module__
    return _start_proc


def _in_process_restart(host: Any, control_client_cls: Any) -> None:
    """The host side: the states and resets the UI sees when DFL respawns a worker, then the go-ahead."""
    status = type(host)._ProcessStatus
    for control in host.get_control_sheet()._controls:
        if isinstance(control, control_client_cls):
            control._reset()
    host._process_status = status.STOPPED
    host._is_busy = False
    host._on_state_change_evl_call()
    host._process_status = status.STARTING
    host._on_state_change_evl_call()
    host.send_msg(GO_AHEAD, host._state)


def patch_csw_module(module: Any, patcher: Any) -> None:
    """Patch ``xlib.mp.csw.CSWBase``'s Worker and Host (undone by ``patcher``)."""
    worker_cls, host_cls = getattr(module, "Worker", None), getattr(module, "Host", None)
    client_cls = getattr(module, "ControlClient", None)
    needed = (getattr(worker_cls, "_start_proc", None), getattr(host_cls, "_on_worker_stop", None),
              getattr(host_cls, "__init__", None), client_cls)
    if any(x is None for x in needed):
        return
    original_start = getattr(worker_cls._start_proc, "dfl_perf_original", worker_cls._start_proc)
    patcher.replace(worker_cls, "_start_proc", staticmethod(_restarting_start_proc(original_start)))
    original_init, original_stop = host_cls.__init__, host_cls._on_worker_stop

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._dfl_perf_in_process = False
        self.call_on_msg(ANNOUNCE, lambda: setattr(self, "_dfl_perf_in_process", True))

    def _on_worker_stop(self, error=None, restart=False):
        process = self._process
        if (restart or self._reset_restart) and error is None and getattr(self, "_dfl_perf_in_process", False) \
                and process is not None and process.is_alive():
            if self._reset_restart:
                self._reset_restart = False
                self._state = self._worker_state_cls()
            self._dfl_perf_in_process = False  # the next cycle announces itself again
            _in_process_restart(self, client_cls)
            return None
        return original_stop(self, error=error, restart=restart)

    patcher.replace(host_cls, "__init__", __init__)
    patcher.replace(host_cls, "_on_worker_stop", _on_worker_stop)
