import time
from pathlib import Path

from modelhub import DFLive
from xlib import onnxruntime as lib_ort

from ._stage import StageMixin
from .BackendBase import BackendWorker

LOAD_TIMEOUT_S = 120


class FaceSwapDFMWorker(StageMixin, BackendWorker):
    """The DFM on face ``face_id`` (or every face): swapped face, its mask and the aligned face's mask.

    The model is ``dfm_path``, or ``dfm_model``: a name chosen from the model list of ``dfm_models_dir``
    as DFL's UI does (its initializer, one event per backend tick)."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)
        state = self.get_state()
        self.models = []
        self.swapped_means = []
        if state.get("dfm_model"):
            self.dfm_model = self._load_from_list(state["dfm_model"], state["dfm_models_dir"])
        else:
            self.dfm_model = DFLive.DFMModel(Path(state["dfm_path"]), lib_ort.get_cpu_device_info())

    def _load_from_list(self, name, models_dir):
        self.models = DFLive.get_available_models_info(Path(models_dir))
        chosen = [info for info in self.models if name in info.get_name()]
        if not chosen:
            raise RuntimeError("no model named like %r in %s" % (name, [str(m) for m in self.models]))
        initializer = DFLive.DFMModel_from_info(chosen[0], lib_ort.get_cpu_device_info())
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while time.monotonic() < deadline:
            events = initializer.process_events()
            if events.new_status_error:
                raise RuntimeError(events.error)
            if events.new_status_initialized:
                return events.dfm_model
            time.sleep(0.005)  # DFL's UI asks once per tick
        raise RuntimeError("model %r from %s not initialized within %d s" % (name, models_dir, LOAD_TIMEOUT_S))

    def process_bcd(self, bcd):
        state = self.get_state()
        swap_all, face_id, morph = state.get("swap_all_faces", False), state.get("face_id", 0), state.get("morph_factor", 0.75)
        for i, fsi in enumerate(bcd.get_face_swap_info_list()):
            if not swap_all and face_id != i:
                continue
            face_align_image = bcd.get_image(fsi.face_align_image_name)
            if face_align_image is None:
                continue
            celeb, celeb_mask, face_mask = self.dfm_model.convert(face_align_image, morph_factor=morph)
            self.swapped_means.append(float(celeb[0].mean()))
            fsi.face_align_mask_name = "%s_mask" % fsi.face_align_image_name
            fsi.face_swap_image_name = "%s_swapped" % fsi.face_align_image_name
            fsi.face_swap_mask_name = "%s_mask" % fsi.face_swap_image_name
            bcd.set_image(fsi.face_align_mask_name, face_mask[0])
            bcd.set_image(fsi.face_swap_image_name, celeb[0])
            bcd.set_image(fsi.face_swap_mask_name, celeb_mask[0])

    def report(self):
        return {"models": [info.get_name() for info in self.models],
                "model_file": self.dfm_model.get_model_path().name,
                "model_type": type(self.dfm_model).__module__,
                "swapped_means": self.swapped_means}
