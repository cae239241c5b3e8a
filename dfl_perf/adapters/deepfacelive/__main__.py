"""``python -m dfl_perf.adapters.deepfacelive PATH/TO/DFL/main.py run DeepFaceLive --userdata-dir DIR``."""

from __future__ import annotations

import sys

from dfl_perf.adapters.deepfacelive.launcher import dfl_main

if __name__ == "__main__":
    sys.exit(dfl_main(sys.argv[1:]))
