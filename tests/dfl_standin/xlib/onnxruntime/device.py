"""Device list of the stand-in: DFL's ORTDeviceInfo interface and its ORT_DEVICE_* environment contract."""

import os

import onnxruntime as rt

from .. import appargs as lib_appargs


class ORTDeviceInfo:
    """Picklable device description; equality and hash use the index only (as DFL's do)."""

    def __init__(self, index=None, execution_provider=None, name=None, total_memory=None, free_memory=None):
        self._index = index
        self._execution_provider = execution_provider
        self._name = name
        self._total_memory = total_memory
        self._free_memory = free_memory

    def is_cpu(self):
        return self._index == -1

    def get_index(self):
        return self._index

    def get_execution_provider(self):
        return self._execution_provider

    def get_name(self):
        return self._name

    def get_total_memory(self):
        return self._total_memory

    def get_free_memory(self):
        return self._free_memory

    def __eq__(self, other):
        return isinstance(other, ORTDeviceInfo) and self._index == other._index

    def __hash__(self):
        return self._index

    def __str__(self):
        return "CPU" if self.is_cpu() else "[%s] %s" % (self._index, self._name)


def get_cpu_device_info():
    return ORTDeviceInfo(index=-1, execution_provider="CPUExecutionProvider", name="CPU", total_memory=0, free_memory=0)


def get_available_devices_info(include_cpu=True, cpu_only=False):
    devices = []
    if not cpu_only:
        for i in range(int(os.environ.get("ORT_DEVICES_COUNT", 0))):
            devices.append(ORTDeviceInfo(index=int(os.environ["ORT_DEVICE_%d_INDEX" % i]),
                                         execution_provider=os.environ["ORT_DEVICE_%d_EP" % i],
                                         name=os.environ["ORT_DEVICE_%d_NAME" % i],
                                         total_memory=int(os.environ["ORT_DEVICE_%d_TOTAL_MEM" % i]),
                                         free_memory=int(os.environ["ORT_DEVICE_%d_FREE_MEM" % i])))
    if include_cpu:
        devices.append(get_cpu_device_info())
    return devices


def _initialize_ort_devices_info():
    """Runs once (guarded by an environment flag that spawned children inherit); no GPU probing here."""
    if os.environ.get("ORT_DEVICES_INITIALIZED", "0") == "1":
        return
    os.environ["ORT_DEVICES_INITIALIZED"] = "1"
    os.environ["ORT_DEVICES_COUNT"] = "0"
    if not lib_appargs.get_arg_bool("NO_CUDA") and "CUDAExecutionProvider" in rt.get_available_providers():
        os.environ["CUDA_\u200bCACHE_\u200bMAXSIZE"] = "2147483647"  # the key with zero-width spaces, as in DFL


_initialize_ort_devices_info()
