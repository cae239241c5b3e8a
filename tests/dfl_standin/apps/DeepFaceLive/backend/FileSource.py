"""Stand-in FileSource: a "video file" of painted frames (a face photo on a noisy background, moving a
little), JPEG-encoded once and decoded per frame, sent not in real time (every frame, in order) or
in real time (newest wins). Face size: 0.375 x the frame's long side, the stand-in detector's box."""

import time

import cv2
import numpy as np
from xlib.image import ImageProcessor

from .BackendBase import BackendConnectionData, BackendWorker

DISTINCT_FRAMES = 24


def face_photo(path=None):
    """A BGR face image: the given photo's face region, else a painted one."""
    if path:
        image = cv2.imread(str(path))
        if image is not None:
            h, w = image.shape[:2]
            if (h, w) == (512, 512):  # the astronaut photo: its face box is about [179, 63, 270, 174]
                return image[48:198, 149:299].copy()
            side = min(h, w)
            return image[(h - side) // 2:(h + side) // 2, (w - side) // 2:(w + side) // 2].copy()
    face = np.full((150, 150, 3), (40, 60, 90), np.uint8)
    cv2.ellipse(face, (75, 80), (52, 66), 0, 0, 360, (120, 150, 200), -1)
    for x in (55, 95):
        cv2.circle(face, (x, 68), 7, (40, 40, 50), -1)
    cv2.ellipse(face, (75, 112), (18, 6), 0, 0, 360, (70, 70, 150), -1)
    return face


def paint_frames(width, height, faces, photo, count=DISTINCT_FRAMES, seed=0):
    """``count`` distinct frames, each with ``faces`` faces drifting on a circle of 2% of the width."""
    rng = np.random.RandomState(seed)
    background = np.empty((height, width, 3), np.uint8)
    background[...] = (150, 120, 95)
    background = cv2.add(background, rng.randint(0, 25, (height, width, 3)).astype(np.uint8))
    side = int(round(0.375 * max(width, height)))
    face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(count):
        frame = background.copy()
        angle = 2 * np.pi * i / count
        for k in range(faces):
            cx = width * (k + 0.5) / faces + 0.02 * width * np.cos(angle)
            cy = height * 0.5 + 0.02 * width * np.sin(angle)
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            fx0, fy0 = max(0, -x0), max(0, -y0)
            x0c, y0c = max(0, x0), max(0, y0)
            x1c, y1c = min(width, x0 + side), min(height, y0 + side)
            if x1c > x0c and y1c > y0c:
                frame[y0c:y1c, x0c:x1c] = face[fy0:fy0 + y1c - y0c, fx0:fx0 + x1c - x0c]
        frames.append(frame)
    return frames


class FileSourceWorker(BackendWorker):
    def on_start(self, weak_heap, reemit_frame_signal, bc_out):
        self.weak_heap = weak_heap
        self.reemit_frame_signal = reemit_frame_signal
        self.bc_out = bc_out
        self.pending_bcd = None
        self.bcd_uid = 0
        state = self.get_state()
        frames = paint_frames(state["width"], state["height"], state.get("faces", 1), face_photo(state.get("face_path")))
        self.encoded = [cv2.imencode(".jpg", f, [int(cv2.IMWRITE_JPEG_QUALITY), 92])[1] for f in frames]
        self.frame_count = int(state["frames"])
        self.fps = float(state.get("fps", 30.0))

    def _next_frame(self):
        if self.bcd_uid >= self.frame_count:
            return
        state = self.get_state()
        if not state.get("realtime") and self.pending_bcd is not None:
            return
        self.start_profile_timing()
        reemit = self.reemit_frame_signal.recv()
        frame_num = self.bcd_uid
        self.bcd_uid += 1
        image = cv2.imdecode(self.encoded[frame_num % len(self.encoded)], cv2.IMREAD_COLOR)
        name = "frame_%d" % frame_num
        bcd = BackendConnectionData(uid=self.bcd_uid)
        bcd.assign_weak_heap(self.weak_heap)
        bcd.set_is_frame_reemitted(reemit)
        bcd.set_frame_count(self.frame_count)
        bcd.set_frame_num(frame_num)
        bcd.set_frame_fps(self.fps)
        bcd.set_frame_timestamp(time.time())
        bcd.set_frame_image_name(name)
        bcd.set_image(name, ImageProcessor(image).to_uint8().get_image("HWC"))
        self.stop_profile_timing()
        self.pending_bcd = bcd

    def on_tick(self):
        self._next_frame()
        if self.pending_bcd is not None and self.bc_out.is_full_read(1):
            self.bc_out.write(self.pending_bcd)
            self.pending_bcd = None
        time.sleep(0.001)
