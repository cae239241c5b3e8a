"""facepipe.landmarks: FaceMesh (468) and Peppa (68) on a real face, checked against YuNet's keypoints.

The accuracy tests need the real models (read from ../shared); the input, pooling and error checks run
on models of the same shapes built with onnx."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")

from onnx_models import landmark_shaped_model  # noqa: E402

from dfl_perf.facepipe.detector import FaceDetector  # noqa: E402
from dfl_perf.facepipe.landmarks import FaceMeshLandmarker, PeppaLandmarker, crop_matrix  # noqa: E402

CLASSES = {"facemesh": FaceMeshLandmarker, "peppa": PeppaLandmarker}


def _five(points):
    """Eyes, nose tip, mouth corners (YuNet's order) from a 468- or 68-point set."""
    if len(points) == 468:
        return np.stack([points[[33, 133]].mean(0), points[[362, 263]].mean(0), points[1], points[61], points[291]])
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


@pytest.fixture(scope="module")
def scene(face_photo, yunet_n):
    image = cv2.imread(str(face_photo))
    turn = cv2.getRotationMatrix2D((224, 118), 25, 1.1)
    frame = cv2.warpAffine(image, turn, (512, 512))
    face = FaceDetector(str(yunet_n)).detect(frame)[0]
    return frame, face


@pytest.fixture(scope="module")
def markers(shared_models):
    """The real landmarkers (../shared)."""
    return {"facemesh": FaceMeshLandmarker(str(shared_models / "facemesh_468.onnx")),
            "peppa": PeppaLandmarker(str(shared_models / "peppa_slim_160_68pt.onnx"))}


@pytest.fixture(scope="module")
def shaped():
    """Landmarkers on onnx-built models of the real ones' shapes (not landmarkers: for the plumbing)."""
    return {name: cls(_session(landmark_shaped_model(name))) for name, cls in CLASSES.items()}


def _session(model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,count", [("facemesh", 468), ("peppa", 68)])
def test_points_agree_with_detector_keypoints(name, count, markers, scene):
    frame, face = scene
    marks = markers[name].detect(frame, face)
    assert marks.points.shape == (count, 2) and marks.points.dtype == np.float32
    error = np.linalg.norm(_five(marks.points) - face.keypoints, axis=1).mean() / face.width
    assert error < 0.1, error
    upright = type(markers[name])(markers[name].session, rotate=False).detect(frame, face.box)
    assert np.linalg.norm(_five(upright.points) - face.keypoints, axis=1).mean() / face.width < 0.12


def test_facemesh_score_separates_face_from_background(markers, scene):
    frame, face = scene
    assert markers["facemesh"].detect(frame, face).score > 0.99
    assert markers["facemesh"].detect(frame, (380, 300, 500, 420)).score < 0.1
    assert markers["facemesh"].detect(frame, face).depth.shape == (468,)


@pytest.mark.parametrize("name", ["facemesh", "peppa"])
def test_pooled_input_is_identical(name, shaped, scene):
    frame, face = scene
    marker = shaped[name]
    fresh, M = marker.preprocess(frame, face)
    buf = np.full(marker.input_shape, 3.0, np.float32)
    blob, M2 = marker.preprocess(frame, face, out=buf)
    assert blob is buf
    np.testing.assert_array_equal(buf, fresh)
    np.testing.assert_array_equal(M, M2)
    a = marker.decode(marker.run(buf), M2).points
    np.testing.assert_array_equal(a, marker.detect(frame, face).points)
    assert len(marker.detect_many(frame, [face, face])) == 2


def test_crop_matrix_centres_and_scales():
    M = crop_matrix((100, 100, 200, 180), 192, 1.5)
    centre = M[:, :2] @ [150, 140] + M[:, 2]
    np.testing.assert_allclose(centre, [96, 96])
    assert M[0, 0] == pytest.approx(192 / 150)


def test_wrong_model_and_inputs(shaped, scene):
    frame, face = scene
    peppa = _session(landmark_shaped_model("peppa"))
    with pytest.raises(ValueError, match=r"FaceMeshLandmarker needs one input \[1,3,192,192\] \('input_1'\), "
                                         r"got \[\('input1', \[1, 3, 160, 160\]\)\]"):
        FaceMeshLandmarker(peppa)
    with pytest.raises(ValueError, match="uint8"):
        shaped["peppa"].detect(frame.astype(np.float32), face)
    with pytest.raises(ValueError, match="Face or an"):
        shaped["peppa"].detect(frame, (1, 2, 3))
