"""The loop every middle stage of DFL's pipeline shares (DFL writes it out in each module's on_tick).

Read a frame (waiting up to 5 ms), process it, hold it as the one pending frame, and pass it on only
when the next stage has at most one unread frame. The profile timing brackets the wait and the work,
as DFL's does.
"""

import time


class StageMixin:
    def setup_stage(self, weak_heap, reemit_frame_signal, bc_in, bc_out):
        self.weak_heap = weak_heap
        self.reemit_frame_signal = reemit_frame_signal
        self.bc_in = bc_in
        self.bc_out = bc_out
        self.pending_bcd = None

    def process_bcd(self, bcd):
        raise NotImplementedError

    def on_tick(self):
        if self.pending_bcd is None:
            self.start_profile_timing()
            bcd = self.bc_in.read(timeout=0.005)
            if bcd is not None:
                bcd.assign_weak_heap(self.weak_heap)
                self.process_bcd(bcd)
                self.stop_profile_timing()
                self.pending_bcd = bcd
        if self.pending_bcd is not None:
            if self.bc_out.is_full_read(1):
                self.bc_out.write(self.pending_bcd)
                self.pending_bcd = None
            else:
                time.sleep(0.001)
