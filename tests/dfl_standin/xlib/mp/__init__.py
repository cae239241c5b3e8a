"""Like DFL's xlib.mp: importing it forces the spawn start method."""

import multiprocessing

multiprocessing.set_start_method("spawn", force=True)
