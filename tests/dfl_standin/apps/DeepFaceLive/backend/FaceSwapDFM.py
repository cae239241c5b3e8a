from pathlib import Path

import cv2
from modelhub import DFLive

from ._report import describe_process
from .BackendBase import BackendWorker
from .FaceMarker import cut


class FaceSwapDFMWorker(BackendWorker):
    def on_start(self):
        self.dfm_model = DFLive.DFMModel(Path(self.settings["dfm_path"]))
        self.resolution = self.dfm_model.get_input_res()

    def process(self, bcd):
        aligned = cv2.resize(cut(bcd["frame"], bcd["rect"]), self.resolution)
        celeb, celeb_mask, face_mask = self.dfm_model.convert(aligned, morph_factor=0.75)
        bcd["swapped"] = celeb[0]
        bcd["swapped_mask"] = celeb_mask[0]
        del bcd["frame"]
        return bcd

    def on_stop(self):
        self.send_msg("report", describe_process([self.dfm_model._sess]))
