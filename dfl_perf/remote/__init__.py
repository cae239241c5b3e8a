"""The remote swap client: the DFM step on a ``dfl-perf serve`` server, for the live pipeline and DFL.

``RemoteSwapper(url, token=None, timeout=2.0, codec='raw'|'jpeg')`` has the local swapper's call
shape (aligned faces in; celeb face, celeb mask, face mask out). Standard library HTTP and numpy,
Python 3.8: it runs inside DeepFaceLive's process. It never imports Ray (the server does).
"""

from __future__ import annotations

from dfl_perf.remote.client import TOKEN_ENV, RemoteSwapError, RemoteSwapper, SwapResult, as_float
from dfl_perf.remote.wire import SwapReply, WireError

__all__ = ["RemoteSwapper", "RemoteSwapError", "SwapResult", "SwapReply", "WireError", "TOKEN_ENV", "as_float"]
