"""dfl_perf.adapters.deepfacelive.merger / merge_ops against DFL's CPU merge.

The reference is the stand-in's ``FaceMergerWorker._merge_on_cpu`` (tests/dfl_standin), which
follows DFL's merge at fc7b787 step by step. "Same picture" is what the issue asks: at most a few
levels apart once both are uint8 (DFL's own conversion for the reference). On OpenCV 4.x (DFL's
pinned 4.8) the fast merge is bit-exact; OpenCV 5's float warps differ in the last bits.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfl_perf.adapters.deepfacelive import merge_ops
from dfl_perf.adapters.deepfacelive.config import DFLConfig
from dfl_perf.adapters.deepfacelive.merger import MergeOptions, NotCovered, merge_face

STANDIN = Path(__file__).resolve().parent / "dfl_standin"
W, H, R = 640, 480, 224
LEVELS = 2  # the most two uint8 results may differ by (the issue allows 1-3)


@pytest.fixture(scope="module")
def dfl():
    """The stand-in DFL's merger and image helpers, importable for this module's tests."""
    sys.path.insert(0, str(STANDIN))
    try:
        from apps.DeepFaceLive.backend.BackendBase import (
            BackendConnectionData,
            BackendFaceSwapInfo,
            BackendWeakHeap,
            BackendWorkerState,
        )
        from apps.DeepFaceLive.backend.FaceMerger import DEFAULTS, FaceMergerWorker
        from xlib.image import ImageProcessor
        from xlib.math import Affine2DUniMat

        yield {"worker": FaceMergerWorker, "defaults": DEFAULTS, "ip": ImageProcessor, "uni": Affine2DUniMat,
               "bcd": BackendConnectionData, "fsi": BackendFaceSwapInfo, "heap": BackendWeakHeap,
               "state": BackendWorkerState}
    finally:
        sys.path.remove(str(STANDIN))
        for name in [n for n in sys.modules if n.split(".")[0] in ("xlib", "modelhub", "apps")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    yy, xx = np.mgrid[0:R, 0:R]
    ellipse = ((((xx - 112) / 80.0) ** 2 + ((yy - 112) / 95.0) ** 2) < 1).astype(np.uint8) * 255
    smooth = lambda a: cv2.GaussianBlur(a, (0, 0), 3)  # noqa: E731
    return {
        "frame": rng.randint(0, 256, (H, W, 3)).astype(np.uint8),
        "align": smooth(rng.randint(0, 256, (R, R, 3)).astype(np.uint8)),
        "swap": smooth(rng.randint(0, 256, (R, R, 3)).astype(np.uint8)),
        "align_mask": ellipse[..., None].copy(),
        "swap_mask": cv2.GaussianBlur(ellipse, (0, 0), 5)[..., None],
        "lmrks_mask": np.roll(ellipse, 10, 0)[..., None],
    }


def _worker(dfl, **options):
    worker = dfl["worker"].__new__(dfl["worker"])
    worker._state = dfl["state"](dict(dfl["defaults"], **options))
    return worker


def _matrix(dfl, cx, cy, side, rotation=0.0, x_offset=0.0, y_offset=0.0, scale=1.0):
    """DFL's aligned-to-frame matrix for a face square at (cx, cy) of the frame, as FaceMerger builds it."""
    c, s = np.cos(rotation), np.sin(rotation)
    corners = np.float32([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5]]) @ np.float32([[c, s], [-s, c]]) * side
    corners = corners * np.float32([H / W, 1]) + np.float32([cx, cy])
    uni = dfl["uni"].from_3_pairs(corners, np.float32([[0, 0], [1, 0], [1, 1]]))
    mat = uni.invert().source_translated(-x_offset, -y_offset).source_scaled_around_center(scale, scale)
    return mat.to_exact_mat(R, R, W, H)


def _dfl_uint8(dfl, merged):
    return dfl["ip"](merged.copy()).to_uint8().get_image("HWC")


def _both(dfl, images, mat, last=True, **options):
    worker = _worker(dfl, **options)
    args = (R, images["align"], images["align_mask"], images["lmrks_mask"], images["swap"], images["swap_mask"], mat, W, H)
    ref = worker._merge_on_cpu(images["frame"], *args, last)
    got = merge_face(images["frame"].copy(), *args, last, MergeOptions.from_state(worker._state))
    return ref, got


OPTION_GRID = [
    {}, {"interpolation": "bicubic"}, {"interpolation": "lanczos4"}, {"color_transfer": "none"},
    {"face_mask_erode": -10}, {"face_mask_erode": 0, "face_mask_blur": 0}, {"face_mask_erode": 30, "face_mask_blur": 90},
    {"face_mask_source": False, "face_mask_celeb": False}, {"face_mask_source": False},
    {"face_mask_lmrks": True}, {"face_opacity": 0.4}, {"color_compression": 0}, {"color_compression": 60.5},
    {"color_compression": 127}, {"interpolation": "lanczos4", "face_opacity": 0.7, "face_mask_lmrks": True},
]
GEOMETRY = {
    "centred": dict(cx=0.5, cy=0.45, side=0.35),
    "rotated": dict(cx=0.5, cy=0.5, side=0.5, rotation=0.4),
    "offset and scaled": dict(cx=0.45, cy=0.5, side=0.4, x_offset=0.1, y_offset=-0.05, scale=1.3),
    "partly outside (corner)": dict(cx=0.05, cy=0.1, side=0.4, rotation=0.2),
    "partly outside (bottom right)": dict(cx=0.9, cy=0.95, side=0.6, rotation=-0.3),
    "outside": dict(cx=1.4, cy=0.5, side=0.3),
}


@pytest.mark.parametrize("options", OPTION_GRID, ids=lambda o: ",".join("%s=%s" % kv for kv in o.items()) or "defaults")
@pytest.mark.parametrize("where", list(GEOMETRY))
def test_fast_merge_is_dfls_picture(dfl, images, options, where):
    ref, got = _both(dfl, images, _matrix(dfl, **GEOMETRY[where]), **options)
    want = _dfl_uint8(dfl, ref)
    assert got.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(want.astype(int) - got)
    assert diff.max() <= LEVELS, (diff.max(), int((diff > 0).sum()))
    if cv2.__version__.startswith("4."):  # DFL's pinned OpenCV: the same pixels
        assert diff.max() == 0


def test_a_merge_that_is_not_the_last_face_stays_float32(dfl, images):
    mat = _matrix(dfl, **GEOMETRY["rotated"])
    ref, got = _both(dfl, images, mat, last=False)
    assert got.dtype == np.float32 and np.abs(ref - got).max() < 1e-5
    worker = _worker(dfl)
    args = (R, images["align"], images["align_mask"], images["lmrks_mask"], images["swap"], images["swap_mask"], mat, W, H)
    float_out = merge_face(images["frame"].copy(), *args, True, MergeOptions.from_state(worker._state), uint8_out=False)
    assert float_out.dtype == np.float32  # merged_uint8=False: float32 to the end, as DFL
    assert np.abs(worker._merge_on_cpu(images["frame"], *args, True) - float_out).max() < 1e-5


def _frame_with_faces(dfl, images, heap, faces):
    """A frame as FaceMerger receives it: the frame and each face's images on the heap."""
    bcd = dfl["bcd"](uid=1)
    bcd.assign_weak_heap(heap)
    bcd.set_frame_image_name("frame_1")
    bcd.set_image("frame_1", images["frame"])
    for i, (uni_mat, swapped) in enumerate(faces):
        fsi = dfl["fsi"]()
        fsi.face_resolution = R
        fsi.image_to_align_uni_mat = uni_mat
        fsi.face_align_image_name = "f%d_aligned" % i
        fsi.face_align_lmrks_mask_name = "f%d_lmrks" % i
        bcd.set_image(fsi.face_align_image_name, images["align"])
        bcd.set_image(fsi.face_align_lmrks_mask_name, images["lmrks_mask"])
        if swapped:
            fsi.face_align_mask_name = "f%d_mask" % i
            fsi.face_swap_image_name = "f%d_swapped" % i
            fsi.face_swap_mask_name = "f%d_swapped_mask" % i
            bcd.set_image(fsi.face_align_mask_name, images["align_mask"])
            bcd.set_image(fsi.face_swap_image_name, images["swap"])
            bcd.set_image(fsi.face_swap_mask_name, images["swap_mask"])
        bcd.add_face_swap_info(fsi)
    return bcd


def _uni(dfl, cx, cy, side, rotation=0.0):
    c, s = np.cos(rotation), np.sin(rotation)
    corners = np.float32([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5]]) @ np.float32([[c, s], [-s, c]]) * side
    corners = corners * np.float32([H / W, 1]) + np.float32([cx, cy])
    return dfl["uni"].from_3_pairs(corners, np.float32([[0, 0], [1, 0], [1, 1]]))  # frame -> aligned face


@pytest.mark.parametrize("faces", [
    [(0.3, 0.5, 0.4, 0.1, True), (0.7, 0.45, 0.35, -0.2, True)],            # two faces, overlapping squares
    [(0.3, 0.5, 0.4, 0.0, True), (0.75, 0.5, 0.3, 0.0, False)],             # the last face not swapped: no compression
    [(0.2, 0.3, 0.3, 0.0, True), (0.5, 0.5, 0.3, 0.3, True), (0.05, 0.9, 0.5, 0.0, True)],
    [],                                                                     # no face: no merged image
], ids=["two", "last-not-swapped", "three-one-outside", "no-face"])
def test_several_faces_through_dfls_frame_loop(dfl, images, faces, monkeypatch):
    from dfl_perf.adapters.deepfacelive._hooks import Patcher
    from dfl_perf.adapters.deepfacelive.merger import patch_merger_class

    heap = dfl["heap"](size_mb=64)
    uni = [(_uni(dfl, cx, cy, side, rot), swapped) for cx, cy, side, rot, swapped in faces]
    worker = _worker(dfl)
    plain = _frame_with_faces(dfl, images, heap, uni)
    made = worker.merge_frame(plain)
    patcher = Patcher()
    patch_merger_class(sys.modules["apps.DeepFaceLive.backend.FaceMerger"], patcher, DFLConfig())
    try:
        fast = _frame_with_faces(dfl, images, heap, uni)
        assert worker.merge_frame(fast) is made
    finally:
        patcher.restore()
    if not faces:
        assert not made and fast.get_merged_image_name() is None
        return
    want = _dfl_uint8(dfl, plain.get_image(plain.get_merged_image_name()))
    got = fast.get_image(fast.get_merged_image_name())
    assert got.dtype == (np.uint8 if faces[-1][4] else np.float32)
    got = got if got.dtype == np.uint8 else _dfl_uint8(dfl, got)
    assert np.abs(want.astype(int) - got).max() <= LEVELS


def test_options_the_fast_merge_does_not_cover_run_dfls_merge(dfl, images, caplog):
    from dfl_perf.adapters.deepfacelive._hooks import Patcher
    from dfl_perf.adapters.deepfacelive.merger import patch_merger_class

    cls = dfl["worker"]
    original = cls._merge_on_cpu
    patcher = Patcher()
    patch_merger_class(sys.modules[cls.__module__], patcher, DFLConfig())
    try:
        assert cls._merge_on_cpu is not original and cls._merge_on_cpu.dfl_perf_original is original
        mat = _matrix(dfl, **GEOMETRY["centred"])
        args = (R, images["align"], images["align_mask"], images["lmrks_mask"], images["swap"], images["swap_mask"],
                mat, W, H, True)
        with pytest.raises(NotCovered, match="interpolation"):
            MergeOptions.from_state(_worker(dfl, interpolation="area")._state)
        grey = images["frame"][..., 0].copy()  # not HW3: DFL's merge handles it its own way
        for worker, frame in ((_worker(dfl, face_mask_blur=150), images["frame"]), (_worker(dfl), grey)):
            try:
                want = original(worker, frame, *args)
            except Exception as exc:  # DFL's own merge fails on it: so must the patched one, the same way
                with pytest.raises(type(exc)):
                    worker._merge_on_cpu(frame, *args)
            else:
                got = worker._merge_on_cpu(frame, *args)
                assert got.dtype == want.dtype == np.float32  # DFL's path (float32), not the fast one (uint8)
                assert np.array_equal(np.nan_to_num(want), np.nan_to_num(got))
    finally:
        patcher.restore()
    assert cls._merge_on_cpu is original


@pytest.mark.parametrize("erode, blur, size", [(5, 25, 224), (0, 0, 224), (-12, 40, 224), (40, 0, 128),
                                               (3, 400, 224), (7, 200, 64), (-400, 10, 96)])
def test_erode_blur_on_a_small_pad_equals_dfls(dfl, erode, blur, size):
    rng = np.random.RandomState(size)
    mask = cv2.GaussianBlur((rng.rand(size, size) > 0.3).astype(np.float32), (0, 0), 4)
    want = dfl["ip"](mask.copy()).erode_blur(erode, blur, fade_to_border=True).get_image("HW")
    got = merge_ops.erode_blur(mask, erode, blur)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6


@pytest.mark.parametrize("interpolation", [cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_LANCZOS4])
def test_warp_of_a_rectangle_equals_the_full_warp(interpolation):
    rng = np.random.RandomState(3)
    src = cv2.GaussianBlur(rng.rand(224, 224, 3).astype(np.float32), (0, 0), 2)
    for angle, rect in itertools.product((0.0, 0.3, -1.1), ((150, 80, 500, 420), (0, 0, 37, 53), (600, 400, 640, 480))):
        mat = np.float32([[1.3 * np.cos(angle), -1.3 * np.sin(angle), 200.4], [1.3 * np.sin(angle), 1.3 * np.cos(angle), 100.7]])
        full = cv2.warpAffine(src, mat, (640, 480), flags=interpolation)
        part = merge_ops.warp_rect(src, mat.astype(np.float64), rect, interpolation)
        x0, y0, x1, y1 = rect
        assert np.abs(full[y0:y1, x0:x1] - part).max() <= 1e-4


def test_the_uint8_table_is_dfls_float_path():
    levels = np.arange(256, dtype=np.uint8)
    for value, opacity in itertools.product((0.0, 1.0, 33.3, 123.0, 127.0), (1.0, 0.25)):
        frame = levels.astype(np.float32)
        frame /= np.float32(255.0)
        if value != 0:
            c = max(4, 127.0 - value)
            frame *= c
            np.floor(frame, out=frame)
            frame /= c
            frame += 2.0 / c
        frame *= 255.0
        np.clip(frame, 0, 255, out=frame)
        assert np.array_equal(merge_ops.compression_lut(value, opacity), frame.astype(np.uint8))


def test_frame_rect_covers_every_pixel_the_warped_mask_reaches():
    rng = np.random.RandomState(5)
    for _ in range(20):
        mask = np.zeros((R, R), np.float32)
        x0, y0 = rng.randint(0, R // 2, 2)
        mask[y0:y0 + rng.randint(4, R // 2), x0:x0 + rng.randint(4, R // 2)] = 1.0
        angle, scale = rng.uniform(-3, 3), rng.uniform(0.3, 3)
        mat = np.float64([[scale * np.cos(angle), -scale * np.sin(angle), rng.uniform(-200, 700)],
                          [scale * np.sin(angle), scale * np.cos(angle), rng.uniform(-200, 600)]])
        full = cv2.warpAffine(mask, mat, (W, H))
        rect = merge_ops.frame_rect(merge_ops.support(mask > 0), mat, W, H)
        if rect is None:
            assert not full.any()
            continue
        inside = np.zeros_like(full, bool)
        inside[rect[1]:rect[3], rect[0]:rect[2]] = True
        assert not full[~inside].any()
