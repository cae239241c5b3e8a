from modelhub import onnx as onnx_models
from xlib import onnxruntime as lib_ort
from xlib.face import FRect
from xlib.image import ImageProcessor

from ._stage import StageMixin
from .BackendBase import BackendFaceSwapInfo, BackendWorker


class FaceDetectorWorker(StageMixin, BackendWorker):
    """YoloV5Face on the frame; the largest ``max_faces`` rects become the frame's faces."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)
        self.YoloV5Face = onnx_models.YoloV5Face(lib_ort.get_cpu_device_info())

    def process_bcd(self, bcd):
        state = self.get_state()
        frame_image_name = bcd.get_frame_image_name()
        frame_image = bcd.get_image(frame_image_name)
        if frame_image is None:
            return
        _, H, W, _ = ImageProcessor(frame_image).get_dims()
        rects = self.YoloV5Face.extract(frame_image, threshold=state.get("threshold", 0.5),
                                        fixed_window=state.get("fixed_window_size", 480))[0]
        rects = FRect.sort_by_area_size([FRect.from_ltrb((x0 / W, y0 / H, x1 / W, y1 / H)) for x0, y0, x1, y1 in rects])
        max_faces = state.get("max_faces", 1)
        if max_faces and len(rects) > max_faces:
            rects = rects[:max_faces]
        for face_urect in rects:
            if face_urect.get_area() != 0:
                fsi = BackendFaceSwapInfo()
                fsi.image_name = frame_image_name
                fsi.face_urect = face_urect
                bcd.add_face_swap_info(fsi)
