from .ImageProcessor import ImageProcessor

__all__ = ["ImageProcessor"]
