"""dfl_perf.serve.model: one replica's DFM (tuned session, IOBinding, pooled buffers), no Ray."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
cv2 = pytest.importorskip("cv2")

from dfl_perf.facepipe.standin import build_dfm_standin, save_dfm_standin  # noqa: E402
from dfl_perf.serve.model import SwapModel  # noqa: E402
from tests.serve_harness import local_swap  # noqa: E402


@pytest.fixture(scope="module")
def standin_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("m") / "standin.dfm", resolution=64, cost="5ms", seed=4)


@pytest.fixture(scope="module")
def amp_path(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("m") / "amp.dfm", resolution=64, cost="5ms", morph=True, seed=5)


def _faces(n, res=64, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (n, res, res, 3), dtype=np.uint8)


def _reference(path, faces, morph=None):
    celeb, celeb_mask, face_mask = local_swap(path, faces, morph)
    return (np.stack([cv2.convertScaleAbs(c, alpha=255.0) for c in celeb]),
            np.rint(celeb_mask[..., 0] * 255), np.rint(face_mask[..., 0] * 255))


def test_swap_matches_the_local_swapper_quantised(standin_path):
    model = SwapModel(standin_path, "cpu", threads=1)
    try:
        faces = _faces(3)
        reply = model.swap(faces)
        celeb, cmask, fmask = _reference(standin_path, faces)
        assert np.abs(reply.celeb.astype(int) - celeb).max() <= 1
        assert np.abs(reply.celeb_mask.astype(int) - cmask).max() <= 1
        assert np.abs(reply.face_mask.astype(int) - fmask).max() <= 1
        assert model.describe()["resolution"] == 64 and model.can_batch
    finally:
        model.close()


def test_groups_share_one_run_and_each_gets_its_own_faces(standin_path):
    model = SwapModel(standin_path, "cpu", threads=1)
    try:
        groups = [(_faces(1, seed=1), None), (_faces(2, seed=2), None), (_faces(1, seed=3), None)]
        alone = [model.swap(faces) for faces, _ in groups]
        runs = model.runs
        together = model.swap_groups(groups)
        assert model.runs == runs + 1  # one model run for the four faces
        for a, b in zip(alone, together):
            for x, y in zip(a, b):
                assert x.shape == y.shape
                assert np.abs(x.astype(int) - y).max() <= 1
    finally:
        model.close()


def test_groups_with_different_morph_values_run_apart(amp_path):
    model = SwapModel(amp_path, "cpu", threads=1)
    try:
        faces = _faces(1, seed=7)
        low, high = model.swap_groups([(faces, 0.0), (faces, 1.0)])
        assert model.runs == 2
        assert not np.array_equal(low.celeb, high.celeb)
        assert np.array_equal(model.swap(faces, 1.0).celeb, high.celeb)
        assert np.array_equal(model.swap(faces).celeb, model.swap(faces, 0.75).celeb)  # DFL's default
    finally:
        model.close()


def test_a_fixed_batch_model_runs_one_face_at_a_time(tmp_path):
    proto = build_dfm_standin(resolution=64, cost="5ms", seed=4)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch axis fixed at 1
    path = tmp_path / "fixed.dfm"
    onnx.save(proto, str(path))
    model = SwapModel(str(path), "cpu", threads=1)
    try:
        assert not model.can_batch and model.describe()["batch_axis"] == 1
        faces = _faces(3)
        reply = model.swap_groups([(faces[:2], None), (faces[2:], None)])
        assert model.runs == 3
        for i in range(2):
            celeb, _, _ = _reference(str(path), faces[i:i + 1])
            assert np.abs(reply[0].celeb[i:i + 1].astype(int) - celeb).max() <= 1
    finally:
        model.close()
