from .device import ORTDeviceInfo, get_available_devices_info, get_cpu_device_info
from .InferenceSession import InferenceSession_with_device

__all__ = ["ORTDeviceInfo", "get_available_devices_info", "get_cpu_device_info", "InferenceSession_with_device"]
