from modelhub import onnx as onnx_models
from xlib import onnxruntime as lib_ort

from ._report import describe_process
from .BackendBase import BackendWorker


def cut(frame, rect):
    height, width = frame.shape[:2]
    left, top, right, bottom = (int(round(v)) for v in rect)
    left, top = max(0, left), max(0, top)
    right, bottom = min(width, max(left + 2, right)), min(height, max(top + 2, bottom))
    return frame[top:bottom, left:right]


class FaceMarkerWorker(BackendWorker):
    def on_start(self):
        self.marker = onnx_models.FaceMesh(lib_ort.get_cpu_device_info())

    def process(self, bcd):
        bcd["lmrks"] = self.marker.extract(cut(bcd["frame"], bcd["rect"]))
        return bcd

    def on_stop(self):
        self.send_msg("report", describe_process([self.marker._sess]))
