"""``dfl-perf serve``: a DFM on Ray Serve for remote swaps (``dfl_perf.remote`` is the client).

Importing this package imports nothing heavy; ``app`` (the Serve deployment) is the one module that
imports Ray, and only ``command`` (the ``dfl-perf serve`` command), tests and benchmarks import it.
``settings``/``auth``/``service``/``model`` are Ray-free: the rules, the HTTP behaviour, the model.
"""
