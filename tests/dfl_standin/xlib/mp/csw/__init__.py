"""Like DFL's xlib.mp.csw: controllable subprocess workers (start, stop, restart; a minimal control)."""

from .CSWBase import ControlClient, ControlHost, Host, Sheet, Worker, WorkerState

__all__ = ["ControlClient", "ControlHost", "Host", "Sheet", "Worker", "WorkerState"]
