"""The part of DFL's image helper that DFMModel.convert uses, written from its documented behaviour.

Images are kept as NHWC; resizing is bilinear (cv2.INTER_LINEAR) in the current dtype; uint8 -> float
is x / 255; float -> uint8 is x * 255 clipped to 0..255 and truncated; float -> uint8 scales the
array in place (as DFL does).
"""

import cv2
import numpy as np


class ImageProcessor:
    def __init__(self, img):
        if img.ndim == 2:
            img = img[np.newaxis, :, :, np.newaxis]
        elif img.ndim == 3:
            img = img[np.newaxis]
        elif img.ndim != 4:
            raise ValueError("img.ndim must be 2, 3 or 4, not %d" % img.ndim)
        self._img = img

    def get_dims(self):
        return self._img.shape

    def get_dtype(self):
        return self._img.dtype

    def resize(self, size):
        width, height = size
        n, h, w, c = self._img.shape
        if (w, h) != (width, height):
            planes = np.moveaxis(self._img, 0, 2).reshape(h, w, n * c)
            planes = cv2.resize(planes, (width, height), interpolation=cv2.INTER_LINEAR)
            self._img = np.moveaxis(planes.reshape(height, width, n, c), 2, 0)
        return self

    def ch(self, count):
        have = self._img.shape[3]
        if count < have:
            self._img = self._img[..., :count]
        elif count > have:
            self._img = np.repeat(self._img[..., :1], count, axis=3)
        return self

    def to_ufloat32(self):
        if self._img.dtype == np.uint8:
            self._img = self._img.astype(np.float32) / np.float32(255.0)
        return self

    def to_uint8(self):
        img = self._img
        if img.dtype in (np.float32, np.float64):
            img *= 255.0
            np.clip(img, 0, 255, out=img)
        self._img = img.astype(np.uint8)
        return self

    def to_dtype(self, dtype):
        if dtype == np.float32:
            return self.to_ufloat32()
        if dtype == np.uint8:
            return self.to_uint8()
        raise ValueError("unsupported dtype")

    def get_image(self, layout):
        if layout != "NHWC":
            raise ValueError("this stand-in only returns NHWC")
        return np.ascontiguousarray(self._img)
