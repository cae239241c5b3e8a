"""The DFL adapter's memory budget (DFLConfig.memory_budget, ``dfl-perf dfl --memory-budget``): each
process's MemoryManager keeps the fast DFM path's buffers within it and watches the process's memory.

Runs DFL's DFMModel from the stand-in in tests/dfl_standin (DFL's module path and signatures)."""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("cv2")

import dfl_perf.adapters.deepfacelive as dp  # noqa: E402
from dfl_perf.adapters.deepfacelive import _install  # noqa: E402
from dfl_perf.adapters.deepfacelive.config import DFLConfig  # noqa: E402
from dfl_perf.adapters.deepfacelive.launcher import _parser, config_from_args  # noqa: E402

STANDIN = Path(__file__).resolve().parent / "dfl_standin"


@pytest.fixture
def dfm_model(monkeypatch, tmp_path):
    """DFL's DFMModel class from the stand-in, and a small DFM file; everything undone afterwards."""
    from dfl_perf.facepipe.standin import save_dfm_standin

    monkeypatch.setenv("ORT_DEVICES_INITIALIZED", "1")
    monkeypatch.setenv("ORT_DEVICES_COUNT", "0")
    monkeypatch.syspath_prepend(str(STANDIN))
    path = save_dfm_standin(str(tmp_path / "face.dfm"), resolution=64, cost="5ms", seed=1)
    yield path
    dp.uninstall()
    for name in [n for n in sys.modules if n.split(".")[0] in ("xlib", "modelhub", "apps")]:
        del sys.modules[name]


def test_the_budget_is_a_setting_checked_at_once_and_passed_to_workers():
    config = DFLConfig(memory_budget="2G")
    assert DFLConfig.from_json(config.to_json()).memory_budget == "2G"
    with pytest.raises(ValueError, match="memory budget 'lots'"):
        DFLConfig(memory_budget="lots")
    args = _parser().parse_args(["--memory-budget", "1500M", "main.py", "run", "DeepFaceLive"])
    assert config_from_args(args).memory_budget == "1500M"
    assert config_from_args(_parser().parse_args(["main.py"])).memory_budget is None


def test_each_fast_dfm_pool_is_under_the_process_budget_and_leaves_with_its_model(dfm_model, no_thread_leak):
    dp.install(DFLConfig(lazy_imports=(), optimized_model_cache=False, memory_budget="1M"), propagate=False)
    memory = _install._state.memory
    assert memory is not None and memory.budget("host") == 10 ** 6
    from modelhub.DFLive.DFMModel import DFMModel

    model = DFMModel(dfm_model)
    faces = [np.random.RandomState(i).randint(0, 256, (300, 300, 3)).astype(np.uint8) for i in range(6)]
    for face in faces:  # 300x300 in, resized to 64 and back: about 2 MB of pooled buffers per call
        celeb, celeb_mask, face_mask = model.convert(face)
        assert celeb.shape == (1, 300, 300, 3) and celeb.dtype == np.uint8
    # The buffers one call needs are over the budget while in use (said once); once idle, the
    # sampler's next tick (every 2 s) frees them.
    deadline = time.monotonic() + 30
    while memory.bytes_held("host") > 10 ** 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    [entry] = memory.summary()["entries"]
    assert entry["role"] == "pool" and entry["bytes_held"] <= 10 ** 6
    assert memory.summary()["freed"]["budget"] > 0
    assert memory.summary()["thresholds"]["rss_limit"] == 10 ** 6  # the process's memory is watched too
    del model, celeb, celeb_mask, face_mask
    gc.collect()
    assert memory.summary()["entries"] == []  # a dropped model's pool is no longer under the budget
    dp.uninstall()  # stops the sampling thread (no_thread_leak)


def test_without_a_budget_nothing_is_started(dfm_model, no_thread_leak):
    dp.install(DFLConfig(lazy_imports=(), optimized_model_cache=False), propagate=False)
    assert _install._state.memory is None
    from modelhub.DFLive.DFMModel import DFMModel

    assert DFMModel(dfm_model).convert(np.zeros((64, 64, 3), np.uint8))[0].shape == (1, 64, 64, 3)
