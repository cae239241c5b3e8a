import numpy as np

from ._stage import StageMixin
from .BackendBase import BackendWorker


class FaceAlignerWorker(StageMixin, BackendWorker):
    """Cuts each face by its landmarks (coverage 2.2, 224 px) and draws its landmark hull mask."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)

    def process_bcd(self, bcd):
        state = self.get_state()
        coverage, resolution = state.get("face_coverage", 2.2), state.get("resolution", 224)
        frame_image_name = bcd.get_frame_image_name()
        frame_image = bcd.get_image(frame_image_name)
        if frame_image is None:
            return
        for face_id, fsi in enumerate(bcd.get_face_swap_info_list()):
            face_ulmrks = fsi.face_ulmrks
            if face_ulmrks is None:
                continue
            fsi.face_resolution = resolution
            face_align_img, uni_mat = face_ulmrks.cut(frame_image, coverage, resolution,
                                                      x_offset=state.get("x_offset", 0.0),
                                                      y_offset=state.get("y_offset", 0.0) - 0.08)
            fsi.face_align_image_name = "%s_%d_aligned" % (frame_image_name, face_id)
            fsi.image_to_align_uni_mat = uni_mat
            fsi.face_align_ulmrks = face_ulmrks.transform(uni_mat)
            bcd.set_image(fsi.face_align_image_name, face_align_img)
            lmrks_mask = fsi.face_align_ulmrks.get_convexhull_mask(face_align_img.shape[:2], color=(255,), dtype=np.uint8)
            fsi.face_align_lmrks_mask_name = "%s_%d_aligned_lmrks_mask" % (frame_image_name, face_id)
            bcd.set_image(fsi.face_align_lmrks_mask_name, lmrks_mask)
