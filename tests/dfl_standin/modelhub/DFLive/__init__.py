from .DFMModel import DFMModel, get_available_devices

__all__ = ["DFMModel", "get_available_devices"]
