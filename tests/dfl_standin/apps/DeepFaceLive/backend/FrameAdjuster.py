from xlib.image import ImageProcessor

from ._stage import StageMixin
from .BackendBase import BackendWorker


class FrameAdjusterWorker(StageMixin, BackendWorker):
    """Median blur and bicubic degrade of the frame (both 0 % by default); the frame is stored again."""

    def on_start(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.setup_stage(weak_heap, reemit_frame_signal, bc_in, bc_out)

    def process_bcd(self, bcd):
        state = self.get_state()
        frame_image_name = bcd.get_frame_image_name()
        frame_image = bcd.get_image(frame_image_name)
        if frame_image is None:
            return
        ip = ImageProcessor(frame_image)
        ip.median_blur(5, opacity=state.get("median_blur_per", 0) / 100.0)
        ip.reresize(state.get("degrade_bicubic_per", 0) / 100.0, interpolation=ImageProcessor.Interpolation.CUBIC)
        bcd.set_image(frame_image_name, ip.get_image("HWC"))
