"""dfl_perf.memory.allocator: glibc keeps freed blocks, so a frame loop stops faulting its pages in again.

The loops run in fresh interpreters (the setting lasts for a process); page faults are the process's
own count (``getrusage``), nothing mocked.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dfl_perf.memory.allocator import glibc_version, retain_freed_memory

needs_glibc = pytest.mark.skipif(glibc_version() is None, reason="mallopt is glibc's (this C library is not glibc)")

# a frame loop's pattern: a few MB of arrays made and freed every frame; prints the page faults of frames 5..24
LOOP = """
import json, resource, sys
import numpy as np
{setup}
def frame():
    a = np.ones((480, 640, 3), np.float32)
    b = a * np.float32(2.0)
    c = np.ones((400, 400, 3), np.float32)
    return float(b[0, 0, 0] + c[0, 0, 0])
for _ in range(5):
    frame()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    frame()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _faults(setup: str) -> int:
    done = subprocess.run([sys.executable, "-c", LOOP.format(setup=setup)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout.strip().splitlines()[-1]))


@needs_glibc
def test_a_frame_loop_stops_faulting_its_memory_in():
    default = _faults("")
    retained = _faults("from dfl_perf.memory.allocator import retain_freed_memory\nassert retain_freed_memory()")
    # default glibc gives the ~9 MB of each frame back and faults it in again: ~2,000 faults a frame
    assert default > 20 * 500, default
    assert retained < default / 10, (retained, default)


@needs_glibc
def test_dfl_install_sets_it_unless_turned_off():
    install = "import dfl_perf.adapters.deepfacelive as dp\ndp.install(dp.DFLConfig(lazy_imports=(), malloc_reuse={on}), propagate=False)"
    on, off = _faults(install.format(on=True)), _faults(install.format(on=False))
    assert on < off / 10, (on, off)


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="thresholds must be >= 0"):
        retain_freed_memory(mmap_threshold=-1)


def test_glibc_version_reads_this_process():
    version = glibc_version()
    if sys.platform.startswith("linux") and version is not None:
        assert version.split(".")[0].isdigit()
        assert retain_freed_memory() is True
    else:
        assert retain_freed_memory() is False
