# imports every backend module eagerly (and through them modelhub.onnx -> onnxruntime, onnx), as DFL does
from .BackendBase import (
                          BackendConnection,
                          BackendConnectionData,
                          BackendFaceSwapInfo,
                          BackendSignal,
                          BackendWeakHeap,
                          BackendWorker,
                          BackendWorkerState,
)
from .FaceAligner import FaceAlignerWorker
from .FaceDetector import FaceDetectorWorker
from .FaceMarker import FaceMarkerWorker
from .FaceMerger import FaceMergerWorker
from .FaceSwapDFM import FaceSwapDFMWorker
from .FileSource import FileSourceWorker
from .FrameAdjuster import FrameAdjusterWorker
from .StreamOutput import StreamOutputWorker

__all__ = ["BackendConnection", "BackendConnectionData", "BackendFaceSwapInfo", "BackendSignal", "BackendWeakHeap",
           "BackendWorker", "BackendWorkerState", "FaceAlignerWorker", "FaceDetectorWorker", "FaceMarkerWorker",
           "FaceMergerWorker", "FaceSwapDFMWorker", "FileSourceWorker", "FrameAdjusterWorker", "StreamOutputWorker"]
