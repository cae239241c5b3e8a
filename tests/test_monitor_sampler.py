"""SystemSampler: real psutil readings, NVML through a fake module, thread start/stop, listeners."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from dfl_perf.lazy import is_available
from dfl_perf.monitor import PerformanceMonitor, SystemSampler

SAMPLE_KEYS = {"time", "process_rss", "process_cpu_percent", "system_total", "system_available", "gpus"}
GPU_KEYS = {"index", "name", "memory_used", "memory_total", "utilization", "temperature"}


def fake_pynvml(count=2, fail_init=False, calls=None):
    """A stand-in for the pynvml module: NVML needs an NVIDIA driver, which cannot exist on this machine."""
    calls = calls if calls is not None else []
    module = types.ModuleType("pynvml")
    module.NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def init():
        calls.append("init")
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def temperature(handle, sensor):
        if handle == 1:
            raise NVMLError("Not Supported")  # some boards have no sensor
        return 61

    module.NVMLError = NVMLError
    module.nvmlInit = init
    module.nvmlShutdown = lambda: calls.append("shutdown")
    module.nvmlDeviceGetCount = lambda: count
    module.nvmlDeviceGetHandleByIndex = lambda index: index
    module.nvmlDeviceGetName = lambda handle: b"Fake RTX %d" % handle  # old pynvml returns bytes
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(
        used=(handle + 1) * 2 ** 30, total=8 * 2 ** 30, free=(7 - handle) * 2 ** 30)
    module.nvmlDeviceGetUtilizationRates = lambda handle: types.SimpleNamespace(gpu=40 + handle, memory=10)
    module.nvmlDeviceGetTemperature = temperature
    return module


def test_sample_once_reads_process_and_system():
    sampler = SystemSampler(gpus=False)
    assert sampler.latest() is None and sampler.history() == []
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < 0.3:  # busy: this process's CPU since the baseline is real work
        pass
    busy = 100.0 * (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    sample = sampler.sample_once()
    sampler.close()
    assert set(sample) == SAMPLE_KEYS
    assert sample["process_rss"] > 1 << 20 and isinstance(sample["process_rss"], int)
    assert 0 < sample["system_available"] <= sample["system_total"]
    assert sample["process_cpu_percent"] >= 0.5 * busy  # the share of a core it burnt (diluted by set-up)
    assert sample["gpus"] == [] and abs(sample["time"] - time.time()) < 60
    assert sampler.latest() is sample and sampler.history() == [sample]


@pytest.mark.skipif(is_available("pynvml"), reason="pynvml is installed here; this test needs it absent")
def test_nvml_absent_for_real_is_not_an_error():
    sampler = SystemSampler()
    try:
        assert "pynvml not installed" in sampler.gpu_reason
        assert sampler.sample_once()["gpus"] == []
    finally:
        sampler.close()


def test_nvml_present_through_a_fake_module(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(count=2, calls=calls))
    sampler = SystemSampler(gpus=True)
    gpus = sampler.sample_once()["gpus"]
    sampler.close()
    sampler.close()
    assert sampler.gpu_reason is None
    assert [set(gpu) for gpu in gpus] == [GPU_KEYS, GPU_KEYS]
    assert gpus[0] == {"index": 0, "name": "Fake RTX 0", "memory_used": 2 ** 30, "memory_total": 8 * 2 ** 30,
                       "utilization": 40.0, "temperature": 61.0}
    assert gpus[1]["temperature"] is None and gpus[1]["memory_used"] == 2 * 2 ** 30
    assert calls == ["init", "shutdown"]


def test_nvml_init_failure_means_no_gpus(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    with SystemSampler() as sampler:
        assert sampler.sample_once()["gpus"] == []
        assert "Driver Not Loaded" in sampler.gpu_reason


@pytest.mark.timeout(30)
def test_thread_samples_at_interval_and_stops(no_thread_leak):
    seen = []
    sampler = SystemSampler(interval=0.01, history=5, gpus=False)
    sampler.add_listener(seen.append)
    assert not sampler.running
    sampler.start()
    sampler.start()  # idempotent
    assert sampler.running
    deadline = time.monotonic() + 10
    while len(seen) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.close()
    assert not sampler.running and len(seen) >= 8
    history = sampler.history()
    assert len(history) == 5 and history[-1] is sampler.latest()
    assert [s["time"] for s in history] == sorted(s["time"] for s in history)
    with pytest.raises(RuntimeError, match="closed"):
        sampler.start()


@pytest.mark.timeout(30)
def test_failing_listener_does_not_stop_sampling(no_thread_leak, caplog):
    good = threading.Event()

    def broken(sample):
        raise KeyError("listener bug")

    with SystemSampler(interval=0.01, gpus=False) as sampler:
        sampler.add_listener(broken)
        sampler.add_listener(lambda sample: good.set())
        assert good.wait(10)
        sampler.remove_listener(broken)
        sampler.remove_listener(broken)  # unknown: ignored
    assert "listener" in caplog.text
    with pytest.raises(TypeError, match="callable"):
        sampler.add_listener("not a function")


def test_bad_arguments():
    with pytest.raises(ValueError, match="interval"):
        SystemSampler(interval=0)
    with pytest.raises(ValueError, match="history"):
        SystemSampler(history=0)


@pytest.mark.timeout(30)
def test_monitor_with_fake_gpu_reports_vram(monkeypatch, no_thread_leak):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(count=1))  # NVML cannot exist here
    with PerformanceMonitor(sample_system=0.01) as monitor:
        monitor.sampler.sample_once()
        text = monitor.prometheus_text()
        system = monitor.summary()["system"]
    assert system["gpus"][0]["memory_total"] == 8 * 2 ** 30
    assert 'dfl_perf_gpu_memory_used_bytes{gpu="0",name="Fake RTX 0"} 1073741824' in text


def test_monitor_uses_a_shared_sampler_without_closing_it():
    sampler = SystemSampler(gpus=False)
    with PerformanceMonitor(sampler=sampler) as monitor:
        sampler.sample_once()
        assert monitor.summary()["system"]["process_rss"] > 0
    sampler.sample_once()  # still usable: the monitor did not own it
    sampler.close()
