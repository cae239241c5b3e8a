"""Shared test fixtures, and the check that a test run skips nothing it should not.

Tests need nothing outside the repo: the package ships YuNet-n 320 and a face photo (``yunet_n``,
``face_photo``), and tests build other small models with ``onnx``. Only the few tests that need a
bigger real model (YuNet-s, FaceMesh, Peppa) read it from ``DFL_PERF_SHARED``/models (default
``../shared`` beside the checkout, never copied in) and skip with the reason when it is absent.

``DFL_PERF_STRICT_SKIPS=1`` (CI's fresh-clone job) fails the run when a test skips for a reason
that is not on ``ALLOWED_SKIPS`` below, or when more than
``MAX_SKIPS`` tests skip. Every run ends with the list of skipped tests and why.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

pytest_plugins = ["pytester"]  # tests/test_fresh_clone.py runs the skip check on a small suite

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# A shell starts a background job (`cmd &`, a CI runner's child) with SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler: the Ctrl-C tests would see nothing. Put Python's own back.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def shared_root() -> Path:
    return Path(os.environ.get("DFL_PERF_SHARED", str(REPO.parent / "shared")))


# Registry models resolve through the mirror: point it at the shared models (no downloads in tests).
if (shared_root() / "models").is_dir():
    os.environ.setdefault("DFL_PERF_MODEL_MIRROR", str(shared_root() / "models"))
    os.environ.setdefault("DFL_PERF_SHARED", str(shared_root()))


@pytest.fixture(scope="session", autouse=True)
def upstream_registry() -> Dict[str, object]:
    """No test downloads a model (a rule of the project): for the whole run, every registry entry's
    upstream address is a closed loopback port, so a test that would reach the network fails with a
    clear ModelFetchError instead. Yields the real entries."""
    from dfl_perf.facepipe import models

    real = dict(models.REGISTRY)
    for name, info in real.items():
        models.REGISTRY[name] = dataclasses.replace(info, url="http://127.0.0.1:9/no-downloads-in-tests/" + info.filename)
    yield real
    models.REGISTRY.update(real)


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """Folder of the bigger real models (YuNet-s, FaceMesh, Peppa); skips when absent."""
    path = shared_root() / "models"
    if not (path / "facemesh_468.onnx").is_file():
        pytest.skip("shared models not found at %s (set DFL_PERF_SHARED to the folder holding models/)" % path)
    return path


@pytest.fixture(scope="session")
def yunet_n() -> Path:
    """The YuNet-n 320 face detector shipped in the package (never skips)."""
    from dfl_perf.facepipe.models import model_path

    return model_path("yunet_n_320_320")


@pytest.fixture
def real_model(request, yunet_n):
    """name -> a real model file: YuNet-n from the package; a bigger one (yunet_s_640_640, facemesh_468,
    peppa_slim_160_68pt) from ../shared, the test skipping when that is absent."""
    def get(name: str) -> Path:
        name = name[:-len(".onnx")] if name.endswith(".onnx") else name
        if name == "yunet_n_320_320":
            return yunet_n
        return request.getfixturevalue("shared_models") / (name + ".onnx")
    return get


@pytest.fixture(scope="session")
def face_photo() -> Path:
    """The face photo shipped in the package (astronaut, 512x512 JPEG; never skips)."""
    from dfl_perf.facepipe.models import face_photo_path

    return face_photo_path()


@pytest.fixture
def no_thread_leak():
    """Fails the test if it leaves a thread running (waits up to 5 s for threads to end)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not extra, "threads left running: %s" % [t.name for t in extra]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private dfl_perf cache directory for the test (DFL_PERF_CACHE_DIR)."""
    path = tmp_path / "dfl_perf_cache"
    monkeypatch.setenv("DFL_PERF_CACHE_DIR", str(path))
    return path


# --------------------------------------------------------------------------- the skip allow-list
# Each entry: (test id regex, skip reason regex, why such a skip is beyond the project's control). A
# skip matching no entry (both regexes, searched) fails a DFL_PERF_STRICT_SKIPS=1 run.
_SHARED = r"^shared models not found"
ALLOWED_SKIPS: List[Tuple[str, str, str]] = [
    # the machine
    ("", r"^running as root", "root writes into read-only folders, so no permission error can be made"),
    ("", r"needs POSIX signals", "Windows has no pthread_kill"),
    ("", r"is Linux's|\(Linux\)", "the figure is read from Linux's /proc"),
    ("", r"pynvml is installed here", "a test of the no-NVML path, on a machine that has NVML"),
    ("", r"this onnxruntime has CUDA", "the CPU build's message cannot be shown on a CUDA build"),
    ("", r"cannot write MJPG/AVI", "an OpenCV build without that codec"),
    (r"test_gpu\.py", r"^CUDA is not available",
     "the GPU tests need an NVIDIA GPU and onnxruntime-gpu; benchmarks/gpu_check.py runs them (issue 24)"),
    # the other Python's half of a check
    (r"test_remote_py38\.py", r"^this check is for DFL's Python 3\.8 client",
     "DFL's 3.8 client against a server from a newer Python: the 3.8 job runs it"),
    # the bigger real models: never in the repo (licences and size); read from ../shared when present
    (r"test_facepipe_landmarks\.py::test_(points_agree_with_detector_keypoints|facemesh_score_separates)", _SHARED,
     "FaceMesh and Peppa accuracy on a real face needs the real landmarkers"),
    (r"test_facepipe_detector\.py::test_yunet_s_matches_opencv", _SHARED, "YuNet-s 640 is not shipped"),
    (r"test_buffers\.py::test_bound_session_equals_session_run_on_real_models\[(facemesh|peppa)", _SHARED,
     "IOBinding on the real FaceMesh and Peppa graphs"),
    (r"test_facepipe_models\.py::test_registry_matches_the_shared_files", _SHARED,
     "the registry's sizes and hashes checked against the real files"),
]
# Skips allowed for now while their owner moves the tests off ../shared; they are not counted in
# MAX_SKIPS, and every run names them. Remove an entry when its tests stop skipping (a run says so).
MAX_SKIPS = 10  # issue 20: at most this many skips on a fresh clone
STRICT_ENV = "DFL_PERF_STRICT_SKIPS"

_skips: List[Tuple[str, str]] = []  # (test id, reason) of every skipped test in this run


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).replace("Skipped: ", "", 1)
    return str(longrepr)


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report) -> None:  # a whole module skipped (importorskip at its top)
    if report.skipped:
        _skips.append((report.nodeid, _skip_reason(report)))


def _matches(entries: List[Tuple[str, str, str]], test: str, reason: str) -> bool:
    return any(re.search(test_re, test) and re.search(reason_re, reason) for test_re, reason_re, _ in entries)


def _not_allowed() -> List[Tuple[str, str]]:
    return [(test, reason) for test, reason in _skips
            if not _matches(ALLOWED_SKIPS, test, reason)]


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get(STRICT_ENV) == "1" and _skips and (_not_allowed() or len(_skips) > MAX_SKIPS):
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    write = terminalreporter.write_line
    strict = os.environ.get(STRICT_ENV) == "1"
    if not _skips:
        return
    terminalreporter.section("skipped tests (%d) and why" % len(_skips))
    for test, reason in _skips:
        write("%s: %s" % (test, reason))
    bad = _not_allowed()
    if strict and bad:
        write("FAILED (%s=1): %d skip(s) not on the allow-list in tests/conftest.py:" % (STRICT_ENV, len(bad)))
        for test, reason in bad:
            write("  %s: %s" % (test, reason))
    if strict and len(_skips) > MAX_SKIPS:
        write("FAILED (%s=1): %d skipped, at most %d allowed" % (STRICT_ENV, len(_skips), MAX_SKIPS))
