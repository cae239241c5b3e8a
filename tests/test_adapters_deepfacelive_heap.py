"""dfl_perf.adapters.deepfacelive.heap: DFL's shared frame heap reserved untouched and sized by need.

In-process tests patch the stand-in's ``xlib.mp.MPWeakHeap`` (DFL's layout); the pipeline tests run the
stand-in DFL through the launcher and count frames that reach the output without their images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfl_perf.adapters.deepfacelive import heap as heap_mod
from dfl_perf.adapters.deepfacelive._hooks import Patcher
from dfl_perf.adapters.deepfacelive.config import CONFIG_ENV, DFLConfig

REPO = Path(__file__).resolve().parent.parent
STANDIN = Path(__file__).resolve().parent / "dfl_standin"
MB = 1024 * 1024


@pytest.fixture
def weak_heap():
    """(the stand-in's MPWeakHeap module, a function installing the patch with given settings)."""
    sys.path.insert(0, str(STANDIN))
    patcher = Patcher()
    try:
        import importlib

        module = importlib.import_module("xlib.mp.MPWeakHeap")  # the module (``xlib.mp`` re-exports the class)

        def patch(**settings):
            heap_mod.patch_weak_heap_class(module, patcher, DFLConfig(**settings))

        yield module, patch
    finally:
        patcher.restore()
        sys.path.remove(str(STANDIN))
        for name in [n for n in sys.modules if n.split(".")[0] in ("xlib", "modelhub", "apps")]:
            del sys.modules[name]


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="RSS is Linux's /proc figure")
def test_the_reservation_is_not_touched(weak_heap):
    module, patch = weak_heap
    patch()
    before = _rss_kb()
    heap = module.MPWeakHeap(size_mb=1024)  # DFL's RawArray would zero-fill, and so hold, all of it
    grown = _rss_kb() - before
    assert heap._heap_size == 1024 * MB and grown < 32 * 1024, grown
    ref = heap.add_data(np.full(100_000, 7, np.uint8).data)
    assert bytes(heap.get_data(ref)) == bytes([7]) * 100_000
    assert heap.dfl_perf_stats()["limit"] == heap_mod.MIN_LIMIT_MB * MB  # 48 images of 100 kB fit in the least ring


def test_the_ring_grows_with_the_largest_image_and_never_wraps_past_its_limit(weak_heap):
    module, patch = weak_heap
    patch()
    heap = module.MPWeakHeap(size_mb=512)
    stats = heap.dfl_perf_stats()
    assert stats["limit"] == heap_mod.MIN_LIMIT_MB * MB and stats["auto"] == 1
    small = np.arange(200_000, dtype=np.uint8)
    refs = [heap.add_data(small.data) for _ in range(200)]  # 40 MB through a 16 MB ring
    assert max(r._block_offset for r in refs) < heap_mod.MIN_LIMIT_MB * MB
    assert heap.get_data(refs[0]) is None and bytes(heap.get_data(refs[-1])) == small.tobytes()
    assert heap.dfl_perf_stats()["lost_reads"] == 1
    big = np.ones(1_000_000, np.uint8)  # a bigger frame (a resolution change): the ring grows first
    ref = heap.add_data(big.data)
    assert heap.dfl_perf_stats()["limit"] >= heap_mod.FLOOR_BLOCKS * 1_000_000
    assert heap.get_data(ref) is not None and heap.get_data(refs[-1]) is not None


def test_the_ring_grows_with_the_distance_between_a_write_and_its_read(weak_heap):
    module, patch = weak_heap
    patch()
    heap = module.MPWeakHeap(size_mb=512)
    block = np.zeros(100_000, np.uint8)
    held = heap.add_data(block.data)
    for _ in range(100):  # 10 MB written while one image waits to be read
        heap.add_data(block.data)
    assert heap.get_data(held) is not None
    stats = heap.dfl_perf_stats()
    assert stats["max_lag"] >= 100 * 100_000
    heap.add_data(block.data)
    assert heap.dfl_perf_stats()["limit"] >= heap_mod.LAG_MARGIN * stats["max_lag"]


def test_a_fixed_heap_is_what_the_user_asked_for(weak_heap):
    module, patch = weak_heap
    patch(frame_heap_mb=4)
    heap = module.MPWeakHeap(size_mb=2048)
    assert heap._heap_size == 4 * MB and heap.dfl_perf_stats()["limit"] == 4 * MB
    refs = [heap.add_data(np.zeros(1 * MB, np.uint8).data) for _ in range(8)]
    assert heap.dfl_perf_stats()["limit"] == 4 * MB  # never grows
    assert heap.get_data(refs[0]) is None and heap.get_data(refs[-1]) is not None
    with pytest.raises(Exception, match="Not enough space"):
        heap.add_data(np.zeros(5 * MB, np.uint8).data)


def test_dfls_own_add_data_still_works_on_a_patched_heap(weak_heap):
    """A worker without dfl_perf (one-line install without propagation) keeps writing the same heap safely."""
    module, patch = weak_heap
    original_add = module.MPWeakHeap.add_data
    patch()
    heap = module.MPWeakHeap(size_mb=64)
    data = np.arange(3 * MB, dtype=np.uint8)
    refs = []
    for i in range(40):  # interleave DFL's add_data and the patched one over several wraps
        refs.append(original_add(heap, data.data) if i % 3 == 0 else heap.add_data(data.data))
    assert bytes(heap.get_data(refs[-1])) == data.tobytes()
    assert bytes(heap.get_data(refs[-2])) == data.tobytes()


def test_uninstall_restores_dfls_heap(weak_heap):
    module, patch = weak_heap
    original = module.MPWeakHeap.__init__, module.MPWeakHeap.add_data, module.MPWeakHeap.get_data
    patch()
    assert module.MPWeakHeap.add_data is not original[1]
    patcher = Patcher()
    heap_mod.patch_weak_heap_class(module, patcher, DFLConfig())
    patcher.restore()
    assert module.MPWeakHeap.add_data.dfl_perf_original is original[1]  # back to the first patch
    heap = module.MPWeakHeap(size_mb=8)
    assert heap.dfl_perf_stats()["limit"] == 8 * MB


# ------------------------------------------------------------------------ the stand-in DFL, no image lost

def _pipeline(tmp_path: Path, dfm: str, models: Path, face: Path, launched: bool, width: int, height: int,
              frames: int, extra_args=(), **settings) -> dict:
    userdata = tmp_path / ("%s-%dx%d" % ("launched" if launched else "plain", width, height))
    userdata.mkdir()
    options = {"frames": frames, "warmup": 2, "dfm_path": dfm, "models_dir": str(models), "width": width,
               "height": height, "face_path": str(face), "timeout_s": 240}
    options.update(settings)
    (userdata / "standin_settings.json").write_text(json.dumps(options))
    prefix = [sys.executable, "-m", "dfl_perf.adapters.deepfacelive", "--cache-dir", str(tmp_path / "cache")]
    cmd = (prefix + list(extra_args) if launched else [sys.executable]) + \
        [str(STANDIN / "main.py"), "run", "DeepFaceLive", "--userdata-dir", str(userdata)]
    env = dict(os.environ)
    for name in (CONFIG_ENV, "ORT_DEVICES_INITIALIZED", "ORT_DEVICES_COUNT", "PYTHONPATH", "DFL_STANDIN_MODELS"):
        env.pop(name, None)
    done = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((userdata / "standin_report.json").read_text())


@pytest.fixture(scope="module")
def pipeline_files(tmp_path_factory):
    from dfl_perf.facepipe.models import face_photo_path
    from dfl_perf.facepipe.standin import save_dfm_standin

    sys.path.insert(0, str(STANDIN))
    try:
        from standin_models import build_models
    finally:
        sys.path.remove(str(STANDIN))
    folder = tmp_path_factory.mktemp("heap_pipeline")
    dfm = str(folder / "dfm.dfm")
    save_dfm_standin(dfm, resolution=224, cost="5ms", seed=3)
    return dfm, build_models(folder / "models"), face_photo_path()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("width, height, load", [(1280, 720, False), (1920, 1080, False), (1280, 720, True)],
                         ids=["1280x720", "1920x1080", "1280x720-under-load"])
def test_no_frame_loses_an_image_with_the_sized_heap(tmp_path, pipeline_files, width, height, load):
    dfm, models, face = pipeline_files
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if load else 0)]
    try:  # under load: two busy processes take the CPU from the pipeline's stages at random moments
        report = _pipeline(tmp_path, dfm, models, face, True, width, height, frames=40)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert report["frames"] == 40 and report["no_face"] == 0
    assert report["lost_merged"] == 0 and report["lost_frame"] == 0
    heap = report["heap"]
    assert heap["lost_reads"] == 0 and heap["limit"] < heap["reserved"] // 2
    assert heap["limit"] >= heap_mod.LAG_MARGIN * heap["max_lag"] or heap["grows"] > 0
    assert report["merged_dtypes"] == ["uint8"]


@pytest.mark.timeout(600)
def test_a_heap_too_small_loses_images_and_the_count_shows_it(tmp_path, pipeline_files):
    """The counter can fail: a 16 MB heap cannot hold 1920x1080 frames in flight."""
    dfm, models, face = pipeline_files
    report = _pipeline(tmp_path, dfm, models, face, True, 1920, 1080, frames=30, extra_args=["--frame-heap-mb", "16"])
    assert report["heap"]["limit"] == 16 * MB
    assert report["lost_merged"] + report["lost_frame"] > 0 and report["heap"]["lost_reads"] > 0
