"""Adapters that bring dfl_perf into existing apps without rewriting them.

- ``dfl_perf.adapters.deepfacelive``: DeepFaceLive (patched session factory, zero-edit launcher,
  faster DFM path, honest per-module meter).

Importing this package imports nothing heavy.
"""

from __future__ import annotations

__all__: list = []
