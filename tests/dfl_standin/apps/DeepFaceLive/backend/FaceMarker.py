from modelhub import onnx as onnx_models
from xlib import onnxruntime as lib_ort
from xlib.face import ELandmarks2D, FLandmarks2D, FPose
from xlib.image import ImageProcessor

from ._stage import StageMixin
from .BackendBase import BackendWorker


class FaceMarkerWorker(StageMixin, BackendWorker):
    """Google FaceMesh on a 192 cut of each face rect: 468 landmarks and a pose per face."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)
        self.google_facemesh = onnx_models.FaceMesh(lib_ort.get_cpu_device_info())

    def process_bcd(self, bcd):
        coverage = self.get_state().get("marker_coverage", 1.4)
        frame_image = bcd.get_image(bcd.get_frame_image_name())
        if frame_image is None:
            return
        for fsi in bcd.get_face_swap_info_list():
            if fsi.face_urect is None:
                continue
            face_image, face_uni_mat = fsi.face_urect.cut(frame_image, coverage, 192)
            _, H, W, _ = ImageProcessor(face_image).get_dims()
            lmrks = self.google_facemesh.extract(face_image)[0]
            fsi.face_pose = FPose.from_3D_468_landmarks(lmrks)
            lmrks = lmrks[..., 0:2] / (W, H)
            fsi.face_ulmrks = FLandmarks2D.create(ELandmarks2D.L468, lmrks).transform(face_uni_mat, invert=True)
