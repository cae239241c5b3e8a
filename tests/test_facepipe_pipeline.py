"""The facepipe steps composed both ways: the DFL way (plain calls, fresh arrays, one face per swap)
and the optimized way (pooled buffers, an IOBinding runner, all faces in one swap) give the same frames."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.buffers import DFMRunner  # noqa: E402
from dfl_perf.facepipe.align import align_matrix, warp_face  # noqa: E402
from dfl_perf.facepipe.clip import make_clip  # noqa: E402
from dfl_perf.facepipe.detector import FaceDetector  # noqa: E402
from dfl_perf.facepipe.merge import merge_face, merge_faces  # noqa: E402
from dfl_perf.facepipe.standin import build_dfm_standin  # noqa: E402

RES = 224
MAX_FACES = 4


def _run_bound(session, feeds, output_names):
    """A minimal IOBinding runner, standing in for the optimized path's own."""
    binding = session.io_binding()
    for name, value in feeds.items():
        binding.bind_cpu_input(name, value)
    for name in output_names:
        binding.bind_output(name)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()


def _dfl_way(frame, det, swapper):
    faces = det.detect(frame)
    out = frame
    crops = []
    for face in faces:
        M = align_matrix(face.keypoints, RES)
        crop = warp_face(frame, M, RES)
        crops.append(crop)
        swapped = swapper.run(crop)
        out = merge_face(out, swapped.celeb_face[0], swapped.celeb_face_mask[0] * swapped.face_mask[0], M)
    return faces, crops, out


class _Optimized:
    def __init__(self, det, swapper, frame_shape):
        self.det, self.swapper = det, DFMRunner(swapper.session)  # IOBinding into pooled buffers
        self.det_input = np.zeros(det.input_shape, np.float32)
        self.crops = np.zeros((MAX_FACES, RES, RES, 3), np.uint8)
        self.frame_out = np.zeros(frame_shape, np.uint8)

    def __call__(self, frame):
        det, swapper = self.det, self.swapper
        blob, scale = det.preprocess(frame, out=self.det_input)
        faces = det.decode(_run_bound(det.session, {det.input_name: blob}, det.output_names), scale)[:MAX_FACES]
        mats = [align_matrix(f.keypoints, RES) for f in faces]
        for i, M in enumerate(mats):
            warp_face(frame, M, RES, out=self.crops[i])
        n = len(faces)
        out = swapper.run(self.crops[:n])  # all faces in one run
        return faces, self.crops[:n], merge_faces(frame, out.celeb_face, out.celeb_face_mask * out.face_mask, mats,
                                                  out=self.frame_out)


@pytest.fixture(scope="module")
def parts(yunet_n):
    det = FaceDetector(str(yunet_n))
    swapper = DFMRunner(ort.InferenceSession(build_dfm_standin(RES, cost="5ms").SerializeToString(),
                                             providers=["CPUExecutionProvider"]), io_binding=False)
    return det, swapper


@pytest.mark.timeout(120)
def test_both_ways_give_the_same_frames(parts):
    det, swapper = parts
    clip = make_clip(size=(640, 480), frames=6, faces=2, seed=2)
    optimized = _Optimized(det, swapper, clip[0].shape)
    for frame, truth in clip:
        faces_a, crops_a, out_a = _dfl_way(frame, det, swapper)
        faces_b, crops_b, out_b = optimized(frame)
        assert len(faces_a) == len(faces_b) == len(truth) == 2
        assert [f.box for f in faces_a] == [f.box for f in faces_b]
        np.testing.assert_array_equal(np.stack(crops_a), crops_b)
        # per-face vs batched convolutions may differ in the last float bits: at most one level after rounding
        assert np.abs(out_a.astype(int) - out_b.astype(int)).max() <= 1
        assert (out_a != frame).any()


@pytest.mark.timeout(120)
def test_tuned_sessions_agree(parts, yunet_n):
    det, swapper = parts
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    tuned_det = FaceDetector(ort.InferenceSession(str(yunet_n), options,
                                                  providers=["CPUExecutionProvider"]))
    tuned_swap = DFMRunner(ort.InferenceSession(build_dfm_standin(RES, cost="5ms").SerializeToString(), options,
                                                providers=["CPUExecutionProvider"]), io_binding=False)
    clip = make_clip(size=(1280, 720), frames=3, faces=1, seed=4)
    optimized = _Optimized(tuned_det, tuned_swap, clip[0].shape)
    for frame, _ in clip:
        faces_a, _, out_a = _dfl_way(frame, det, swapper)
        faces_b, _, out_b = optimized(frame)
        np.testing.assert_allclose([f.box for f in faces_a], [f.box for f in faces_b], atol=0.05)
        assert np.abs(out_a.astype(int) - out_b.astype(int)).max() <= 2
