"""Stand-in detector wrapper named like DFL's, backed by the shared YuNet model (DFL_STANDIN_MODELS)."""

import os
from pathlib import Path

import cv2
import numpy as np
from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_available_devices_info


class YoloV5Face:
    @staticmethod
    def get_available_devices():
        return get_available_devices_info()

    def __init__(self, device_info: ORTDeviceInfo):
        if device_info not in YoloV5Face.get_available_devices():
            raise Exception("device_info %s is not in available devices for YoloV5Face" % device_info)
        path = Path(os.environ.get("DFL_STANDIN_MODELS", ".")) / "yunet_n_320_320.onnx"
        if not path.exists():
            raise FileNotFoundError("%s not found" % path)
        self._sess = sess = InferenceSession_with_device(str(path), device_info)
        self._input_name = sess.get_inputs()[0].name

    def extract(self, img, threshold=0.3, fixed_window=0, min_face_size=8, augment=False):
        """img HWC uint8 -> [[(l, t, r, b)]]: the best-scoring anchor's cell (decoding kept minimal)."""
        height, width = img.shape[:2]
        feed = cv2.resize(img, (320, 320)).astype(np.float32)
        feed = np.ascontiguousarray(feed.transpose(2, 0, 1)[None])
        outputs = self._sess.run(None, {self._input_name: feed})
        cls8 = outputs[0].reshape(-1)
        best = int(np.argmax(cls8))
        row, col = divmod(best, 40)
        cx, cy = (col + 0.5) * 8 * width / 320.0, (row + 0.5) * 8 * height / 320.0
        half = 0.2 * min(width, height)
        return [[(cx - half, cy - half, cx + half, cy + half)]]
