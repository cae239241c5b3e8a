from pathlib import Path

from modelhub import DFLive
from xlib import onnxruntime as lib_ort

from ._stage import StageMixin
from .BackendBase import BackendWorker


class FaceSwapDFMWorker(StageMixin, BackendWorker):
    """The DFM on face ``face_id`` (or every face): swapped face, its mask and the aligned face's mask."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)
        self.dfm_model = DFLive.DFMModel(Path(self.get_state()["dfm_path"]), lib_ort.get_cpu_device_info())

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
            fsi.face_align_mask_name = "%s_mask" % fsi.face_align_image_name
            fsi.face_swap_image_name = "%s_swapped" % fsi.face_align_image_name
            fsi.face_swap_mask_name = "%s_mask" % fsi.face_swap_image_name
            bcd.set_image(fsi.face_align_mask_name, face_mask[0])
            bcd.set_image(fsi.face_swap_image_name, celeb[0])
            bcd.set_image(fsi.face_swap_mask_name, celeb_mask[0])
