"""facepipe.detector: YuNet decoding checked against OpenCV's FaceDetectorYN and the clip's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from dfl_perf.facepipe.clip import make_clip  # noqa: E402
from dfl_perf.facepipe.detector import Face, FaceDetector, box_iou, nms  # noqa: E402

YUNET_N = "yunet_n_320_320"  # shipped in the package; YuNet-s (640) is read from ../shared


@pytest.fixture(scope="module")
def astronaut(face_photo):
    return cv2.imread(str(face_photo))


@pytest.fixture(scope="module")
def _loaded():
    return {}


@pytest.fixture
def detector(real_model, _loaded):
    """name -> FaceDetector, loaded once per module."""
    def get(name):
        if name not in _loaded:
            _loaded[name] = FaceDetector(str(real_model(name)))
        return _loaded[name]
    return get


def _opencv_faces(model_file, frame, threshold=0.6):
    det = cv2.FaceDetectorYN.create(str(model_file), "", (frame.shape[1], frame.shape[0]), threshold, 0.3, 5000)
    det.setInputSize((frame.shape[1], frame.shape[0]))
    _, faces = det.detect(frame)
    if faces is None:
        return []
    return [(np.array([f[0], f[1], f[0] + f[2], f[1] + f[3]]), f[4:14].reshape(5, 2), f[14]) for f in faces]


def _check_photo(det, model_file, astronaut):
    ours = det.detect(astronaut)
    theirs = _opencv_faces(model_file, astronaut)
    assert len(ours) == len(theirs) == 1
    box, kps, score = theirs[0]
    assert box_iou(ours[0].box, box[None])[0] >= 0.9
    face_w = box[2] - box[0]
    assert np.abs(ours[0].keypoints - kps).max() < 0.06 * face_w
    assert abs(ours[0].score - score) < 0.05
    assert ours[0].keypoints.shape == (5, 2) and ours[0].keypoints.dtype == np.float32


def _check_identical_input(det, model_file):
    side = det.input_shape[3]
    clip = make_clip(size=(side, side), frames=20, faces=2, seed=5)
    for index in (0, 7, 14):
        ours = sorted(det.detect(clip[index]), key=lambda f: f.box[0])
        theirs = sorted(_opencv_faces(model_file, clip[index]), key=lambda t: t[0][0])
        assert len(ours) == len(theirs) == 2
        for face, (box, kps, score) in zip(ours, theirs):
            np.testing.assert_allclose(face.box, box, atol=0.05)
            np.testing.assert_allclose(face.keypoints, kps, atol=0.05)
            assert face.score == pytest.approx(score, abs=1e-4)


def _check_clip_frames(det, model_file, size):
    clip = make_clip(size=size, frames=40, faces=1, seed=3)
    scale = min(det.input_shape[3] / size[0], det.input_shape[2] / size[1])
    for index in (0, 13, 27):
        frame = clip[index]
        ours = det.detect(frame)
        small = cv2.resize(frame, (int(round(size[0] * scale)), int(round(size[1] * scale))),
                           interpolation=cv2.INTER_LINEAR)
        theirs = _opencv_faces(model_file, small)
        assert len(ours) == len(theirs) == 1, "frame %d: ours %d faces, OpenCV %d" % (index, len(ours), len(theirs))
        box, kps, _ = theirs[0]
        assert box_iou(ours[0].box, box[None] / scale)[0] >= 0.9, index
        assert np.abs(ours[0].keypoints - kps / scale).max() < 0.06 * (box[2] - box[0]) / scale


@pytest.mark.timeout(60)
def test_matches_opencv_on_the_photo(detector, real_model, astronaut):
    _check_photo(detector(YUNET_N), real_model(YUNET_N), astronaut)


@pytest.mark.timeout(60)
def test_decoding_equals_opencv_on_identical_input(detector, real_model):
    """A frame of exactly the model's input size reaches both unchanged: same boxes, points, scores."""
    _check_identical_input(detector(YUNET_N), real_model(YUNET_N))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [(640, 480), (1280, 720)])
def test_matches_opencv_on_clip_frames(size, detector, real_model):
    """Same pixels into both: OpenCV gets the frame scaled as our letterbox scales it (it runs the
    model at the image's own size, we at the model's declared size)."""
    _check_clip_frames(detector(YUNET_N), real_model(YUNET_N), size)


@pytest.mark.timeout(120)
def test_yunet_s_matches_opencv(detector, real_model, astronaut):
    """The same three checks with the bigger YuNet-s 640 (not shipped: read from ../shared)."""
    det, model_file = detector("yunet_s_640_640"), real_model("yunet_s_640_640")
    _check_photo(det, model_file, astronaut)
    _check_identical_input(det, model_file)
    for size in ((640, 480), (1280, 720)):
        _check_clip_frames(det, model_file, size)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size,faces", [((640, 480), 1), ((1280, 720), 1), ((1280, 720), 3)])
def test_follows_clip_ground_truth(size, faces, detector):
    clip = make_clip(size=size, frames=24, faces=faces, seed=1)
    errors = []
    for frame, truth in clip:
        found = detector(YUNET_N).detect(frame)
        assert len(found) == faces
        centres = np.array([f.center for f in found])
        for box in truth:
            errors.append(np.linalg.norm(centres - (box[:2] + box[2:]) / 2, axis=1).min())
    assert np.median(errors) < 5.0, "median centre error %.2f px" % np.median(errors)


@pytest.mark.timeout(60)
def test_preprocess_into_pooled_buffer_is_identical(detector):
    det = detector(YUNET_N)
    frame = make_clip(size=(1280, 720), frames=2)[1]
    fresh, scale = det.preprocess(frame)
    pooled = np.full(det.input_shape, 77.0, dtype=np.float32)  # dirty, as a reused buffer is
    blob, scale2 = det.preprocess(frame, out=pooled)
    assert blob is pooled and scale == scale2
    np.testing.assert_array_equal(fresh, pooled)
    assert (fresh[0, :, :180, :].max(axis=(0, 2)) > 0).all()  # 1280x720 -> 320x180: image in every row above
    assert fresh[0, :, 180:, :].max() == 0.0  # and only padding below
    with pytest.raises(ValueError, match=r"float32 \(1, 3, 320, 320\), got float32 \(1, 3, 640, 640\)"):
        det.preprocess(frame, out=np.zeros((1, 3, 640, 640), np.float32))
    with pytest.raises(ValueError, match="float32 .*, got float64"):
        det.preprocess(frame, out=np.zeros(det.input_shape, np.float64))


@pytest.mark.timeout(60)
def test_decode_takes_list_or_dict_and_matches_detect(detector, astronaut):
    det = detector(YUNET_N)
    blob, scale = det.preprocess(astronaut)
    outputs = det.session.run(None, {det.input_name: blob})
    by_name = dict(zip(det.output_names, outputs))
    a, b, c = det.decode(outputs, scale), det.decode(by_name, scale), det.detect(astronaut)
    assert [f.box for f in a] == [f.box for f in b] == [f.box for f in c]


@pytest.mark.timeout(60)
def test_accepts_session_and_registry_name(yunet_n, astronaut, monkeypatch):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(yunet_n), options, providers=["CPUExecutionProvider"])
    det = FaceDetector(session)
    assert det.session is session and det.input_shape == (1, 3, 320, 320)
    monkeypatch.delenv("DFL_PERF_MODEL_MIRROR", raising=False)  # the name resolves to the shipped file
    by_name = FaceDetector("yunet_n_320_320")
    assert by_name.detect(astronaut)[0].box == det.detect(astronaut)[0].box


def test_no_face_in_blank_frame(detector):
    assert detector(YUNET_N).detect(np.zeros((480, 640, 3), np.uint8)) == []


def test_bad_inputs_give_clear_errors(detector, tmp_path):
    det = detector(YUNET_N)
    with pytest.raises(ValueError, match="uint8"):
        det.detect(np.zeros((480, 640, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        det.detect(np.zeros((480, 640), np.uint8))
    with pytest.raises(FileNotFoundError, match="nothere.onnx"):
        FaceDetector(str(tmp_path / "nothere.onnx"))
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["out"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 64, 64])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ValueError, match="not a YuNet model.*cls_8"):
        FaceDetector(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]))


def test_nms_and_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.8, 0.9, 0.7, 0.95], np.float32)
    keep = nms(boxes, scores, 0.3)
    assert keep.tolist() == [3, 2]
    assert box_iou([0, 0, 10, 10], boxes[:1])[0] == pytest.approx(1.0)
    assert box_iou([0, 0, 10, 10], boxes[2:3])[0] == 0.0
    face = Face(box=(10.0, 20.0, 30.0, 60.0), score=0.9, keypoints=np.zeros((5, 2), np.float32))
    assert face.center == (20.0, 40.0) and face.width == 20.0 and face.height == 40.0
