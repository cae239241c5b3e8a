"""The stand-in session factory: DFL's signature and behaviour (one provider, default options)."""

from io import BytesIO

import onnx
import onnxruntime as rt

from .device import ORTDeviceInfo


def InferenceSession_with_device(onnx_model_or_path, device_info: ORTDeviceInfo):
    """Build an onnxruntime.InferenceSession on this device; can raise Exception."""
    if isinstance(onnx_model_or_path, onnx.ModelProto):
        buffer = BytesIO()
        onnx.save(onnx_model_or_path, buffer)
        onnx_model_or_path = buffer.getvalue()
    ep = device_info.get_execution_provider()
    if ep not in rt.get_available_providers():
        raise Exception("%s is not available in onnxruntime" % ep)
    flags = {}
    if ep in ("CUDAExecutionProvider", "DmlExecutionProvider"):
        flags["device_id"] = device_info.get_index()
    options = rt.SessionOptions()
    options.log_severity_level = 4
    if ep == "DmlExecutionProvider":
        options.enable_mem_pattern = False
    return rt.InferenceSession(onnx_model_or_path, providers=[(ep, flags)], sess_options=options)
