"""Stand-in ``YoloV5Face`` with DFL's interface and per-frame CPU work around the model.

``extract`` does what DFL's wrapper does: fit the frame into the (window//32)*32 square (or pad to a
multiple of 64), float 0..1, NCHW, run, then decode the three stride outputs in numpy (sigmoid, a
grid per call, anchors), threshold, NMS at 0.5, and scale back. The model file is the stand-in's
(``standin_models.py``), found in ``DFL_STANDIN_MODELS``.
"""

import os
from pathlib import Path

import numpy as np
from xlib import math as lib_math
from xlib.image import ImageProcessor
from xlib.onnxruntime import InferenceSession_with_device, ORTDeviceInfo, get_available_devices_info

ANCHORS = (((4, 5), (8, 10), (13, 16)), ((23, 29), (43, 55), (73, 105)), ((146, 217), (231, 300), (335, 433)))


class YoloV5Face:
    @staticmethod
    def get_available_devices():
        return get_available_devices_info()

    def __init__(self, device_info: ORTDeviceInfo):
        if device_info not in YoloV5Face.get_available_devices():
            raise Exception("device_info %s is not in available devices for YoloV5Face" % device_info)
        path = Path(os.environ.get("DFL_STANDIN_MODELS", ".")) / "YoloV5Face.onnx"
        if not path.exists():
            raise FileNotFoundError("%s not found" % path)
        self._sess = sess = InferenceSession_with_device(str(path), device_info)
        self._input_name = sess.get_inputs()[0].name

    def extract(self, img, threshold=0.3, fixed_window=0, min_face_size=8, augment=False):
        """img HW/HWC/NHWC -> for each image a list of (l, t, r, b) in its pixels."""
        ip = ImageProcessor(img)
        _, height, width, _ = ip.get_dims()
        if height > 2048 or width > 2048:
            fixed_window = 2048
        if fixed_window != 0:
            fixed_window = max(32, max(1, fixed_window // 32) * 32)
            scale = ip.fit_in(fixed_window, fixed_window, pad_to_target=True, allow_upscale=False)
        else:
            ip.pad_to_next_divisor(64, 64)
            scale = 1.0
        ip.ch(3).to_ufloat32()
        _, height, width, _ = ip.get_dims()
        preds = self._get_preds(ip.get_image("NCHW"))
        if augment:
            mirrored = self._get_preds(ip.flip_horizontal().get_image("NCHW"))
            mirrored[:, :, 0] = width - mirrored[:, :, 0]
            preds = np.concatenate([preds, mirrored], 1)
        result = []
        for pred in preds:
            pred = pred[pred[..., 4] >= threshold]
            x, y, w, h, score = pred.T
            x0, y0, x1, y1 = x - w / 2, y - h / 2, x + w / 2, y + h / 2
            keep = lib_math.nms(x0, y0, x1, y1, score, 0.5)
            faces = []
            for left, top, right, bottom in np.stack([x0[keep], y0[keep], x1[keep], y1[keep]], -1):
                if scale != 1.0:  # numpy scalars, one by one (DFL's precision)
                    left, top, right, bottom = left / scale, top / scale, right / scale, bottom / scale
                if min(right - left, bottom - top) >= min_face_size:
                    faces.append((left, top, right, bottom))
            result.append(faces)
        return result

    def _get_preds(self, img):
        n, c, height, width = img.shape
        outputs = self._sess.run(None, {self._input_name: img})
        preds = []
        for out, anchors in zip(outputs, ANCHORS):
            out = out.reshape((n, c, 16, out.shape[-2], out.shape[-1])).transpose(0, 1, 3, 4, 2)[..., 0:5]
            preds.append(YoloV5Face.process_pred(out, width, height, anchors).reshape((n, -1, 5)))
        return np.concatenate(preds, 1)[..., :5]

    @staticmethod
    def process_pred(pred, img_w, img_h, anchor):
        grid_h, grid_w = pred.shape[-3], pred.shape[-2]
        anchor = np.float32(anchor)[None, :, None, None, :]
        xs, ys = np.meshgrid(np.arange(grid_w), np.arange(grid_h))
        grid = np.stack((xs, ys), 2).reshape((1, 1, grid_h, grid_w, 2)).astype(np.float32)
        stride = (img_w // grid_w, img_h // grid_h)
        pred[..., [0, 1, 2, 3, 4]] = YoloV5Face._np_sigmoid(pred[..., [0, 1, 2, 3, 4]])
        pred[..., 0:2] = (pred[..., 0:2] * 2 - 0.5 + grid) * stride
        pred[..., 2:4] = (pred[..., 2:4] * 2) ** 2 * anchor
        return pred

    @staticmethod
    def _np_sigmoid(x):
        x = -x
        over = x > np.log(np.finfo(x.dtype).max)
        x[over] = 0.0
        result = 1 / (1 + np.exp(x))
        result[over] = 0.0
        return result
