"""dfl_perf.devices: GPU detection (NVML absent for real; present through a fake module),
provider selection over given provider lists, install diagnostics and the CPU budget."""

from __future__ import annotations

import logging
import sys
import types

import pytest

from dfl_perf import devices
from dfl_perf.devices import (
    PROVIDER_ORDER,
    cpu_budget,
    detect_gpus,
    install_problems,
    select_providers,
)

ALL = list(PROVIDER_ORDER)


def test_detect_gpus_without_nvml_returns_empty_list_with_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail, as on a machine without it
    gpus = detect_gpus()
    assert gpus == []
    assert "pynvml" in gpus.reason


def test_detect_gpus_here_never_raises():
    gpus = detect_gpus()  # real NVML when installed; no driver on the CI machines
    assert isinstance(gpus, list)
    assert (gpus and gpus.reason == "") or (not gpus and gpus.reason), (list(gpus), gpus.reason)


class _FakeNVML(types.ModuleType):
    """A stand-in for pynvml: NVML cannot exist on this machine (no NVIDIA driver)."""

    def __init__(self, names, fail_init=False):
        super().__init__("pynvml")
        self.names = names
        self.fail_init = fail_init
        self.shutdown_calls = 0

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdown_calls += 1

    def nvmlSystemGetDriverVersion(self):
        return b"550.54"

    def nvmlDeviceGetCount(self):
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return self.names[h]

    def nvmlDeviceGetMemoryInfo(self, h):
        return types.SimpleNamespace(total=8 << 30, free=6 << 30, used=2 << 30)

    def nvmlDeviceGetUtilizationRates(self, h):
        return types.SimpleNamespace(gpu=37, memory=10)

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (8, 6)


def test_detect_gpus_with_fake_nvml(monkeypatch):
    fake = _FakeNVML(["NVIDIA GeForce RTX 3080", "NVIDIA GeForce RTX 4090"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpus = detect_gpus()
    assert [g.name for g in gpus] == ["NVIDIA GeForce RTX 3080", "NVIDIA GeForce RTX 4090"]
    g = gpus[1]
    assert (g.index, g.memory_total, g.memory_free, g.utilization) == (1, 8 << 30, 6 << 30, 37)
    assert g.driver_version == "550.54" and g.compute_capability == (8, 6)
    assert gpus.reason == ""
    assert fake.shutdown_calls == 1


def test_detect_gpus_with_nvml_but_no_driver(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML([], fail_init=True))
    gpus = detect_gpus()
    assert gpus == [] and "Not Found" in gpus.reason


def test_one_nvml_set_up_opens_and_always_shuts_down(monkeypatch):
    from dfl_perf.devices import NvmlUnavailable, nvml_session

    fake = _FakeNVML(["GPU"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(KeyError):
        with nvml_session() as nvml:
            assert nvml is fake
            raise KeyError("the query failed")
    assert fake.shutdown_calls == 1
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNVML([], fail_init=True))
    with pytest.raises(NvmlUnavailable, match="no NVIDIA driver.*Not Found"):
        with nvml_session():
            pass
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NvmlUnavailable, match="pynvml not installed"):
        with nvml_session():
            pass


def test_select_providers_default_order_ends_with_cpu():
    got = select_providers(available=list(reversed(ALL)) + ["AzureExecutionProvider"])
    assert [name for name, _ in got] == ALL


def test_select_providers_only_cpu():
    assert select_providers(available=["CPUExecutionProvider"]) == [("CPUExecutionProvider", {})]
    assert select_providers(available=[]) == [("CPUExecutionProvider", {})]


def test_cuda_defaults_avoid_exhaustive_search():
    (name, opts), cpu = select_providers("cuda", device_id=1, available=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert name == "CUDAExecutionProvider"
    assert opts["cudnn_conv_algo_search"] == "HEURISTIC" and opts["device_id"] == "1"
    assert cpu[0] == "CPUExecutionProvider"


def test_tensorrt_keeps_cuda_fallback_and_cache_dir(tmp_path):
    got = select_providers("tensorrt", available=ALL, cache_dir=tmp_path)
    assert [n for n, _ in got] == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt = got[0][1]
    assert trt["trt_engine_cache_enable"] == "1" and trt["trt_engine_cache_path"] == str(tmp_path)


def test_directml_device_id():
    got = select_providers("dml", device_id=2, available=["DmlExecutionProvider", "CPUExecutionProvider"])
    assert got[0] == ("DmlExecutionProvider", {"device_id": "2"})


def test_prefer_unknown_provider_lists_known_ones():
    with pytest.raises(ValueError) as err:
        select_providers("cudaa", available=ALL)
    assert "CUDAExecutionProvider" in str(err.value) and "cudaa" in str(err.value)


def test_prefer_unavailable_provider_warns_and_falls_back(caplog):
    with caplog.at_level(logging.WARNING, logger="dfl_perf.devices"):
        got = select_providers("cuda", available=["CPUExecutionProvider"])
    assert got == [("CPUExecutionProvider", {})]
    assert "CUDAExecutionProvider is not available" in caplog.text


def test_select_providers_real_onnxruntime():
    pytest.importorskip("onnxruntime")
    got = select_providers()
    assert got[-1][0] == "CPUExecutionProvider"


def _gpu():
    return devices.GpuInfo(0, "NVIDIA GeForce RTX 3080", 10 << 30, 9 << 30, 1 << 30, 0, "550", (8, 6))


def test_install_problems_wrong_flavour_for_gpu():
    problems = install_problems(gpus=[_gpu()], providers=["AzureExecutionProvider", "CPUExecutionProvider"],
                                flavours=["onnxruntime"])
    assert len(problems) == 1 and "onnxruntime-gpu" in problems[0] and "RTX 3080" in problems[0]


def test_install_problems_two_flavours():
    problems = install_problems(gpus=[], providers=["CPUExecutionProvider"],
                                flavours=["onnxruntime", "onnxruntime-gpu"])
    assert len(problems) == 1 and "onnxruntime, onnxruntime-gpu" in problems[0]


def test_install_problems_none_when_right():
    assert install_problems(gpus=[_gpu()], providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
                            flavours=["onnxruntime-gpu"]) == []


def test_warn_install_problems_once(monkeypatch, caplog):
    monkeypatch.setattr(devices, "_warned", False)
    monkeypatch.setattr(devices, "install_problems", lambda: ["two flavours"])
    with caplog.at_level(logging.WARNING, logger="dfl_perf.devices"):
        devices.warn_install_problems()
        devices.warn_install_problems()
    assert caplog.text.count("two flavours") == 1


def test_cpu_budget_real():
    assert 1 <= cpu_budget()


def test_cpu_budget_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_budget(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_budget(tmp_path) == cpu_budget("/nonexistent")


def test_cpu_budget_cgroup_v1_quota(tmp_path):
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("100000")
    (cpu / "cpu.cfs_period_us").write_text("100000")
    assert cpu_budget(tmp_path) == 1
    (cpu / "cpu.cfs_quota_us").write_text("-1")
    assert cpu_budget(tmp_path) == cpu_budget("/nonexistent")


def test_tensorrt_cache_is_keyed_by_versions(cache_dir):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    got = dict(select_providers("tensorrt", available=ALL))["TensorrtExecutionProvider"]
    path = got["trt_engine_cache_path"]
    assert path.startswith(str(cache_dir / "tensorrt")) and ("ort-" + onnxruntime.__version__.split("+")[0]) in path
    assert "_trt-" in path
