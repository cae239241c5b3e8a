"""GPU and execution-provider detection, done before (and mostly without) any heavy import.

- ``detect_gpus()`` asks NVML (``pynvml``, from the ``nvidia-ml-py`` package): no onnxruntime import,
  no CUDA context. Without NVML or a driver it returns an empty list whose ``.reason`` says why.
- ``select_providers()`` turns ``onnxruntime.get_available_providers()`` into ``(name, options)``
  pairs with good defaults, always ending with the CPU provider.
- ``cpu_budget()`` is the number of cores this process may really use (affinity and cgroup quota).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from dfl_perf.ortinfo import ort_version

__all__ = ["detect_gpus", "select_providers", "cpu_budget", "install_problems"]

log = logging.getLogger("dfl_perf.devices")

PROVIDER_ORDER = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
    "CPUExecutionProvider",
)

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "directml": "DmlExecutionProvider", "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

ONNXRUNTIME_FLAVOURS = (
    "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
    "onnxruntime-silicon", "onnxruntime-rocm", "onnxruntime-training", "ort-nightly", "ort-nightly-gpu",
)

#: providers that run on the CPU (Azure is a remote-call provider that the default wheel lists)
CPU_ONLY_PROVIDERS = frozenset({"CPUExecutionProvider", "AzureExecutionProvider"})

ProviderSpec = Tuple[str, Dict[str, str]]


# ---------------------------------------------------------------------------------------------- GPUs

@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it (memory in bytes, utilisation in percent)."""

    index: int
    name: str
    memory_total: int
    memory_free: int
    memory_used: int
    utilization: Optional[int]
    driver_version: Optional[str]
    compute_capability: Optional[Tuple[int, int]]


class GpuList(List[GpuInfo]):
    """A list of GpuInfo with ``reason``: why it is empty (or '' when GPUs were found)."""

    reason: str = ""


def _text(value: Union[str, bytes]) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_gpu(nvml, index: int, driver: Optional[str]) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        util: Optional[int] = int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # not supported on some boards (and in vGPU guests)
        util = None
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        cc: Optional[Tuple[int, int]] = (int(major), int(minor))
    except Exception:
        cc = None
    return GpuInfo(index, _text(nvml.nvmlDeviceGetName(handle)), int(mem.total), int(mem.free),
                   int(mem.used), util, driver, cc)


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used in this process; the message says why (no pynvml, no driver)."""


def open_nvml() -> Any:
    """The ``pynvml`` module with NVML initialised; ``close_nvml`` it when done. Raises
    NvmlUnavailable saying what is missing. No onnxruntime import, no CUDA context."""
    from dfl_perf.lazy import optional_import

    nvml = optional_import("pynvml")
    if nvml is None:
        raise NvmlUnavailable("NVML not available: pynvml not installed (package nvidia-ml-py)")
    try:
        nvml.nvmlInit()
    except Exception as exc:
        raise NvmlUnavailable("NVML could not start (no NVIDIA driver?): %s" % exc) from None
    return nvml


def close_nvml(nvml: Any) -> None:
    """Shut NVML down after ``open_nvml``; errors are ignored (the process is done with it)."""
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


@contextlib.contextmanager
def nvml_session() -> Iterator[Any]:
    """``with nvml_session() as nvml:`` NVML initialised for the block (``open_nvml``'s errors)."""
    nvml = open_nvml()
    try:
        yield nvml
    finally:
        close_nvml(nvml)


def detect_gpus() -> GpuList:
    """NVIDIA GPUs through NVML, without importing onnxruntime or creating a CUDA context.

    Never raises: with no ``pynvml`` module, no driver or any NVML error, returns an empty
    GpuList whose ``reason`` says what was missing.
    """
    gpus = GpuList()
    try:
        with nvml_session() as nvml:
            try:
                driver: Optional[str] = _text(nvml.nvmlSystemGetDriverVersion())
            except Exception:
                driver = None
            for index in range(int(nvml.nvmlDeviceGetCount())):
                gpus.append(_read_gpu(nvml, index, driver))
            if not gpus:
                gpus.reason = "NVML found no GPU"
    except NvmlUnavailable as exc:
        gpus.reason = str(exc)
    except Exception as exc:
        del gpus[:]
        gpus.reason = "NVML query failed: %s" % exc
    return gpus


# ---------------------------------------------------------------------------------------- providers

def available_providers() -> List[str]:
    """``onnxruntime.get_available_providers()``; an empty list when onnxruntime is missing."""
    from dfl_perf.lazy import optional_import

    ort = optional_import("onnxruntime")
    if ort is None:
        return []
    return list(ort.get_available_providers())


def canonical_provider(name: str) -> str:
    """The full provider name for ``name`` (a full name or an alias such as 'cuda'); ValueError if unknown."""
    if name in PROVIDER_ORDER:
        return name
    full = PROVIDER_ALIASES.get(name.strip().lower())
    if full is None:
        raise ValueError(
            "unknown execution provider %r; known: %s (or aliases %s)"
            % (name, ", ".join(PROVIDER_ORDER), ", ".join(sorted(PROVIDER_ALIASES)))
        )
    return full


def _distribution_version(name: str) -> Optional[str]:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def tensorrt_cache_dir() -> Path:
    """Where TensorRT engines and timing caches go: the user cache, one folder per onnxruntime and
    TensorRT version (an engine built by one version is not valid for another)."""
    from dfl_perf.paths import user_cache_dir

    ort = ".".join(str(v) for v in ort_version())
    trt = _distribution_version("tensorrt") or _distribution_version("tensorrt-libs") or "system"
    return user_cache_dir() / "tensorrt" / ("ort-%s_trt-%s" % (ort, trt))


def default_provider_options(name: str, device_id: int = 0, cache_dir: Optional[Path] = None) -> Dict[str, str]:
    """Good default options for one provider (strings, as onnxruntime accepts them)."""
    if name == "CUDAExecutionProvider":
        # EXHAUSTIVE (ORT's default) benchmarks every cuDNN algorithm at first use: the 100 s first start.
        return {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC",
                "do_copy_in_default_stream": "1"}
    if name == "TensorrtExecutionProvider":
        trt_dir = str(Path(cache_dir) if cache_dir else tensorrt_cache_dir())
        options = {"device_id": str(device_id), "trt_engine_cache_enable": "1",
                   "trt_engine_cache_path": trt_dir, "trt_timing_cache_enable": "1"}
        if ort_version() >= (1, 16):
            options["trt_timing_cache_path"] = trt_dir
        return options
    if name in ("DmlExecutionProvider", "ROCMExecutionProvider"):
        return {"device_id": str(device_id)}
    return {}


def select_providers(
    prefer: Union[None, str, Sequence[str]] = None,
    device_id: int = 0,
    available: Optional[Iterable[str]] = None,
    cache_dir: Optional[Path] = None,
) -> List[ProviderSpec]:
    """Execution providers, best first, as ``(name, options)`` pairs for ``InferenceSession(providers=...)``.

    ``available`` defaults to ``onnxruntime.get_available_providers()``. Without ``prefer`` every
    available provider is listed in the order TensorRT, CUDA, ROCm, DirectML, CoreML, OpenVINO, CPU.
    ``prefer`` (a name or alias like ``'cuda'``, or several) puts those first, keeping only the
    providers they need after them (TensorRT keeps CUDA), and CPU always comes last as fallback.
    A preferred provider that is not available is skipped with a warning; an unknown name raises
    ValueError listing the known ones.
    """
    have = set(available_providers() if available is None else available)
    have.add("CPUExecutionProvider")
    if available is None:
        warn_install_problems()
    if prefer is None:
        names = [p for p in PROVIDER_ORDER if p in have]
    else:
        wanted = [canonical_provider(p) for p in ([prefer] if isinstance(prefer, str) else prefer)]
        names = []
        for name in wanted:
            if name not in have:
                log.warning("execution provider %s is not available in this onnxruntime (have: %s); skipping it",
                            name, ", ".join(sorted(have)))
                continue
            names.append(name)
            if name == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in have:
                names.append("CUDAExecutionProvider")  # TensorRT hands unsupported nodes to CUDA
        names.append("CPUExecutionProvider")
    unique: List[str] = []
    for name in names:
        if name not in unique:
            unique.append(name)
    return [(name, default_provider_options(name, device_id, cache_dir)) for name in unique]


# ------------------------------------------------------------------------------ install diagnostics

def installed_onnxruntime_flavours() -> List[str]:
    """Names of the onnxruntime distributions installed (more than one means a broken install)."""
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python < 3.8
        return []
    found = []
    for dist in ONNXRUNTIME_FLAVOURS:
        try:
            metadata.version(dist)
        except Exception:
            continue
        found.append(dist)
    return found


def install_problems(gpus: Optional[Sequence[GpuInfo]] = None, providers: Optional[Iterable[str]] = None,
                     flavours: Optional[Sequence[str]] = None) -> List[str]:
    """Plain-language problems with the onnxruntime install; empty when all is well."""
    gpus = detect_gpus() if gpus is None else gpus
    providers = set(available_providers() if providers is None else providers)
    flavours = installed_onnxruntime_flavours() if flavours is None else flavours
    problems = []
    if len(flavours) > 1:
        problems.append(
            "several onnxruntime flavours are installed at once (%s); they overwrite each other's files. "
            "Uninstall all of them and install exactly one (e.g. pip uninstall -y %s && pip install onnxruntime-gpu)"
            % (", ".join(flavours), " ".join(flavours))
        )
    accelerated = providers - CPU_ONLY_PROVIDERS
    if gpus and providers and not accelerated:
        problems.append(
            "NVML sees %d NVIDIA GPU(s) (%s) but this onnxruntime has only the CPU provider: install "
            "onnxruntime-gpu instead of onnxruntime (pip uninstall -y onnxruntime && pip install onnxruntime-gpu)"
            % (len(gpus), gpus[0].name)
        )
    return problems


_warned_lock = threading.Lock()
_warned = False


def warn_install_problems() -> None:
    """Log each install problem once per process."""
    global _warned
    with _warned_lock:
        if _warned:
            return
        _warned = True
    for problem in install_problems():
        log.warning(problem)


# --------------------------------------------------------------------------------------------- CPUs

def _cgroup_cpu_limit(root: Path) -> Optional[float]:
    """CPUs allowed by a cgroup v2 (cpu.max) or v1 (cfs quota) limit under ``root``; None if unlimited."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if fields and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for base in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((base / "cpu.cfs_quota_us").read_text())
            period = int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
        return None
    return None


def cpu_budget(cgroup_root: Union[str, Path] = "/sys/fs/cgroup") -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup CPU quota; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(Path(cgroup_root))
    if limit is not None:
        cores = min(cores, max(1, int(math.ceil(limit))))
    return max(1, cores)
