# imports every wrapper eagerly, as DFL's modelhub.onnx does
from .FaceMesh.FaceMesh import FaceMesh
from .YoloV5Face.YoloV5Face import YoloV5Face

__all__ = ["FaceMesh", "YoloV5Face"]
