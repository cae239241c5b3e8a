# imports every backend module eagerly (and through them modelhub.onnx -> onnxruntime, onnx), as DFL does
from .BackendBase import BackendConnection, BackendWorker
from .FaceDetector import FaceDetectorWorker
from .FaceMarker import FaceMarkerWorker
from .FaceSwapDFM import FaceSwapDFMWorker
from .FileSource import FileSourceWorker
from .StreamOutput import StreamOutputWorker

__all__ = ["BackendConnection", "BackendWorker", "FaceDetectorWorker", "FaceMarkerWorker", "FaceSwapDFMWorker",
           "FileSourceWorker", "StreamOutputWorker"]
