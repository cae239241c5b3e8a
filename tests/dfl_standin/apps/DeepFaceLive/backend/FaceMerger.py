"""Stand-in FaceMerger: DFL's CPU merge (fc7b787), step by step, as the reference for dfl_perf's merge.

Per face, on the whole frame: the frame to float32 0..1; the product of the enabled masks (aligned
face "source", DFM "celeb", landmarks "lmrks"; none: ones); erode/blur with fade to border; the
mask warped to the frame (bilinear) and cut at 1/255 and 1; the swapped face to float32, Reinhard
colour transfer (``rct``) towards the aligned face where the mask is >= 0.5; the face warped to the
frame with the chosen interpolation; blend with numexpr (with opacity); for the frame's last face
only, colour compression ``c = max(4, 127 - value)``: ``floor(x * c) / c + 2 / c``. The merged frame
stays float32 on the heap. The matrix from the aligned face to the frame: the aligner's uniform
matrix inverted, translated by the x/y offsets, scaled around the centre, made exact for the sizes.
"""

import numexpr as ne
import numpy as np
from xlib.image import ImageProcessor

from ._stage import StageMixin
from .BackendBase import BackendWorker

DEFAULTS = {"device": "CPU", "face_x_offset": 0.0, "face_y_offset": 0.0, "face_scale": 1.0,
            "face_mask_source": True, "face_mask_celeb": True, "face_mask_lmrks": False,
            "face_mask_erode": 5, "face_mask_blur": 25, "color_transfer": "rct", "interpolation": "bilinear",
            "color_compression": 1.0, "face_opacity": 1.0}


def all_is_not_None(*args):
    return all(arg is not None for arg in args)


class FaceMergerWorker(StageMixin, BackendWorker):
    _cpu_interp = {"bilinear": ImageProcessor.Interpolation.LINEAR,
                   "bicubic": ImageProcessor.Interpolation.CUBIC,
                   "lanczos4": ImageProcessor.Interpolation.LANCZOS4}

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)
        state = self.get_state()
        for name, value in DEFAULTS.items():
            if getattr(state, name) is None:
                setattr(state, name, value)

    def _merge_on_cpu(self, frame_image, face_resolution, face_align_img, face_align_mask_img, face_align_lmrks_mask_img,
                      face_swap_img, face_swap_mask_img, aligned_to_source_uni_mat, frame_width, frame_height,
                      do_color_compression):
        state = self.get_state()
        interpolation = self._cpu_interp[state.interpolation]
        frame_image = ImageProcessor(frame_image).to_ufloat32().get_image("HWC")

        masks = []
        if state.face_mask_source:
            masks.append(ImageProcessor(face_align_mask_img).to_ufloat32().get_image("HW"))
        if state.face_mask_celeb:
            masks.append(ImageProcessor(face_swap_mask_img).to_ufloat32().get_image("HW"))
        if state.face_mask_lmrks:
            masks.append(ImageProcessor(face_align_lmrks_mask_img).to_ufloat32().get_image("HW"))
        if masks:
            face_mask = masks[0]
            for mask in masks[1:]:
                face_mask *= mask
        else:
            face_mask = np.ones(shape=(face_resolution, face_resolution), dtype=np.float32)

        face_mask = ImageProcessor(face_mask).erode_blur(state.face_mask_erode, state.face_mask_blur,
                                                         fade_to_border=True).get_image("HWC")
        frame_face_mask = ImageProcessor(face_mask).warp_affine(aligned_to_source_uni_mat, frame_width, frame_height) \
            .clip2((1.0 / 255.0), 0.0, 1.0, 1.0).get_image("HWC")

        face_swap_ip = ImageProcessor(face_swap_img).to_ufloat32()
        if state.color_transfer == "rct":
            face_swap_ip.rct(like=face_align_img, mask=face_mask, like_mask=face_mask)
        frame_face_swap_img = face_swap_ip.warp_affine(aligned_to_source_uni_mat, frame_width, frame_height,
                                                       interpolation=interpolation).get_image("HWC")

        opacity = np.float32(state.face_opacity)
        terms = {"frame_image": frame_image, "frame_face_mask": frame_face_mask, "frame_face_swap_img": frame_face_swap_img,
                 "one_f": np.float32(1.0), "opacity": opacity}
        if opacity == 1.0:
            out_merged_frame = ne.evaluate("frame_image*(one_f-frame_face_mask) + frame_face_swap_img*frame_face_mask",
                                           local_dict=terms)
        else:
            out_merged_frame = ne.evaluate("frame_image*(one_f-frame_face_mask) + frame_image*frame_face_mask*(one_f-opacity)"
                                           " + frame_face_swap_img*frame_face_mask*opacity", local_dict=terms)
        if do_color_compression and state.color_compression != 0:
            color_compression = max(4, (127.0 - state.color_compression))
            out_merged_frame *= color_compression
            np.floor(out_merged_frame, out=out_merged_frame)
            out_merged_frame /= color_compression
            out_merged_frame += 2.0 / color_compression
        return out_merged_frame

    def merge_frame(self, bcd):
        """Merge every swapped face of the frame; stores the merged image and returns True if one was made."""
        state = self.get_state()
        frame_image_name = bcd.get_frame_image_name()
        merged_frame = bcd.get_image(frame_image_name)
        if merged_frame is None:
            return False
        fsi_list = bcd.get_face_swap_info_list()
        has_merged_faces = False
        for fsi_id, fsi in enumerate(fsi_list):
            face_anim_img = bcd.get_image(fsi.face_anim_image_name)
            if face_anim_img is not None:
                has_merged_faces = True
                merged_frame = face_anim_img
                continue
            uni_mat, face_resolution = fsi.image_to_align_uni_mat, fsi.face_resolution
            face_align_img = bcd.get_image(fsi.face_align_image_name)
            face_align_lmrks_mask_img = bcd.get_image(fsi.face_align_lmrks_mask_name)
            face_align_mask_img = bcd.get_image(fsi.face_align_mask_name)
            face_swap_img = bcd.get_image(fsi.face_swap_image_name)
            face_swap_mask_img = bcd.get_image(fsi.face_swap_mask_name)
            if not all_is_not_None(face_resolution, face_align_img, face_align_mask_img, face_swap_img,
                                   face_swap_mask_img, uni_mat):
                continue
            has_merged_faces = True
            face_height, face_width = face_align_img.shape[:2]
            frame_height, frame_width = merged_frame.shape[:2]
            mat = uni_mat.invert().source_translated(-state.face_x_offset, -state.face_y_offset)
            mat = mat.source_scaled_around_center(state.face_scale, state.face_scale)
            mat = mat.to_exact_mat(face_width, face_height, frame_width, frame_height)
            merged_frame = self._merge_on_cpu(merged_frame, face_resolution, face_align_img, face_align_mask_img,
                                              face_align_lmrks_mask_img, face_swap_img, face_swap_mask_img, mat,
                                              frame_width, frame_height, do_color_compression=fsi_id == len(fsi_list) - 1)
        if has_merged_faces:
            merged_image_name = "%s_merged" % frame_image_name
            bcd.set_merged_image_name(merged_image_name)
            bcd.set_image(merged_image_name, merged_frame)
        return has_merged_faces

    def process_bcd(self, bcd):
        self.merge_frame(bcd)
