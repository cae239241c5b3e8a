"""Long videos on a Ray cluster: ``dfl-perf run --ray``.

Each video is cut into frame ranges (``plan``); Ray actors that keep their sessions loaded decode,
swap and encode one range at a time (``worker``, wrapped by ``job``); the driver joins the
encoded segments in order into one output per video and carries the audio over (``assemble``).
``command`` is the entry point (``RayRunOptions``, ``run_on_ray``). Ray is imported by
``command.import_ray`` and ``job`` only, so importing this package (or ``plan``, ``worker``,
``assemble``) needs no Ray; this file imports nothing.
"""
