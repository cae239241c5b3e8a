"""Stand-in ``FaceMesh`` with DFL's interface: resize to 192, float 0..1 NHWC, run, 468 x (x, y, z)
scaled back to the input's pixels. The model is the stand-in's (``standin_models.py``), found in
``DFL_STANDIN_MODELS``; it binds the factory name at import time, as DFL's wrappers do."""

import os
from pathlib import Path

from xlib.image import ImageProcessor
from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_available_devices_info


class FaceMesh:
    @staticmethod
    def get_available_devices():
        return get_available_devices_info()

    def __init__(self, device_info: ORTDeviceInfo):
        if device_info not in FaceMesh.get_available_devices():
            raise Exception("device_info %s is not in available devices for FaceMesh" % device_info)
        path = Path(os.environ.get("DFL_STANDIN_MODELS", ".")) / "FaceMesh.onnx"
        if not path.exists():
            raise FileNotFoundError("%s not found" % path)
        self._sess = sess = InferenceSession_with_device(str(path), device_info)
        self._input_name = sess.get_inputs()[0].name
        self._input_width = self._input_height = 192

    def extract(self, img):
        """img HW/HWC/NHWC uint8/float32 -> (N, 468, 3) landmarks in img's pixels."""
        ip = ImageProcessor(img)
        n, height, width, _ = ip.get_dims()
        feed = ip.resize((self._input_width, self._input_height)).to_ufloat32().ch(3).get_image("NHWC")
        lmrks = self._sess.run(None, {self._input_name: feed})[0].reshape((n, 468, 3))
        lmrks *= (width / self._input_width, height / self._input_height, 1)
        return lmrks
