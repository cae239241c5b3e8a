from modelhub import onnx as onnx_models
from xlib import onnxruntime as lib_ort

from ._report import describe_process
from .BackendBase import BackendWorker


class FaceDetectorWorker(BackendWorker):
    def on_start(self):
        self.detector = onnx_models.YoloV5Face(lib_ort.get_cpu_device_info())

    def process(self, bcd):
        bcd["rect"] = self.detector.extract(bcd["frame"], threshold=0.5, fixed_window=480)[0][0]
        return bcd

    def on_stop(self):
        self.send_msg("report", describe_process([self.detector._sess]))
