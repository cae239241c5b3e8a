from .DFMModel import (
                       DFMModel,
                       DFMModel_from_info,
                       DFMModel_from_path,
                       DFMModelInfo,
                       get_available_devices,
                       get_available_models_info,
)

__all__ = ["DFMModel", "DFMModel_from_info", "DFMModel_from_path", "DFMModelInfo", "get_available_devices",
           "get_available_models_info"]
