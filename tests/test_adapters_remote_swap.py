"""dfl_perf.adapters.deepfacelive.remote_swap: DFL's model list and DFMModel API over the remote swap.

Against the real SwapService on a loopback server (no Ray; both Pythons). The whole path, DFL's
spawned workers against a real Ray Serve, is in test_remote_py38.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from dfl_perf.adapters.deepfacelive._hooks import Patcher  # noqa: E402
from dfl_perf.adapters.deepfacelive.config import DFLConfig  # noqa: E402
from dfl_perf.adapters.deepfacelive.remote_swap import (  # noqa: E402
    REMOTE_SUFFIX,
    RemoteDFMModel,
    RemoteModelInitializer,
    patch_model_list,
)
from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.serve.model import SwapModel  # noqa: E402
from tests.serve_harness import LoopbackServer, local_swap  # noqa: E402

RES = 64


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("m") / "celeb.dfm", resolution=RES, cost="5ms", seed=9)


@pytest.fixture(scope="module")
def model(model_path):
    swap_model = SwapModel(model_path, "cpu", threads=1)
    yield swap_model
    swap_model.close()


@pytest.fixture
def server(model, monkeypatch):
    monkeypatch.setenv("DFL_PERF_SERVE_TOKEN", "tok")
    with LoopbackServer(model, token="tok") as running:
        yield running


class _Info:
    """DFL's DFMModelInfo, as its interface reads (name, model path)."""

    def __init__(self, name, model_path, url=None):
        self.name, self.path = name, Path(model_path)

    def get_name(self):
        return self.name

    def get_model_path(self):
        return self.path


class _DFLive:
    """What ``modelhub.DFLive`` offers FaceSwapDFM: a model list and DFMModel_from_info."""

    __name__ = "modelhub.DFLive"
    DFMModelInfo = _Info

    @staticmethod
    def get_available_models_info(models_path):
        return [_Info("local", Path(models_path) / "local.dfm")]

    @staticmethod
    def DFMModel_from_info(info, device=None):  # noqa: N802 - DFL's name
        return ("local initializer", info.get_name())


def _events(initializer, ticks=3):
    return [initializer.process_events() for _ in range(ticks)]


def test_the_model_list_shows_the_servers_model_first_and_loads_it_remotely(server, tmp_path):
    module, patcher = _DFLive(), Patcher()
    patch_model_list(module, patcher, server.url)
    models = module.get_available_models_info(tmp_path)
    assert [m.get_name() for m in models] == ["celeb @ 127.0.0.1:%d" % server.port, "local"]
    assert str(models[0].get_model_path()).endswith(REMOTE_SUFFIX)
    assert module.DFMModel_from_info(models[1]) == ("local initializer", "local")  # local models stay local
    first, second, idle = _events(module.DFMModel_from_info(models[0], device=None))
    assert first.new_status_initializing and not first.new_status_initialized
    assert second.prev_status_initializing and second.new_status_initialized and second.error is None
    assert not (idle.new_status_initialized or idle.new_status_error)
    remote = second.dfm_model
    assert isinstance(remote, RemoteDFMModel)
    assert remote.get_input_res() == (RES, RES) and not remote.has_morph_value()
    assert remote.get_model_path() == models[0].get_model_path()
    remote.close()
    patcher.restore()
    assert module.get_available_models_info(tmp_path)[0].get_name() == "local"


def test_convert_returns_what_dfls_convert_returns(server, model_path):
    remote = RemoteDFMModel("x" + REMOTE_SUFFIX, server.url)
    try:
        face = np.random.RandomState(1).randint(0, 256, (96, 80, 3), dtype=np.uint8)  # not the model's size
        celeb, celeb_mask, face_mask = remote.convert(face)
        assert celeb.shape == (1, 96, 80, 3) and celeb_mask.shape == face_mask.shape == (1, 96, 80, 1)
        assert celeb.dtype == np.uint8
        resized = cv2.resize(face, (RES, RES), interpolation=cv2.INTER_LINEAR)
        local_celeb = local_swap(model_path, resized[None])[0][0]
        expected = np.clip(cv2.resize(local_celeb, (80, 96), interpolation=cv2.INTER_LINEAR) * 255, 0, 255)
        assert np.abs(celeb[0].astype(float) - expected.astype(np.uint8)).max() <= 2
        floats = remote.convert(face.astype(np.float32) / 255)
        assert floats[0].dtype == np.float32 and floats[0].shape == (1, 96, 80, 3)
        assert len(remote.convert_batch([face, face[:64, :64]])) == 2
    finally:
        remote.close()


def test_a_failed_swap_keeps_the_camera_face_and_the_stream_goes_on(server, caplog):
    remote = RemoteDFMModel("x" + REMOTE_SUFFIX, server.url)
    face = np.random.RandomState(2).randint(0, 256, (RES, RES, 3), dtype=np.uint8)
    try:
        server.stop()
        with caplog.at_level(logging.WARNING, logger="dfl_perf.adapters.deepfacelive"):
            celeb, celeb_mask, face_mask = remote.convert(face)
        assert np.array_equal(celeb[0], face) and not celeb_mask.any() and not face_mask.any()
        assert "remote swap failed for 1 frame(s), shown unswapped" in caplog.text
        server.start()
        import time

        time.sleep(0.6)  # past the client's fail-fast window
        celeb, celeb_mask, _ = remote.convert(face)
        assert celeb_mask.any() and not np.array_equal(celeb[0], face)  # swapped again
    finally:
        remote.close()


def test_an_unreachable_server_is_an_error_dfl_shows(tmp_path):
    module, patcher = _DFLive(), Patcher()
    patch_model_list(module, patcher, "http://127.0.0.1:9")
    entry = module.get_available_models_info(tmp_path)[0]
    assert entry.get_name() == "remote model @ 127.0.0.1:9 (unreachable)"
    events = _events(RemoteModelInitializer(entry, "http://127.0.0.1:9", "raw"))
    assert events[1].new_status_error and "remote swap server http://127.0.0.1:9: cannot connect" in events[1].error
    patcher.restore()


def test_config_carries_the_url_not_the_token():
    config = DFLConfig(remote_swap="http://gpu-box:8000", remote_codec="jpeg")
    assert DFLConfig.from_json(config.to_json()) == config
    assert "token" not in config.to_json().lower()
    with pytest.raises(ValueError, match="remote_codec"):
        DFLConfig(remote_codec="png")
