"""Like DFL's xlib.mp.csw: controllable subprocess workers (only the start / stop / restart part)."""

from .CSWBase import Host, Worker

__all__ = ["Host", "Worker"]
