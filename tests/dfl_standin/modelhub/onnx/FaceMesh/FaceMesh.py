"""Stand-in FaceMesh wrapper: binds the factory name at import time, as DFL's wrappers do.

The model file is the shared MediaPipe FaceMesh (NCHW input), found through DFL_STANDIN_MODELS.
"""

import os
from pathlib import Path

import cv2
import numpy as np
from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_available_devices_info


class FaceMesh:
    @staticmethod
    def get_available_devices():
        return get_available_devices_info()

    def __init__(self, device_info: ORTDeviceInfo):
        if device_info not in FaceMesh.get_available_devices():
            raise Exception("device_info %s is not in available devices for FaceMesh" % device_info)
        path = Path(os.environ.get("DFL_STANDIN_MODELS", ".")) / "facemesh_468.onnx"
        if not path.exists():
            raise FileNotFoundError("%s not found" % path)
        self._sess = sess = InferenceSession_with_device(str(path), device_info)
        self._input_name = sess.get_inputs()[0].name

    def extract(self, img):
        """img HWC uint8 -> (1, 468, 3) landmarks in img's pixels."""
        height, width = img.shape[:2]
        feed = cv2.resize(img, (192, 192)).astype(np.float32) / np.float32(255.0)
        feed = np.ascontiguousarray(feed.transpose(2, 0, 1)[None])
        lmrks = self._sess.run(None, {self._input_name: feed})[0].reshape(1, 468, 3)
        lmrks *= (width / 192.0, height / 192.0, 1.0)
        return lmrks
