"""Long videos on a Ray cluster: ``dfl-perf run --ray``.

Each video is cut into frame ranges (``plan``); Ray actors that keep their sessions loaded decode,
swap and encode one range at a time (``worker``, wrapped by ``job``); the driver joins the
encoded segments in order into one output per video and carries the audio over (``assemble``).
``command`` is the entry point. Ray is imported by ``command.import_ray`` and ``job`` only, so
importing this package (or ``plan``, ``worker``, ``assemble``) needs no Ray.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RayRunOptions", "run_on_ray", "ClusterJobError"]


def __getattr__(name: str) -> Any:
    if name in ("RayRunOptions", "run_on_ray"):
        from dfl_perf.cluster import command

        return getattr(command, name)
    if name == "ClusterJobError":
        from dfl_perf.cluster.plan import ClusterJobError

        return ClusterJobError
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
