"""Stand-in for DFL's InsightFaceSwap wrapper: only its import-time behaviour matters here.

Like DFL's, it imports ``onnx`` and ``from onnx import numpy_helper`` at module level (every DFL
worker runs this through ``modelhub.onnx``), and uses them only when a model is built.
"""

from pathlib import Path

import onnx
from onnx import numpy_helper
from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_available_devices_info


class InsightFaceSwap:
    @staticmethod
    def get_available_devices():
        return get_available_devices_info()

    def __init__(self, device_info: ORTDeviceInfo, model_path: Path):
        self._sess_swap = InferenceSession_with_device(str(model_path), device_info)
        model = onnx.load(str(model_path))
        self._emap = numpy_helper.to_array(model.graph.initializer[-1])
