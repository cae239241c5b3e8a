# imports every wrapper eagerly, as DFL's modelhub.onnx does
from .FaceMesh.FaceMesh import FaceMesh
from .InsightFaceSwap.InsightFaceSwap import InsightFaceSwap
from .YoloV5Face.YoloV5Face import YoloV5Face

__all__ = ["FaceMesh", "InsightFaceSwap", "YoloV5Face"]
