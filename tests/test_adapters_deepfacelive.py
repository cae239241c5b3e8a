"""dfl_perf.adapters.deepfacelive against a stand-in DeepFaceLive tree (tests/dfl_standin).

The stand-in mirrors DFL's module paths, names and signatures; its models are real ONNX files it
builds with ``onnx`` (a YoloV5Face-shaped detector, a FaceMesh-shaped marker, and a DFM-shaped model
from dfl_perf.facepipe.standin), so nothing here needs ../shared. Nothing of onnxruntime is mocked;
a CUDA request on this CPU-only machine is a real "provider not available".
"""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dfl_perf.adapters.deepfacelive as dp
from dfl_perf.adapters.deepfacelive._hooks import ImportHook, is_module_loaded, remove_hooks
from dfl_perf.adapters.deepfacelive._install import SITE_DIR
from dfl_perf.adapters.deepfacelive.config import CONFIG_ENV, DFLConfig
from dfl_perf.adapters.deepfacelive.dfm import convert_faces
from dfl_perf.devices import cpu_budget

REPO = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).resolve().parent / "dfl_standin"
STANDIN_PREFIXES = ("xlib", "modelhub", "apps")
EXPECTED_THREADS = max(1, cpu_budget() // 3)


def _quiet(**kwargs) -> DFLConfig:
    """In-process settings: no deferred imports in the test process, no disk cache unless asked."""
    kwargs.setdefault("lazy_imports", ())
    kwargs.setdefault("optimized_model_cache", False)
    return DFLConfig(**kwargs)


def _drop_standin_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in STANDIN_PREFIXES:
            del sys.modules[name]


@pytest.fixture(scope="session")
def standin_models(tmp_path_factory) -> Path:
    """The stand-in DFL's detector and marker models (built once per test session)."""
    sys.path.insert(0, str(STANDIN))
    try:
        from standin_models import build_models
    finally:
        sys.path.remove(str(STANDIN))
    return build_models(tmp_path_factory.mktemp("standin_models"))


@pytest.fixture
def standin(monkeypatch, standin_models):
    """The stand-in DFL importable in this process; everything undone afterwards."""
    monkeypatch.setenv("DFL_STANDIN_MODELS", str(standin_models))
    monkeypatch.setenv("ORT_DEVICES_INITIALIZED", "1")
    monkeypatch.setenv("ORT_DEVICES_COUNT", "0")
    _drop_standin_modules()
    sys.path.insert(0, str(STANDIN))
    yield STANDIN
    dp.uninstall()
    sys.path.remove(str(STANDIN))
    _drop_standin_modules()
    startup = sys.modules.get("dfl_perf.adapters.deepfacelive.startup")
    if startup is not None:  # install(meter_dir=...) starts this process's start-up timeline there; forget it
        startup._recorder = None


@pytest.fixture(scope="module")
def dfm_files(tmp_path_factory):
    """Two small DFM-shaped models: plain and AMP (morph_value)."""
    from dfl_perf.facepipe.standin import save_dfm_standin

    folder = tmp_path_factory.mktemp("dfm")
    plain = str(folder / "plain.dfm")
    morph = str(folder / "amp.dfm")
    save_dfm_standin(plain, resolution=64, cost="5ms", seed=1)
    save_dfm_standin(morph, resolution=64, cost="5ms", morph=True, seed=2)
    return {"plain": plain, "amp": morph}


def _describe(sess):
    options = sess.get_session_options()
    try:
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
    except Exception:
        spinning = None
    return options.intra_op_num_threads, spinning


# ------------------------------------------------------------------------------------ install / uninstall

def test_install_without_dfl_is_harmless(monkeypatch, no_thread_leak):
    monkeypatch.delenv("CUDA_CACHE_MAXSIZE", raising=False)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setenv("PYTHONPATH", "/some/where")
    _drop_standin_modules()
    meta_path = list(sys.meta_path)
    config = dp.install(_quiet())
    try:
        assert dp.is_installed() and dp.installed_config() is config
        assert os.environ["CUDA_CACHE_MAXSIZE"] == "2147483647"  # the real name, not DFL's zero-width one
        assert DFLConfig.from_json(os.environ[CONFIG_ENV]) == config
        assert os.environ["PYTHONPATH"].split(os.pathsep) == [SITE_DIR, "/some/where"]
        assert "xlib" not in sys.modules  # installing imports nothing of DFL
    finally:
        assert dp.uninstall() is True
    assert not dp.is_installed() and dp.uninstall() is False
    assert sys.meta_path == meta_path
    assert "CUDA_CACHE_MAXSIZE" not in os.environ and CONFIG_ENV not in os.environ
    assert os.environ["PYTHONPATH"] == "/some/where"


def test_existing_cuda_cache_maxsize_is_kept(monkeypatch):
    monkeypatch.setenv("CUDA_CACHE_MAXSIZE", "1000")
    dp.install(_quiet(), propagate=False)
    try:
        assert os.environ["CUDA_CACHE_MAXSIZE"] == "1000"
    finally:
        dp.uninstall()


def test_patches_modules_imported_before_install_and_restores_them(standin):
    import importlib

    import xlib.onnxruntime as lib_ort
    from modelhub.onnx import FaceMesh

    facemesh_module = importlib.import_module("modelhub.onnx.FaceMesh.FaceMesh")
    session_module = importlib.import_module("xlib.onnxruntime.InferenceSession")

    original = lib_ort.InferenceSession_with_device
    assert _describe(FaceMesh(lib_ort.get_cpu_device_info())._sess) == (0, None)  # DFL's plain session

    dp.install(_quiet(), propagate=False)
    patched = lib_ort.InferenceSession_with_device
    assert patched is not original and patched.dfl_perf_original is original
    assert session_module.InferenceSession_with_device is patched
    assert facemesh_module.InferenceSession_with_device is patched  # the global bound by `from ... import`
    assert _describe(FaceMesh(lib_ort.get_cpu_device_info())._sess) == (EXPECTED_THREADS, "0")

    dp.uninstall()
    assert lib_ort.InferenceSession_with_device is original
    assert session_module.InferenceSession_with_device is original
    assert facemesh_module.InferenceSession_with_device is original
    assert _describe(FaceMesh(lib_ort.get_cpu_device_info())._sess) == (0, None)


def test_modules_imported_after_install_get_the_patched_factory(standin):
    import importlib

    dp.install(_quiet(intra_op_threads=2), propagate=False)
    import xlib.onnxruntime as lib_ort

    facemesh_module = importlib.import_module("modelhub.onnx.FaceMesh.FaceMesh")

    assert facemesh_module.InferenceSession_with_device is lib_ort.InferenceSession_with_device
    assert lib_ort.InferenceSession_with_device.__name__ == "InferenceSession_with_device"
    sess = facemesh_module.FaceMesh(lib_ort.get_cpu_device_info())._sess
    assert _describe(sess) == (2, "0")
    dp.uninstall()
    assert facemesh_module.InferenceSession_with_device is lib_ort.InferenceSession_with_device
    assert facemesh_module.InferenceSession_with_device.__module__ == "xlib.onnxruntime.InferenceSession"


def test_session_cache_is_keyed_on_provider_not_device_equality(standin, standin_models, caplog):
    dp.install(_quiet(), propagate=False)
    from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_cpu_device_info

    path = str(standin_models / "YoloV5Face.onnx")
    first = InferenceSession_with_device(path, get_cpu_device_info())
    assert InferenceSession_with_device(path, get_cpu_device_info()) is first
    cuda0 = ORTDeviceInfo(0, "CUDAExecutionProvider", "GPU", 1, 1)
    dml0 = ORTDeviceInfo(0, "DmlExecutionProvider", "GPU", 1, 1)
    assert cuda0 == dml0  # DFL's equality ignores the provider ...
    with caplog.at_level(logging.WARNING, logger="dfl_perf.adapters.deepfacelive"):
        on_cuda = InferenceSession_with_device(path, cuda0)
        on_dml = InferenceSession_with_device(path, dml0)
    assert on_cuda is not on_dml and on_cuda is not first  # ... the cache does not
    records = dp.session_records()
    assert [r.cached for r in records] == [False, True, False, False]
    assert [r.requested_provider for r in records[2:]] == ["CUDAExecutionProvider", "DmlExecutionProvider"]
    shared = InferenceSession_with_device.dfl_perf_state.sessions
    assert len(shared) == 3
    del on_dml  # a session DFL dropped is not kept alive by the cache
    gc.collect()
    assert len(shared) == 2


def test_gpu_session_settings():
    """What a CUDA/TensorRT/DirectML request is built with (no GPU needed to check the settings)."""
    from dfl_perf.adapters.deepfacelive.factory import _providers, session_config

    config = DFLConfig(tensorrt=True)
    cuda = _providers(config, "CUDAExecutionProvider", 1, ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert [name for name, _ in cuda] == ["CUDAExecutionProvider"]
    assert cuda[0][1]["cudnn_conv_algo_search"] == "HEURISTIC" and cuda[0][1]["device_id"] == "1"
    trt = _providers(config, "CUDAExecutionProvider", 0, ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert [name for name, _ in trt] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert trt[0][1]["trt_engine_cache_enable"] == "1" and trt[0][1]["trt_engine_cache_path"]
    exhaustive = _providers(DFLConfig(cudnn_conv_algo_search="EXHAUSTIVE"), "CUDAExecutionProvider", 0, [])
    assert exhaustive[0][1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    dml = session_config(config, _providers(config, "DmlExecutionProvider", 0, []), 2)
    assert dml.enable_mem_pattern is False and dml.intra_op_threads == 2 and dml.strict
    cpu = session_config(DFLConfig(allow_spinning=True), [("CPUExecutionProvider", {})], 3)
    assert cpu.intra_op_spinning is None and cpu.disk_cache and cpu.enable_mem_pattern is False
    assert session_config(config, cuda, 1).enable_mem_pattern is None  # onnxruntime's default on CUDA
    lean = session_config(DFLConfig(lean_weights=True), [("CPUExecutionProvider", {})], 1)
    assert lean.lean_weights and not lean.disk_cache


def test_missing_cuda_falls_back_to_cpu_with_a_warning(standin, dfm_files, caplog):
    from modelhub.DFLive.DFMModel import DFMModel
    from xlib.onnxruntime import ORTDeviceInfo

    gpu = ORTDeviceInfo(0, "CUDAExecutionProvider", "GeForce", 8 << 30, 8 << 30)
    with pytest.raises(Exception, match="CUDAExecutionProvider"):
        DFMModel(dfm_files["plain"], gpu)  # DFL's own factory kills the module

    dp.install(_quiet(), propagate=False)
    with caplog.at_level(logging.WARNING, logger="dfl_perf.adapters.deepfacelive"):
        model = DFMModel(dfm_files["plain"], gpu)
    assert model._sess.get_providers() == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider is not available" in caplog.text and "on CPU instead" in caplog.text
    assert "CUDAExecutionProvider" in dp.session_records()[-1].fallback_reason
    celeb, celeb_mask, face_mask = model.convert(np.zeros((64, 64, 3), np.uint8))
    assert celeb.shape == (1, 64, 64, 3) and face_mask.shape == (1, 64, 64, 1)

    dp.install(_quiet(cpu_fallback=False), propagate=False)
    with pytest.raises(Exception, match="CUDAExecutionProvider is not available.*cpu_fallback is off"):
        DFMModel(dfm_files["plain"], gpu)


def test_no_cpu_fallback_for_models_dfl_keeps_off_the_cpu(standin, standin_models, tmp_path):
    import shutil

    dp.install(_quiet(), propagate=False)
    from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo

    centerface = tmp_path / "CenterFace.onnx"  # DFL: "CenterFace ONNX model does not work correctly on CPU"
    shutil.copyfile(str(standin_models / "YoloV5Face.onnx"), str(centerface))
    with pytest.raises(Exception, match="CUDAExecutionProvider is not available.*not run on the CPU"):
        InferenceSession_with_device(str(centerface), ORTDeviceInfo(0, "CUDAExecutionProvider", "GPU", 1, 1))


def test_factory_accepts_bytes_and_model_proto(standin, dfm_files):
    import onnx

    dp.install(_quiet(), propagate=False)
    from xlib.onnxruntime import InferenceSession_with_device, get_cpu_device_info

    proto = onnx.load(dfm_files["plain"])
    from_proto = InferenceSession_with_device(proto, get_cpu_device_info())
    from_bytes = InferenceSession_with_device(proto.SerializeToString(), get_cpu_device_info())
    assert from_bytes is from_proto  # same content, same cache entry
    assert from_proto.get_inputs()[0].name == "in_face:0"


def test_factory_rejects_bad_input_with_clear_errors(standin, tmp_path):
    dp.install(_quiet(), propagate=False)
    from xlib.onnxruntime import InferenceSession_with_device, get_cpu_device_info

    missing = tmp_path / "nope.onnx"
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        InferenceSession_with_device(str(missing), get_cpu_device_info())
    with pytest.raises(TypeError, match="ORTDeviceInfo"):
        InferenceSession_with_device(str(missing), "cpu")
    with pytest.raises(TypeError, match="path, model bytes or onnx.ModelProto"):
        InferenceSession_with_device(42, get_cpu_device_info())


def test_optimized_model_disk_cache_is_reused_across_processes(standin, standin_models, cache_dir):
    from xlib.onnxruntime import get_cpu_device_info

    from dfl_perf.adapters.deepfacelive.factory import make_session_factory

    config = DFLConfig(lazy_imports=())  # optimized-model cache on (the default)
    path = str(standin_models / "YoloV5Face.onnx")
    first = make_session_factory(config)
    first(path, get_cpu_device_info())
    assert first.dfl_perf_state.records[-1].disk_cache == "stored"
    assert list((cache_dir / "optimized").glob("*.onnx"))

    second = make_session_factory(config)  # a new DFL worker process (DFL restarts workers on every change)
    sess = second(path, get_cpu_device_info())
    assert second.dfl_perf_state.records[-1].disk_cache == "hit"
    assert len(sess.run(None, {"input": np.zeros((1, 3, 480, 480), np.float32)})) == 3
    assert _describe(sess) == (EXPECTED_THREADS, "0")


def test_lean_weights_load_dfms_from_their_lean_copy(standin, dfm_files, cache_dir):
    from modelhub.DFLive.DFMModel import DFMModel

    expected = [DFMModel(dfm_files["plain"]).convert(img, 0.3) for img in _dfl_inputs()]
    dp.install(_quiet(lean_weights=True, optimized_model_cache=True), propagate=False)
    try:
        got = [DFMModel(dfm_files["plain"]).convert(img, 0.3) for img in _dfl_inputs()]
    finally:
        dp.uninstall()
    assert len(list((cache_dir / "lean").glob("*/weights.bin"))) == 1
    assert not list((cache_dir / "optimized").glob("*.onnx"))  # lean weights replace the optimized cache
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            assert np.abs(a.astype(np.float64) - b).max() <= (1 if a.dtype == np.uint8 else 1.0 / 255)


def test_install_points_the_disk_cache_at_cache_dir(monkeypatch, tmp_path):
    from dfl_perf.paths import CACHE_DIR_ENV, user_cache_dir

    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    dp.install(_quiet(cache_dir=str(tmp_path)), propagate=False)
    try:
        assert user_cache_dir() == tmp_path
    finally:
        dp.uninstall()
    assert CACHE_DIR_ENV not in os.environ


def test_config_round_trip_and_validation():
    config = DFLConfig(intra_op_threads=3, meter_dir="/tmp/x", lazy_imports=["onnx"])
    assert DFLConfig.from_json(config.to_json()) == config
    assert config.threads_per_session() == 3
    assert DFLConfig(model_processes=1000).threads_per_session() == 1
    with pytest.raises(ValueError, match="unknown dfl_perf DFL config keys"):
        DFLConfig.from_json('{"threads": 2}')
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        DFLConfig(cudnn_conv_algo_search="FAST")
    with pytest.raises(ValueError, match="model_processes"):
        DFLConfig(model_processes=0)


# ----------------------------------------------------------------------------------------- DFM path

def _dfl_inputs():
    rng = np.random.RandomState(0)
    return [
        rng.randint(0, 256, (64, 64, 3)).astype(np.uint8),          # aligned face, no resize
        rng.randint(0, 256, (90, 70, 3)).astype(np.uint8),          # resize both ways
        rng.rand(50, 50, 3).astype(np.float32),                     # float in, float out
        rng.randint(0, 256, (80, 80)).astype(np.uint8),             # HW grey -> 3 channels
        rng.randint(0, 256, (2, 64, 64, 3)).astype(np.uint8),       # NHWC batch
        rng.randint(0, 256, (70, 70, 4)).astype(np.uint8),          # 4 channels -> 3
    ]


@pytest.mark.parametrize("kind", ["plain", "amp"])
def test_fast_convert_returns_what_dfl_returns(standin, dfm_files, kind, no_thread_leak):
    from modelhub.DFLive.DFMModel import DFMModel

    model = DFMModel(dfm_files[kind])
    expected = [model.convert(img, 0.3) for img in _dfl_inputs()]
    dp.install(_quiet(), propagate=False)
    assert DFMModel.convert.__module__ == "dfl_perf.adapters.deepfacelive.dfm"
    got = [model.convert(img, 0.3) for img in _dfl_inputs()]
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            assert a.shape == b.shape and a.dtype == b.dtype
            tolerance = 1 if a.dtype == np.uint8 else 1.0 / 255
            assert np.abs(a.astype(np.float64) - b).max() <= tolerance
    if kind == "amp":  # morph_factor reaches the model
        a = model.convert(_dfl_inputs()[0], 0.0)[0]
        b = model.convert(_dfl_inputs()[0], 1.0)[0]
        assert np.abs(a.astype(int) - b).max() > 0
    dp.uninstall()
    assert DFMModel.convert.__module__ == "modelhub.DFLive.DFMModel"
    assert not hasattr(DFMModel, "convert_batch")


def test_fast_convert_results_belong_to_the_caller(standin, dfm_files):
    from modelhub.DFLive.DFMModel import DFMModel

    dp.install(_quiet(), propagate=False)
    model = DFMModel(dfm_files["plain"])
    first = model.convert(_dfl_inputs()[0])
    kept = [a.copy() for a in first]
    model.convert(_dfl_inputs()[1][:64, :64])  # DFL's two-pass mode keeps pass one's face_mask
    for a, b in zip(first, kept):
        assert np.array_equal(a, b)
    with pytest.raises(TypeError, match="uint8 or float32"):
        model.convert(np.zeros((64, 64, 3), np.float64))
    with pytest.raises(ValueError, match="HW, HWC or NHWC"):
        model.convert(np.zeros((1, 1, 64, 64, 3), np.uint8))


def test_convert_batch_matches_one_face_at_a_time(standin, dfm_files):
    from modelhub.DFLive.DFMModel import DFMModel

    model = DFMModel(dfm_files["amp"])
    faces = _dfl_inputs()[:3]
    expected = [model.convert(face, 0.6) for face in faces]
    dp.install(_quiet(), propagate=False)
    got = model.convert_batch(faces, 0.6)
    assert len(got) == 3
    again = convert_faces(model, faces, 0.6)
    assert all(np.array_equal(a, b) for x, y in zip(got, again) for a, b in zip(x, y))
    for want, have in zip(expected, got):
        for a, b in zip(want, have):
            assert a.shape == b.shape and a.dtype == b.dtype
            assert np.abs(a.astype(np.float64) - b).max() <= (1 if a.dtype == np.uint8 else 1.0 / 255)
    with pytest.raises(ValueError, match="non-empty list"):
        model.convert_batch([])


def test_fast_path_steps_aside_for_a_model_it_cannot_bind(standin, standin_models, caplog):
    from modelhub.DFLive.DFMModel import DFMModel
    from xlib.onnxruntime import InferenceSession_with_device, get_cpu_device_info

    model = DFMModel.__new__(DFMModel)  # a DFMModel whose session breaks the DFM contract
    model._sess = InferenceSession_with_device(str(standin_models / "YoloV5Face.onnx"), get_cpu_device_info())
    model._input_width = model._input_height = 64
    model._model_type = 1
    dp.install(_quiet(), propagate=False)
    with caplog.at_level(logging.WARNING, logger="dfl_perf.adapters.deepfacelive"), pytest.raises(Exception, match="in_face"):
        model.convert(np.zeros((64, 64, 3), np.uint8))  # DFL's own convert runs, and fails like DFL's
    assert "fast DFM path off" in caplog.text


# ---------------------------------------------------------------------------------------------- meter

class _Inbox:
    """A BackendConnection stand-in for one worker in this process (a deque, nothing shared)."""

    def __init__(self, items=()):
        import collections

        self.items = collections.deque(items)
        self.written = []

    def read(self, timeout=0):
        return self.items.popleft() if self.items else None

    def write(self, bcd):
        self.written.append(bcd)

    def is_full_read(self, buffer_size=0):
        return True


def _worker_with_inbox(items):
    import queue
    import time

    from apps.DeepFaceLive.backend._stage import StageMixin
    from apps.DeepFaceLive.backend.BackendBase import BackendWorker

    class SlowWorker(StageMixin, BackendWorker):
        def process_bcd(self, bcd):
            time.sleep(0.01)

    class Item:
        def assign_weak_heap(self, heap):
            pass

    messages = queue.Queue()
    worker = SlowWorker(messages, None, {})
    worker.setup_stage(None, None, _Inbox([Item() for _ in items]), _Inbox())
    return worker, messages


def _drain(messages):
    out = []
    while not messages.empty():
        out.append(messages.get_nowait())
    return out


def test_meter_replaces_dfl_profile_timing(standin, tmp_path, no_thread_leak):
    import apps.DeepFaceLive.backend.BackendBase as base

    original_stop = base.BackendWorker.stop_profile_timing
    dp.install(_quiet(meter_dir=str(tmp_path)), propagate=False)
    worker, messages = _worker_with_inbox([{"id": i} for i in range(12)])
    for _ in range(15):  # the last ticks find no input: no frame counted
        worker.on_tick()
    timings = [args[0] for _, name, args in _drain(messages) if name == "_profile_timing"]
    assert len(timings) == 12
    meter = worker._dfl_perf_meter
    summary = meter.monitor.summary()
    assert summary["frames"] == 12
    assert 0.009 <= summary["stages"]["process"]["p50"] < 0.1  # the 10 ms of work, not the read wait
    assert summary["fps"] > 0 and abs(timings[-1] - 1.0 / meter.monitor.fps()) < 0.5 * timings[-1]
    path = meter.flush()
    assert path == tmp_path / ("SlowWorker-%d.json" % os.getpid())
    dp.uninstall()
    assert base.BackendWorker.stop_profile_timing is original_stop


def test_meter_view_of_all_modules(tmp_path):
    from dfl_perf.adapters.deepfacelive.meter import ModuleMeter

    clock = [0.0]
    for name, seconds in (("FaceDetectorWorker", 0.005), ("FaceSwapDFMWorker", 0.02)):
        meter = ModuleMeter(name, tmp_path, clock=lambda: clock[0])
        for _ in range(10):
            meter.begin()
            clock[0] += seconds
            meter.end()
        meter.close()
    view = dp.collect_meter(tmp_path)
    assert sorted(view["modules"]) == ["FaceDetectorWorker", "FaceSwapDFMWorker"]
    assert abs(view["modules"]["FaceSwapDFMWorker"]["summary"]["stages"]["process"]["p50"] - 0.02) < 1e-9
    csv_text = dp.write_meter_view(tmp_path, tmp_path / "all.csv", "csv")
    assert csv_text.splitlines()[0].startswith("module,pid,fps")
    assert (tmp_path / "all.csv").read_text() == csv_text
    prom = dp.write_meter_view(tmp_path, fmt="prometheus")
    assert 'dfl_perf_frames_total{module="FaceDetectorWorker"} 10' in prom
    assert json.loads(dp.write_meter_view(tmp_path))["modules"]["FaceDetectorWorker"]["module"] == "FaceDetectorWorker"
    with pytest.raises(ValueError, match="unknown meter view format"):
        dp.write_meter_view(tmp_path, fmt="xml")
    with pytest.raises(FileNotFoundError, match="meter folder not found"):
        dp.collect_meter(tmp_path / "missing")


# ------------------------------------------------------------------------------------ deferred imports

def test_deferred_module_runs_only_when_used(tmp_path, monkeypatch):
    package = tmp_path / "dflperf_lazy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.environ['DFLPERF_LAZY_RAN'] = '1'\nVALUE = 7\n")
    (package / "sub.py").write_text("from dflperf_lazy_pkg import VALUE\nDOUBLE = VALUE * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DFLPERF_LAZY_RAN", raising=False)
    hook = ImportHook({}, lazy=["dflperf_lazy_pkg"])
    sys.meta_path.insert(0, hook)
    try:
        import dflperf_lazy_pkg
        import dflperf_lazy_pkg as again  # a second import must not run it (the stdlib LazyLoader would)
        assert again is dflperf_lazy_pkg and "DFLPERF_LAZY_RAN" not in os.environ
        assert not is_module_loaded("dflperf_lazy_pkg")
        assert dflperf_lazy_pkg.VALUE == 7 and os.environ["DFLPERF_LAZY_RAN"] == "1"
        assert is_module_loaded("dflperf_lazy_pkg")
        del sys.modules["dflperf_lazy_pkg"]
        monkeypatch.delenv("DFLPERF_LAZY_RAN")
        from dflperf_lazy_pkg import sub  # a submodule first: the package runs before it

        assert sub.DOUBLE == 14 and os.environ["DFLPERF_LAZY_RAN"] == "1"
        for name in [n for n in sys.modules if n.startswith("dflperf_lazy_pkg")]:
            del sys.modules[name]
        monkeypatch.delenv("DFLPERF_LAZY_RAN")
        # `from package import submodule`, as DFL's `from onnx import numpy_helper`
        import dflperf_lazy_pkg
        from dflperf_lazy_pkg import sub

        assert "DFLPERF_LAZY_RAN" not in os.environ and not is_module_loaded("dflperf_lazy_pkg.sub")
        assert sub.DOUBLE == 14 and os.environ["DFLPERF_LAZY_RAN"] == "1"  # package first, then the submodule
        assert dflperf_lazy_pkg.sub is sub and dflperf_lazy_pkg.VALUE == 7
        from dflperf_lazy_pkg import VALUE  # a plain name still works

        assert VALUE == 7
    finally:
        remove_hooks([hook])
        for name in [n for n in sys.modules if n.startswith("dflperf_lazy_pkg")]:
            del sys.modules[name]


# ------------------------------------------------------------------- launcher and spawned DFL workers

def _standin_settings(folder: Path, dfm_path: str, models: Path, frames: int = 6, **extra) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"frames": frames, "warmup": 1, "dfm_path": dfm_path, "models_dir": str(models), "timeout_s": 120}
    settings.update(extra)
    (folder / "standin_settings.json").write_text(json.dumps(settings))
    return folder


def _run(cmd, cwd=REPO, timeout=200):
    env = dict(os.environ)
    for name in (CONFIG_ENV, "ORT_DEVICES_INITIALIZED", "ORT_DEVICES_COUNT", "PYTHONPATH", "DFL_STANDIN_MODELS"):
        env.pop(name, None)
    done = subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _report(userdata: Path, frames: int):
    report = json.loads((userdata / "standin_report.json").read_text())
    assert report["exit_codes"] == [0] * len(PIPELINE), report["exit_codes"]
    assert report["frames"] == frames and report["lost_merged"] == 0 and report["lost_frame"] == 0
    return report


PIPELINE = ("FileSource", "FaceDetector", "FaceMarker", "FaceAligner", "FaceSwapDFM", "FrameAdjuster", "FaceMerger",
            "StreamOutput")
MODEL_WORKERS = ("FaceDetector", "FaceMarker", "FaceSwapDFM")
IDLE_WORKERS = ("FileSource", "FaceAligner", "FrameAdjuster", "FaceMerger", "StreamOutput")
TIMED_WORKERS = PIPELINE[:-1]  # every module but StreamOutput reports DFL's profile timing


@pytest.mark.timeout(300)
def test_zero_edit_launch_patches_every_spawned_worker(tmp_path, standin_models, dfm_files):
    userdata = _standin_settings(tmp_path / "userdata", dfm_files["plain"], standin_models)
    meter_dir = tmp_path / "meter"
    cmd = [sys.executable, "-m", "dfl_perf.adapters.deepfacelive", "--meter-dir", str(meter_dir),
           "--cache-dir", str(tmp_path / "cache"), str(STANDIN / "main.py"), "run", "DeepFaceLive",
           "--userdata-dir", str(userdata)]
    _run(cmd)
    report = _report(userdata, 6)
    pids = {report["main"]["pid"]}
    for name in MODEL_WORKERS:
        worker = report["workers"][name]
        pids.add(worker["pid"])
        assert worker["sessions"], name
        for sess in worker["sessions"]:
            assert sess["intra_op_num_threads"] == EXPECTED_THREADS and sess["allow_spinning"] == "0", (name, sess)
        assert worker["onnxruntime_loaded"], name
    for name in IDLE_WORKERS:  # workers that never run a model never load onnxruntime or onnx
        worker = report["workers"][name]
        pids.add(worker["pid"])
        assert not worker["onnxruntime_loaded"] and not worker["onnx_loaded"], (name, worker)
    assert len(pids) == len(PIPELINE) + 1  # the spawned workers and the main process, all distinct
    for where in [report["main"]] + list(report["workers"].values()):
        assert where["factory_module"] == "dfl_perf.adapters.deepfacelive.factory"
        assert where["facemesh_factory_module"] == "dfl_perf.adapters.deepfacelive.factory"
        assert where["dfm_convert_module"] == "dfl_perf.adapters.deepfacelive.dfm"
        assert where["cuda_cache_maxsize"] == "2147483647"
        assert where["merge_module"] == "dfl_perf.adapters.deepfacelive.merger"
        assert where["heap_add_data_module"] == "dfl_perf.adapters.deepfacelive.heap"
        assert where["thread_pools"]["cv2"] == EXPECTED_THREADS and where["thread_pools"]["OMP_NUM_THREADS"] == str(EXPECTED_THREADS)
    for name in ("FaceMerger", "FaceAligner", "StreamOutput"):  # numexpr's pool too, where DFL uses it
        assert report["workers"][name]["thread_pools"]["numexpr"] == EXPECTED_THREADS
    assert report["merged_dtypes"] == ["uint8"] and report["heap"]["lost_reads"] == 0
    assert report["heap"]["limit"] < report["heap"]["reserved"] // 4
    view = dp.collect_meter(meter_dir)
    assert set(view["modules"]) == {name + "Worker" for name in TIMED_WORKERS}
    assert all(view["modules"][n + "Worker"]["summary"]["frames"] == 6 for n in TIMED_WORKERS)
    assert all(len(report["profile_timing"][n]) == 6 for n in TIMED_WORKERS)
    assert view["bottleneck"] in {name + "Worker" for name in TIMED_WORKERS}
    assert all(text.split(" | ")[0].endswith("FPS alone") for text, _ in report["panels"].values())


@pytest.mark.timeout(300)
def test_without_dfl_perf_the_standin_behaves_like_dfl(tmp_path, standin_models, dfm_files):
    userdata = _standin_settings(tmp_path / "userdata", dfm_files["plain"], standin_models, frames=3)
    _run([sys.executable, str(STANDIN / "main.py"), "run", "DeepFaceLive", "--userdata-dir", str(userdata)])
    report = _report(userdata, 3)
    for name in MODEL_WORKERS:
        assert report["workers"][name]["sessions"][0]["intra_op_num_threads"] == 0
        assert report["workers"][name]["sessions"][0]["allow_spinning"] is None
    for name in IDLE_WORKERS:  # DFL: every worker imports the whole backend, onnxruntime and onnx included
        assert report["workers"][name]["onnxruntime_loaded"] and report["workers"][name]["onnx_loaded"]
    assert report["main"]["factory_module"] == "xlib.onnxruntime.InferenceSession"
    assert report["merged_dtypes"] == ["float32"] and report["no_face"] == 0 and report["heap"] is None
    assert all(text.endswith(" FPS") for text, _ in report["panels"].values())


@pytest.mark.timeout(400)
@pytest.mark.parametrize("faces, extra", [(1, {}), (2, {"FaceSwapDFM": {"swap_all_faces": True},
                                                       "FaceDetector": {"max_faces": 2}})], ids=["one-face", "two-faces"])
def test_launched_pipeline_delivers_dfls_frames(tmp_path, standin_models, dfm_files, face_photo, faces, extra):
    """Every frame, same picture: the launched stand-in's output against a plain start's, frame by frame."""
    saved = [0, 3, 7]
    outputs = {}
    for launched in (False, True):
        userdata = _standin_settings(tmp_path / ("launched" if launched else "plain"), dfm_files["plain"], standin_models,
                                     frames=8, faces=faces, face_path=str(face_photo), save_frames=saved, **extra)
        prefix = [sys.executable, "-m", "dfl_perf.adapters.deepfacelive", "--cache-dir", str(tmp_path / "cache")]
        _run((prefix if launched else [sys.executable]) + [str(STANDIN / "main.py"), "run", "DeepFaceLive",
                                                            "--userdata-dir", str(userdata)])
        report = _report(userdata, 8)
        assert report["no_face"] == 0
        outputs[launched] = [np.load(str(userdata / "out" / ("frame_%06d.npy" % n))) for n in saved]
    for plain, fast in zip(outputs[False], outputs[True]):
        assert plain.shape == fast.shape and plain.dtype == fast.dtype == np.uint8
        assert np.abs(plain.astype(int) - fast).max() <= 2


@pytest.mark.timeout(300)
def test_one_line_install_in_main_py_reaches_spawned_workers(tmp_path, standin_models, dfm_files):
    main_py = tmp_path / "main.py"
    main_py.write_text(
        "import sys\nsys.path[:0] = [%r, %r]\n" % (str(STANDIN), str(REPO))
        + "import dfl_perf.adapters.deepfacelive as dp; dp.install(dp.DFLConfig(intra_op_threads=1))\n"
        + (STANDIN / "main.py").read_text())
    userdata = _standin_settings(tmp_path / "userdata", dfm_files["plain"], standin_models, frames=3)
    _run([sys.executable, str(main_py), "run", "DeepFaceLive", "--userdata-dir", str(userdata)])
    report = _report(userdata, 3)
    for name in MODEL_WORKERS:
        assert report["workers"][name]["sessions"][0]["intra_op_num_threads"] == 1
        assert report["workers"][name]["sessions"][0]["allow_spinning"] == "0"
    assert report["workers"]["FaceSwapDFM"]["dfm_convert_module"] == "dfl_perf.adapters.deepfacelive.dfm"


@pytest.mark.timeout(60)
def test_sitecustomize_chains_to_the_one_it_hides(tmp_path):
    other = tmp_path / "other_site"
    other.mkdir()
    marker = tmp_path / "marker.txt"
    (other / "sitecustomize.py").write_text("open(%r, 'w').write('ran')\n" % str(marker))
    probe = textwrap.dedent("""
        import sys
        import dfl_perf.adapters.deepfacelive as dp
        print(dp.is_installed(), 'xlib' in sys.modules)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SITE_DIR, str(other)]),
               **{CONFIG_ENV: DFLConfig(lazy_imports=()).to_json()})
    done = subprocess.run([sys.executable, "-c", probe], cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]
    assert marker.read_text() == "ran"


def test_dfl_main_arguments(tmp_path, capsys):
    from dfl_perf.adapters.deepfacelive.launcher import _parser, config_from_args

    args = _parser().parse_args(["--threads", "2", "--no-fast-dfm", "--meter-dir", "m", "--lean-weights", "main.py",
                                 "run", "X", "--k"])
    config = config_from_args(args)
    assert config.intra_op_threads == 2 and not config.fast_dfm and os.path.isabs(config.meter_dir)
    assert config.lean_weights and config.fast_merge and config.merged_uint8 and config.frame_heap
    assert config.frame_heap_mb is None and config.thread_pools and config.fast_detector and config.malloc_reuse
    off = config_from_args(_parser().parse_args(["--frame-heap-mb", "300", "--no-fast-merge", "--float-merged",
                                                 "--no-fast-detector", "--no-thread-pools", "--no-frame-heap",
                                                 "--no-malloc-reuse", "main.py"]))
    assert off.frame_heap_mb == 300 and not (off.fast_merge or off.merged_uint8 or off.fast_detector
                                             or off.thread_pools or off.frame_heap or off.malloc_reuse)
    assert dp.dfl_main(["--frame-heap-mb", "0", "main.py"]) == 2 and "frame_heap_mb" in capsys.readouterr().err
    assert args.dfl_args == ["run", "X", "--k"]
    assert dp.dfl_main([str(tmp_path / "missing_main.py"), "run"]) == 2
    assert "main.py not found" in capsys.readouterr().err
    assert dp.dfl_main(["meter", str(tmp_path / "nothing")]) == 2
    assert dp.dfl_main([]) == 2 and "usage: dfl-perf dfl" in capsys.readouterr().err
    assert dp.dfl_main(["--config", "{bad", "main.py"]) == 2 and "not valid JSON" in capsys.readouterr().err
    script = tmp_path / "exits.py"
    script.write_text("import sys\nassert sys.argv[1:] == ['a', 'b']\nsys.exit(3)\n")
    assert dp.dfl_main([str(script), "a", "b"]) == 3
    assert not dp.is_installed()


# ------------------------------------------------------------------------ detector, thread pools, output

def _detector_inputs(face_photo):
    from apps.DeepFaceLive.backend.FileSource import face_photo as crop
    from apps.DeepFaceLive.backend.FileSource import paint_frames

    photo = crop(str(face_photo))
    frames = []
    for width, height, faces in ((640, 480, 1), (1280, 720, 2), (1920, 1080, 1), (320, 240, 1), (2400, 1350, 1)):
        frames.extend(paint_frames(width, height, faces, photo, count=3, seed=width))
    frames.append(frames[0].astype(np.float32) / 255.0)  # float32 frames are used as they are
    frames.append(cv2_gray(frames[1]))
    frames.append(np.dstack([frames[2], frames[2][..., :1]]))  # 4 channels
    return frames


def cv2_gray(image):
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("window, threshold", [(480, 0.5), (0, 0.5), (256, 0.3), (1000, 0.9)])
def test_fast_detector_finds_dfls_rectangles(standin, face_photo, window, threshold):
    from modelhub.onnx.YoloV5Face.YoloV5Face import YoloV5Face
    from xlib.onnxruntime import get_cpu_device_info

    detector = YoloV5Face(get_cpu_device_info())
    frames = _detector_inputs(face_photo)
    want = [detector.extract(f, threshold=threshold, fixed_window=window) for f in frames]
    dp.install(_quiet(), propagate=False)
    assert YoloV5Face.extract.__module__ == "dfl_perf.adapters.deepfacelive.detector"
    got = [detector.extract(f, threshold=threshold, fixed_window=window) for f in frames]
    assert got == want  # the same faces, the same floats, in the same order
    assert sum(len(faces[0]) for faces in want) >= 5  # the stand-in's frames do have faces
    augmented = detector.extract(frames[0], threshold=threshold, fixed_window=window, augment=True)
    dp.uninstall()
    assert augmented == detector.extract(frames[0], threshold=threshold, fixed_window=window, augment=True)
    assert YoloV5Face.extract.__module__ == "modelhub.onnx.YoloV5Face.YoloV5Face"


def test_thread_pools_follow_the_core_split(monkeypatch):
    import cv2
    import numexpr

    from dfl_perf.adapters.deepfacelive.threads import THREAD_ENV

    for name in THREAD_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")  # the user's own setting stays
    before = cv2.getNumThreads(), numexpr.get_num_threads()
    dp.install(_quiet(intra_op_threads=1), propagate=False)
    try:
        assert cv2.getNumThreads() == 1 and numexpr.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert os.environ["MKL_NUM_THREADS"] == "3"
    finally:
        dp.uninstall()
    assert (cv2.getNumThreads(), numexpr.get_num_threads()) == before
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"
    dp.install(_quiet(thread_pools=False), propagate=False)
    try:
        assert cv2.getNumThreads() == before[0] and "OMP_NUM_THREADS" not in os.environ
    finally:
        dp.uninstall()


def test_side_by_side_views_get_the_merged_frame_as_float32(standin):
    from apps.DeepFaceLive.backend.BackendBase import BackendConnectionData, BackendWeakHeap
    from apps.DeepFaceLive.backend.StreamOutput import SourceType, StreamOutputWorker

    from dfl_perf.adapters.deepfacelive import merge_ops

    heap = BackendWeakHeap(size_mb=16)
    frame = np.random.RandomState(0).randint(0, 256, (48, 64, 3)).astype(np.uint8)
    merged = (255 - frame).astype(np.uint8)  # what the fast merge passes on
    shown = {}
    for fast in (False, True):
        if fast:
            dp.install(_quiet(), propagate=False)
        for source_type in SourceType:
            bcd = BackendConnectionData(uid=1)
            bcd.assign_weak_heap(heap)
            bcd.set_frame_image_name("f")
            bcd.set_image("f", frame)
            bcd.set_merged_image_name("f_merged")
            bcd.set_image("f_merged", merged if fast else merged.astype(np.float32) / np.float32(255.0))
            worker = StreamOutputWorker(None, None, {"source_type": source_type})
            worker.on_start(heap, None, _Inbox([bcd]), None)
            worker.send_msg = lambda *args: None
            views = []
            worker.buffered_frames.add_buffer = lambda ts, view, views=views: views.append(view)
            worker.on_tick()
            if views and views[0] is not None:
                shown[(fast, source_type)] = merge_ops.to_uint8(views[0].astype(np.float32)) \
                    if views[0].dtype != np.uint8 else views[0]
        dp.uninstall()
    for source_type in (SourceType.MERGED_FRAME, SourceType.SOURCE_N_MERGED_FRAME,
                        SourceType.SOURCE_N_MERGED_FRAME_OR_SOURCE_FRAME, SourceType.MERGED_FRAME_OR_SOURCE_FRAME):
        plain = shown[(False, source_type)]
        if plain.dtype != np.uint8:
            plain = merge_ops.to_uint8(plain.copy())
        assert np.array_equal(plain, shown[(True, source_type)]), source_type


# ---------------------------------------------------------------------------------- meter: both numbers

def test_meter_timing_carries_the_rate_the_busy_time_and_the_share():
    import pickle

    from dfl_perf.adapters.deepfacelive.meter import MeterTiming, panel_text

    timing = MeterTiming(0.025, delivered_fps=30.0, cpu_s=0.02)
    again = pickle.loads(pickle.dumps(timing))
    assert isinstance(again, MeterTiming) and float(again) == 0.025 and again.delivered_fps == 30.0
    assert int(1.0 / again) == 40  # what DFL's own label computes: the FPS it could do alone
    assert abs(again.utilisation - 0.75) < 1e-9
    assert panel_text(again) == "40 FPS alone | 30 out | 75% busy"
    assert panel_text(0.05) == "20 FPS"


def test_dfls_panel_shows_both_numbers_and_marks_the_bottleneck(standin):
    from apps.DeepFaceLive.ui.widgets.QBackendPanel import QBackendPanel

    from dfl_perf.adapters.deepfacelive.meter import MeterTiming

    dp.install(_quiet(), propagate=False)
    try:
        import importlib

        importlib.import_module("apps.DeepFaceLive.ui.widgets.QBackendPanel")
        slow, fast = QBackendPanel("FaceMerger"), QBackendPanel("FaceMarker")
        slow._on_backend_profile_timing(MeterTiming(1 / 34.0, delivered_fps=33.0))
        fast._on_backend_profile_timing(MeterTiming(1 / 120.0, delivered_fps=33.0))
        assert slow._fps_label.text == "34 FPS alone | 33 out | 97% busy" and slow._fps_label.color == "red"
        assert fast._fps_label.text.startswith("120 FPS alone | 33 out") and fast._fps_label.color is None
        fast._on_backend_profile_timing(0.01)  # a worker without dfl_perf: DFL's own text
        assert fast._fps_label.text == "100 FPS"
    finally:
        dp.uninstall()


def test_meter_view_names_the_bottleneck(tmp_path):
    from dfl_perf.adapters.deepfacelive.meter import ModuleMeter

    clock = [0.0]
    meters = {name: ModuleMeter(name, tmp_path, clock=lambda: clock[0]) for name in ("FaceSwapDFMWorker", "FaceMergerWorker")}
    for _ in range(30):  # one frame every 38 ms: the swap busy 10 ms of it, the merger 28 ms
        for name, busy in (("FaceSwapDFMWorker", 0.010), ("FaceMergerWorker", 0.028)):
            meters[name].begin()
            read = clock[0]
            clock[0] += busy
            meters[name].end(read, cpu_seconds=busy / 2)
    for meter in meters.values():
        meter.close()
    view = dp.collect_meter(tmp_path)
    assert view["bottleneck"] == "FaceMergerWorker"
    merger = view["modules"]["FaceMergerWorker"]["load"]
    assert abs(merger["busy_ms"] - 28.0) < 0.5 and abs(merger["cpu_ms"] - 14.0) < 0.5
    assert abs(merger["fps_alone"] - 1000 / 28.0) < 1.0 and abs(merger["utilisation"] - 28 / 38.0) < 0.05
    assert abs(view["modules"]["FaceSwapDFMWorker"]["load"]["utilisation"] - 10 / 38.0) < 0.05
    csv_text = dp.write_meter_view(tmp_path, fmt="csv")
    header = csv_text.splitlines()[0].split(",")
    assert {"busy_ms", "cpu_ms", "fps_alone", "utilisation", "bottleneck"} <= set(header)
