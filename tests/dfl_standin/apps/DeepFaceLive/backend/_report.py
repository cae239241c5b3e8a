"""What a stand-in worker tells the test about its own process."""

import os
import sys


def is_loaded(name):
    """True when the package's code ran (it defines __version__), not merely bound by a deferred import."""
    module = sys.modules.get(name)
    return module is not None and "__version__" in vars(module)


def describe_session(sess):
    options = sess.get_session_options()
    try:
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning")
    except Exception:
        spinning = None
    return {"providers": list(sess.get_providers()), "intra_op_num_threads": options.intra_op_num_threads,
            "allow_spinning": spinning}


def _thread_pools():
    pools = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and hasattr(cv2, "getNumThreads"):
        pools["cv2"] = cv2.getNumThreads()
    numexpr = sys.modules.get("numexpr")
    if is_loaded("numexpr"):
        pools["numexpr"] = numexpr.get_num_threads()
    return pools


def sessions_of(worker):
    """The onnxruntime sessions a worker's models hold."""
    found = []
    for holder in vars(worker).values():
        sess = getattr(holder, "_sess", None)
        if sess is not None and hasattr(sess, "get_session_options"):
            found.append(sess)
    return found


def describe_process(sessions):
    from xlib import onnxruntime as lib_ort  # already imported by the backend

    mesh = sys.modules.get("modelhub.onnx.FaceMesh.FaceMesh")
    dfm = sys.modules.get("modelhub.DFLive.DFMModel")
    merger = sys.modules.get("apps.DeepFaceLive.backend.FaceMerger")
    heap = sys.modules.get("xlib.mp.MPWeakHeap")
    return {
        "pid": os.getpid(),
        "sessions": [describe_session(s) for s in sessions],
        "onnxruntime_loaded": is_loaded("onnxruntime"),
        "onnx_loaded": is_loaded("onnx"),
        "factory_module": lib_ort.InferenceSession_with_device.__module__,
        "facemesh_factory_module": mesh.InferenceSession_with_device.__module__ if mesh else None,
        "dfm_convert_module": dfm.DFMModel.convert.__module__ if dfm else None,
        "cuda_cache_maxsize": os.environ.get("CUDA_CACHE_MAXSIZE"),
        "merge_module": merger.FaceMergerWorker._merge_on_cpu.__module__ if merger else None,
        "heap_add_data_module": heap.MPWeakHeap.add_data.__module__ if heap else None,
        "thread_pools": _thread_pools(),
    }
