"""Stand-in DFMModel with DFL's constructor, checks and convert() contract (written from the interface)."""

from pathlib import Path
from typing import List, Tuple

import numpy as np
from xlib import onnxruntime as lib_ort
from xlib.image import ImageProcessor
from xlib.onnxruntime.device import ORTDeviceInfo


def get_available_devices() -> List[ORTDeviceInfo]:
    return lib_ort.get_available_devices_info()


class DFMModel:
    def __init__(self, model_path: Path, device: ORTDeviceInfo = None):
        if device is None:
            device = lib_ort.get_cpu_device_info()
        self._model_path = model_path
        # looked up on the package at call time, as DFL does
        sess = self._sess = lib_ort.InferenceSession_with_device(str(model_path), device)
        inputs = sess.get_inputs()
        if not inputs or "in_face" not in inputs[0].name or len(inputs) > 2:
            raise Exception("Invalid model %s" % model_path)
        self._input_height, self._input_width = inputs[0].shape[1:3]
        self._model_type = 1
        if len(inputs) == 2:
            if "morph_value" not in inputs[1].name:
                raise Exception("Invalid model %s" % model_path)
            self._model_type = 2

    def get_model_path(self) -> Path:
        return self._model_path

    def get_input_res(self) -> Tuple[int, int]:
        return self._input_width, self._input_height

    def has_morph_value(self) -> bool:
        return self._model_type == 2

    def convert(self, img, morph_factor=0.75):
        """img HW/HWC/NHWC uint8/float32 -> (celeb NHW3, celeb_mask NHW1, face_mask NHW1) in img's size and dtype."""
        ip = ImageProcessor(img)
        _, height, width, _ = ip.get_dims()
        dtype = ip.get_dtype()
        face = ip.resize((self._input_width, self._input_height)).ch(3).to_ufloat32().get_image("NHWC")
        feed = {"in_face:0": face}
        if self._model_type == 2:
            feed["morph_value:0"] = np.float32([morph_factor])
        face_mask, celeb, celeb_mask = self._sess.run(None, feed)
        celeb = ImageProcessor(celeb).resize((width, height)).ch(3).to_dtype(dtype).get_image("NHWC")
        celeb_mask = ImageProcessor(celeb_mask).resize((width, height)).ch(1).to_dtype(dtype).get_image("NHWC")
        face_mask = ImageProcessor(face_mask).resize((width, height)).ch(1).to_dtype(dtype).get_image("NHWC")
        return celeb, celeb_mask, face_mask


class DFMModelInfo:
    """A model in FaceSwapDFM's list: a name (what the UI shows and compares) and a file path."""

    def __init__(self, name, model_path, url=None):
        self._name = name
        self._model_path = Path(model_path)
        self._url = url

    def get_name(self):
        return self._name

    def get_model_path(self):
        return self._model_path

    def get_url(self):
        return self._url

    def __eq__(self, other):
        return isinstance(other, DFMModelInfo) and other._name == self._name

    def __hash__(self):
        return hash(self._name)

    def __str__(self):
        return self._name


def get_available_models_info(models_path):
    """The .dfm files of the folder, by file stem (DFL adds its downloadable celebrities first)."""
    folder = Path(models_path)
    paths = sorted(folder.glob("*.dfm")) if folder.is_dir() else []
    return [DFMModelInfo(path.stem, path) for path in paths]


class DFMModelInitializer:
    """Loads a DFMModel over several ``process_events()`` calls (one per backend tick), as DFL does."""

    class Events:
        def __init__(self):
            for when in ("prev", "new"):
                for status in ("initializing", "downloading", "initialized", "error"):
                    setattr(self, "%s_status_%s" % (when, status), False)
            self.download_progress = None
            self.error = None
            self.dfm_model = None

    def __init__(self, dfm_model_info, device=None):
        self._steps = self._run(dfm_model_info, device)

    def process_events(self):
        return next(self._steps)

    def _run(self, info, device):
        events = self.Events()
        events.new_status_initializing = True
        yield events
        events = self.Events()
        events.prev_status_initializing = True
        if not info.get_model_path().exists():
            events.new_status_error = True
            events.error = "Model file is not found and URL is not defined."
        else:
            try:
                events.dfm_model = DFMModel(info.get_model_path(), device)
                events.new_status_initialized = True
            except Exception as exc:
                events.new_status_error = True
                events.error = str(exc)
        yield events
        while True:
            yield self.Events()


def DFMModel_from_info(dfm_model_info, device=None):
    return DFMModelInitializer(dfm_model_info, device)


def DFMModel_from_path(model_path, device=None):
    return DFMModel(Path(model_path), device)
