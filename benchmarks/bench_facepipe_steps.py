"""facepipe steps the DFL way vs dfl_perf's way, one step at a time, on the same inputs.

- yunet decode : DFL-style (a grid built with np.meshgrid and every cell decoded on every call,
                 then thresholded) vs ours (grid made once per input size, only cells over the
                 score threshold decoded). Same boxes (checked).
- yunet input  : a fresh zero-padded float32 blob per frame vs the same written into a pooled one.
- swap N faces : DFL's one ``convert`` per face vs one batched run (DFM stand-in, 224, cost 5ms).
- merge        : DFL-style CPU merge (the whole frame to float32, face and mask warped to
                 full-frame float32 buffers, blended over the whole frame, back to uint8) vs ours
                 (warp and blend inside the face's rectangle only, in place).
Both sides of each row are our own code: the DFL side re-creates what notes/deepfacelive.md
describes, it is not DFL's code. Time: median of --repeats medians over --iters calls. Bytes:
tracemalloc peak during one call (numpy and cv2 arrays are traced), median over calls.

    python benchmarks/bench_facepipe_steps.py [--quick] [--repeats 5] [--iters 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List

from _common import REPO, median, print_header, write_json

RES = 224


def _timed(fn: Callable[[], Any], iters: int, repeats: int) -> float:
    fn()
    runs = []
    for _ in range(repeats):
        samples = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        runs.append(median(samples))
    return median(runs) * 1e3


def _traced_peak(fn: Callable[[], Any], calls: int = 5) -> float:
    fn()
    peaks = []
    reset_peak = getattr(tracemalloc, "reset_peak", tracemalloc.clear_traces)  # reset_peak: Python 3.9+
    tracemalloc.start()
    try:
        for _ in range(calls):
            reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            peaks.append(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()
    return median(peaks)


# ------------------------------------------------------------------------- the DFL-style sides
def _dfl_style_decode(det: Any, outputs: List[Any], scale: Any) -> Any:
    import numpy as np

    from dfl_perf.facepipe.detector import nms

    _, _, h, w = det.input_shape
    boxes, scores, kps = [], [], []
    for s in (8, 16, 32):
        xv, yv = np.meshgrid(np.arange(w // s), np.arange(h // s))  # rebuilt on every call
        grid = np.stack([xv.ravel(), yv.ravel()], axis=1).astype(np.float32)
        out = {k: np.asarray(outputs[det.output_names.index("%s_%d" % (k, s))])[0] for k in ("cls", "obj", "bbox", "kps")}
        score = np.sqrt(np.clip(out["cls"][:, 0], 0, 1) * np.clip(out["obj"][:, 0], 0, 1))
        bbox = out["bbox"]
        centre = (grid + bbox[:, :2]) * s
        size = np.exp(bbox[:, 2:]) * s
        boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        kps.append((out["kps"].reshape(-1, 5, 2) + grid[:, None, :]) * s)
        scores.append(score)
    boxes, scores, kps = np.concatenate(boxes), np.concatenate(scores), np.concatenate(kps)
    keep = scores >= det.score_threshold
    boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
    boxes = boxes / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
    return [tuple(float(v) for v in boxes[i]) for i in nms(boxes, scores, det.nms_threshold)]


def _dfl_style_merge(frame: Any, celeb: Any, mask: Any, M: Any, erode: int = 5, blur: int = 25) -> Any:
    import cv2
    import numpy as np

    from dfl_perf.facepipe.merge import feather_mask

    h, w = frame.shape[:2]
    frame_f = frame.astype(np.float32) / 255.0  # the whole frame as float32
    m = feather_mask(mask, erode, blur)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    face_f = cv2.warpAffine(celeb, M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)  # full frame
    mask_f = cv2.warpAffine(m, M, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT)[..., None]
    merged = frame_f * (1.0 - mask_f) + face_f * mask_f  # full-frame float32 blend
    return np.clip(merged * 255.0, 0, 255).astype(np.uint8)


def _one_by_one(swapper: Any, faces: Any) -> Any:
    return [swapper.run(face) for face in faces]  # DFL: one convert() per face


# ------------------------------------------------------------------------------------ the rows
def _model(name: str) -> str:
    """The shared copy (DFL_PERF_SHARED/models, default ../shared beside the repo), else the registry's."""
    shared = Path(os.environ.get("DFL_PERF_SHARED", str(REPO.parent / "shared"))) / "models" / (name + ".onnx")
    if shared.is_file():
        return str(shared)
    from dfl_perf.facepipe.models import model_path

    return str(model_path(name, progress=True))


def _rows(args: argparse.Namespace) -> List[Dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort

    from dfl_perf.buffers import DFMRunner
    from dfl_perf.facepipe.align import align_matrix, warp_face
    from dfl_perf.facepipe.clip import make_clip
    from dfl_perf.facepipe.detector import FaceDetector
    from dfl_perf.facepipe.merge import merge_face
    from dfl_perf.facepipe.standin import build_dfm_standin

    it, rep = args.iters, args.repeats
    rows = []

    def row(step: str, case: str, dfl: Callable[[], Any], ours: Callable[[], Any]) -> None:
        r = {"step": step, "case": case, "dfl_ms": _timed(dfl, it, rep), "ours_ms": _timed(ours, it, rep),
             "dfl_bytes": _traced_peak(dfl), "ours_bytes": _traced_peak(ours)}
        rows.append(r)
        print("%-14s %-22s %9.3f %9.3f %7.2fx %12s %12s" % (step, case, r["dfl_ms"], r["ours_ms"],
              r["dfl_ms"] / max(r["ours_ms"], 1e-9), _mb(r["dfl_bytes"]), _mb(r["ours_bytes"])))

    print("%-14s %-22s %9s %9s %8s %12s %12s" % ("step", "case", "DFL ms", "ours ms", "speedup", "DFL peak", "ours peak"))
    for name in ("yunet_n_320_320", "yunet_s_640_640"):
        det = FaceDetector(_model(name))
        frame = make_clip(size=(1280, 720), frames=1, faces=2)[0]
        blob, scale = det.preprocess(frame)
        outputs = det.run(blob)
        assert _dfl_style_decode(det, outputs, scale) == [f.box for f in det.decode(outputs, scale)]
        row("yunet decode", name, partial(_dfl_style_decode, det, outputs, scale), partial(det.decode, outputs, scale))
        pool = np.zeros(det.input_shape, np.float32)
        row("yunet input", name + " 720p", partial(det.preprocess, frame), partial(det.preprocess, frame, out=pool))

    session = ort.InferenceSession(build_dfm_standin(RES, cost="5ms").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    swapper = DFMRunner(session, io_binding=False)  # plain session.run, as DFL
    for n in (1, 2, 4):
        faces = np.random.RandomState(n).randint(0, 256, (n, RES, RES, 3), dtype=np.uint8)
        row("swap", "%d face(s), 224" % n, partial(_one_by_one, swapper, faces), partial(swapper.run, faces))

    for size in ((640, 480), (1280, 720), (1920, 1080)):
        frame = make_clip(size=size, frames=1)[0]
        face = FaceDetector(_model("yunet_n_320_320")).detect(frame)[0]
        M = align_matrix(face.keypoints, RES)
        crop = warp_face(frame, M, RES)
        swapped = swapper.run(crop)
        c, m = swapped.celeb_face[0], swapped.celeb_face_mask[0] * swapped.face_mask[0]
        a, b = _dfl_style_merge(frame, c, m, M), merge_face(frame, c, m, M)
        diff = np.abs(a.astype(int) - b.astype(int))
        # same result up to rounding and warp fixed-point (1/32 px) differences
        assert diff.mean() < 0.5 and diff.max() <= 8, "the merges disagree: max %d, mean %.3f" % (diff.max(), diff.mean())
        target = frame.copy()
        row("merge", "1 face, %dx%d" % size, partial(_dfl_style_merge, frame, c, m, M),
            partial(merge_face, target, c, m, M, out=target))
    return rows


def _mb(n: float) -> str:
    return "%.2f MB" % (n / 1e6) if n >= 1e5 else "%.1f KB" % (n / 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.iters = 2, 5
    info = print_header("facepipe steps: DFL way vs dfl_perf", None)
    print("%d repeats x %d calls per row; times are medians; peak = tracemalloc peak during one call" % (args.repeats, args.iters))
    rows = _rows(args)
    write_json(args.json, {"machine": info, "repeats": args.repeats, "iters": args.iters, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
