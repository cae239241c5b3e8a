from pathlib import Path

import cv2
from modelhub import DFLive

from ._report import describe_process
from .BackendBase import BackendWorker
from .FaceMarker import cut


class FaceSwapDFMWorker(BackendWorker):
    def on_start(self):
        self.models = []
        if self.settings.get("dfm_model"):  # chosen by name from the model list, as DFL's UI does
            self.dfm_model = self._load_from_list(self.settings["dfm_model"])
        else:
            self.dfm_model = DFLive.DFMModel(Path(self.settings["dfm_path"]))
        self.resolution = self.dfm_model.get_input_res()
        self.swapped_means = []

    def _load_from_list(self, name):
        self.models = DFLive.get_available_models_info(Path(self.settings["dfm_models_dir"]))
        chosen = [info for info in self.models if name in info.get_name()]
        if not chosen:
            raise RuntimeError("no model named like %r in %s" % (name, [str(m) for m in self.models]))
        initializer = DFLive.DFMModel_from_info(chosen[0], None)
        while True:  # one event per backend tick
            events = initializer.process_events()
            if events.new_status_error:
                raise RuntimeError(events.error)
            if events.new_status_initialized:
                return events.dfm_model

    def process(self, bcd):
        aligned = cv2.resize(cut(bcd["frame"], bcd["rect"]), self.resolution)
        celeb, celeb_mask, face_mask = self.dfm_model.convert(aligned, morph_factor=0.75)
        bcd["swapped"] = celeb[0]
        self.swapped_means.append(float(celeb[0].mean()))
        bcd["swapped_mask"] = celeb_mask[0]
        del bcd["frame"]
        return bcd

    def on_stop(self):
        report = describe_process([self.dfm_model._sess] if hasattr(self.dfm_model, "_sess") else [])
        report["models"] = [info.get_name() for info in self.models]
        report["model_file"] = self.dfm_model.get_model_path().name
        report["model_type"] = type(self.dfm_model).__module__
        report["swapped_means"] = self.swapped_means
        self.send_msg("report", report)
