"""DFL's ``ImageProcessor``: the operations its live pipeline uses, written from their documented behaviour.

Images are held as NHWC. uint8 -> float is ``x / 255`` in float32; float -> uint8 is ``x * 255``
clipped and truncated, scaling a float image in place (as DFL does). ``resize``/``warp_affine``
fold N and C into OpenCV's channel axis; ``erode_blur`` pads the mask by its own size on every side;
``rct`` is Reinhard colour transfer in Lab with statistics over the whole image, pixels under the
mask cut-off set to zero.
"""

from enum import IntEnum

import cv2
import numexpr as ne
import numpy as np


class ImageProcessor:
    class Interpolation(IntEnum):
        NEAREST = 0
        LINEAR = 1
        CUBIC = 2
        LANCZOS4 = 4

    def __init__(self, img, copy=False):
        if copy:
            img = img.copy()
        if img.ndim == 2:
            img = img[None, :, :, None]
        elif img.ndim == 3:
            img = img[None]
        elif img.ndim != 4:
            raise ValueError("img.ndim must be 2,3,4, not %d." % img.ndim)
        self._img = img

    # ------------------------------------------------------------------ info and layout
    def get_dims(self):
        return self._img.shape

    def get_dtype(self):
        return self._img.dtype

    def get_image(self, format):
        format = format.upper()
        img = self._img
        index = tuple(slice(None) if axis in format else 0 for axis in "NHWC")
        img = img[index]
        kept = "".join(axis for axis in "NHWC" if axis in format)
        if kept != format:
            img = img.transpose([kept.index(axis) for axis in format])
        return np.ascontiguousarray(img)

    def ch(self, count):
        have = self._img.shape[3]
        if count <= 0:
            raise ValueError("channels must be positive value, not %d" % count)
        if count > have:
            self._img = np.repeat(self._img[..., :1], count, -1)
        elif count < have:
            self._img = self._img[..., :count]
        return self

    def _planes(self):
        n, h, w, c = self._img.shape
        return self._img.transpose((1, 2, 0, 3)).reshape((h, w, n * c)), n, c

    def _from_planes(self, planes, n, c):
        h, w = planes.shape[:2]
        self._img = planes.reshape((h, w, n, c)).transpose((2, 0, 1, 3))

    # ------------------------------------------------------------------ dtype
    def as_float32(self):
        self._img = self._img.astype(np.float32)
        return self

    def to_ufloat32(self, as_tanh=False, from_tanh=False):
        if self._img.dtype == np.uint8:
            self._img = self._img.astype(np.float32)
            if as_tanh:
                self._img /= 127.5
                self._img -= 1.0
            else:
                self._img /= 255.0
        elif self._img.dtype in (np.float32, np.float64) and from_tanh:
            self._img += 1.0
            self._img /= 2.0
        return self

    def to_uint8(self, from_tanh=False):
        img = self._img
        if img.dtype in (np.float32, np.float64):
            if from_tanh:
                img += 1.0
                img /= 2.0
            img *= 255.0
            np.clip(img, 0, 255, out=img)
        self._img = img.astype(np.uint8, copy=False)
        return self

    def to_dtype(self, dtype, from_tanh=False):
        if dtype == np.float32:
            return self.to_ufloat32(from_tanh=from_tanh)
        if dtype == np.uint8:
            return self.to_uint8(from_tanh=from_tanh)
        raise ValueError("unsupported dtype")

    # ------------------------------------------------------------------ geometry
    def resize(self, size, interpolation=None):
        width, height = size
        _, h, w, _ = self._img.shape
        if (w, h) != (width, height):
            planes, n, c = self._planes()
            flag = _CV_INTER[interpolation if interpolation is not None else ImageProcessor.Interpolation.LINEAR]
            self._from_planes(cv2.resize(planes, (width, height), interpolation=flag).reshape((height, width, n * c)), n, c)
        return self

    def fit_in(self, TW=None, TH=None, pad_to_target=False, allow_upscale=False, interpolation=None):
        _, h, w, _ = self._img.shape
        if TW is not None and TH is None:
            scale = TW / w
        elif TW is None and TH is not None:
            scale = TH / h
        elif TW is not None and TH is not None:
            sw, sh = w / TW, h / TH
            scale = 1.0
            if sw > 1.0 or sh > 1.0 or (sw < 1.0 and sh < 1.0):
                scale /= max(sw, sh)
        else:
            raise ValueError("TW or TH should be specified")
        if not allow_upscale and scale > 1.0:
            scale = 1.0
        if scale != 1.0:
            planes, n, c = self._planes()
            planes = cv2.resize(planes, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
            h, w = planes.shape[:2]
            self._from_planes(planes.reshape((h, w, n * c)), n, c)
        if pad_to_target:
            pad_w = (TW - w) if TW is not None else 0
            pad_h = (TH - h) if TH is not None else 0
            if pad_w or pad_h:
                self._img = np.pad(self._img, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        return scale

    def pad_to_next_divisor(self, dw=None, dh=None):
        _, h, w, _ = self._img.shape
        pad_w = (-w) % dw if dw else 0
        pad_h = (-h) % dh if dh else 0
        if pad_w or pad_h:
            self._img = np.pad(self._img, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        return self

    def warp_affine(self, mat, out_width, out_height, interpolation=None):
        planes, n, c = self._planes()
        flag = _CV_INTER[interpolation if interpolation is not None else ImageProcessor.Interpolation.LINEAR]
        planes = cv2.warpAffine(planes, mat, (out_width, out_height), flags=flag)
        self._from_planes(planes.reshape((out_height, out_width, n * c)), n, c)
        return self

    def flip_horizontal(self):
        self._img = self._img[:, :, ::-1, :]
        return self

    # ------------------------------------------------------------------ values
    def clip2(self, low_check, low_val, high_check, high_val):
        img = self._img
        low, high = img < low_check, img > high_check
        img[low] = low_val
        img[high] = high_val
        return self

    def erode_blur(self, erode, blur, fade_to_border=False):
        erode, blur = int(erode), int(blur)
        planes, n, c = self._planes()
        h, w = planes.shape[:2]
        planes = np.pad(planes, ((h, h), (w, w), (0, 0)))
        if erode != 0:
            kernel = np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
            morph = cv2.erode if erode > 0 else cv2.dilate
            planes = morph(planes, kernel, iterations=max(1, abs(erode) // 2))
        if fade_to_border:
            band_h, band_w = h + blur // 2, w + blur // 2
            planes[:band_h, :] = 0
            planes[-band_h:, :] = 0
            planes[:, :band_w] = 0
            planes[:, -band_w:] = 0
        if blur > 0:
            planes = cv2.GaussianBlur(planes, (0, 0), blur * 0.125 * 2)
        self._from_planes(planes[h:-h, w:-w].reshape((h, w, n * c)), n, c)
        return self

    def median_blur(self, size, opacity=1.0, mask=None):
        size = max(1, size + 1 if size % 2 == 0 else size)
        opacity = min(1, max(0, opacity))
        if opacity == 0:
            return self
        dtype = self.get_dtype()
        self.to_ufloat32()
        planes, n, c = self._planes()
        blurred = cv2.medianBlur(planes, size).reshape(planes.shape)
        planes = ne.evaluate("planes*(one-opacity) + blurred*opacity",
                             local_dict={"planes": planes, "blurred": blurred, "one": np.float32(1.0),
                                         "opacity": opacity})
        np.clip(planes, 0, 1, out=planes)
        self._from_planes(planes.reshape(planes.shape[:2] + (n * c,)), n, c)
        self.to_dtype(dtype)
        return self

    def reresize(self, power, interpolation=None, mask=None):
        power = min(1, max(0, power))
        if power == 0:
            return self
        flag = _CV_INTER[interpolation if interpolation is not None else ImageProcessor.Interpolation.LINEAR]
        planes, n, c = self._planes()
        h, w = planes.shape[:2]
        small = cv2.resize(planes, (max(4, int(w * (1.0 - power))), max(4, int(h * (1.0 - power)))), interpolation=flag)
        self._from_planes(cv2.resize(small, (w, h), interpolation=flag).reshape((h, w, n * c)), n, c)
        return self

    # ------------------------------------------------------------------ colour
    def _cvt(self, code):
        n, h, w, c = self._img.shape
        if c != 3:
            raise Exception("Image channels must be == 3")
        self._img = cv2.cvtColor(self._img.reshape((n * h, w, c)), code).reshape((n, h, w, c))
        return self

    def to_lab(self):
        return self._cvt(cv2.COLOR_BGR2LAB)

    def from_lab(self):
        return self._cvt(cv2.COLOR_LAB2BGR)

    def rct(self, like, mask=None, like_mask=None, mask_cutoff=0.5):
        dtype = self.get_dtype()
        self.to_ufloat32().to_lab()
        like_lab = ImageProcessor(like).to_ufloat32().to_lab().get_image("NHWC")
        if like_mask is not None:
            cut = ImageProcessor(like_mask).to_ufloat32().ch(1).get_image("NHW")
            like_lab = like_lab.copy()
            like_lab[cut < mask_cutoff] = [0, 0, 0]
        img = stats_img = self._img
        if mask is not None:
            cut = ImageProcessor(mask).to_ufloat32().ch(1).get_image("NHW")
            stats_img = stats_img.copy()
            stats_img[cut < mask_cutoff] = [0, 0, 0]
        channels = []
        for i, (low, high) in enumerate(((0, 100), (-127, 127), (-127, 127))):
            terms = {"x": img[..., i],
                     "src_mean": stats_img[..., i].mean((1, 2), keepdims=True),
                     "src_std": stats_img[..., i].std((1, 2), keepdims=True),
                     "dst_mean": like_lab[..., i].mean((1, 2), keepdims=True),
                     "dst_std": like_lab[..., i].std((1, 2), keepdims=True)}
            x = ne.evaluate("(x - src_mean) * dst_std / src_std + dst_mean", local_dict=terms)
            np.clip(x, low, high, out=x)
            channels.append(x)
        self._img = np.stack(channels, -1)
        self.from_lab()
        self.to_dtype(dtype)
        return self


_CV_INTER = {
    ImageProcessor.Interpolation.NEAREST: cv2.INTER_NEAREST,
    ImageProcessor.Interpolation.LINEAR: cv2.INTER_LINEAR,
    ImageProcessor.Interpolation.CUBIC: cv2.INTER_CUBIC,
    ImageProcessor.Interpolation.LANCZOS4: cv2.INTER_LANCZOS4,
}
