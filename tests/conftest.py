"""Shared test fixtures.

Real models and media live outside the repo (never copied in). They are found through
``DFL_PERF_SHARED`` (a folder holding ``models/`` and ``media/``), defaulting to ``../shared``
beside the checkout; tests that need them skip with the reason when absent.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def shared_root() -> Path:
    return Path(os.environ.get("DFL_PERF_SHARED", str(REPO.parent / "shared")))


# Registry models resolve through the mirror: point it at the shared models (no downloads in tests).
if (shared_root() / "models").is_dir():
    os.environ.setdefault("DFL_PERF_MODEL_MIRROR", str(shared_root() / "models"))
    os.environ.setdefault("DFL_PERF_SHARED", str(shared_root()))


@pytest.fixture(scope="session")
def shared_models() -> Path:
    """Folder of the real models (YuNet, FaceMesh, Peppa); skips when absent."""
    path = shared_root() / "models"
    if not (path / "yunet_n_320_320.onnx").is_file():
        pytest.skip("shared models not found at %s (set DFL_PERF_SHARED to the folder holding models/)" % path)
    return path


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """Folder of the real media (astronaut.png); skips when absent."""
    path = shared_root() / "media"
    if not (path / "astronaut.png").is_file():
        pytest.skip("shared media not found at %s (set DFL_PERF_SHARED to the folder holding media/)" % path)
    return path


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
