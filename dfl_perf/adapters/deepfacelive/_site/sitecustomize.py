"""dfl_perf's sitecustomize for DeepFaceLive workers (on PYTHONPATH only when the launcher put it there).

Python imports ``sitecustomize`` at start-up, before any user code, in the launcher's process and in
every process multiprocessing spawns from it (they inherit PYTHONPATH and the environment). Here:

1. run the ``sitecustomize`` this one hides, if any (the next one on ``sys.path``);
2. when ``DFL_PERF_DFL_CONFIG`` is set, install dfl_perf's import hook, which patches DFL's modules
   as they are imported. Nothing heavy is imported here.

Any error is printed and ignored: DeepFaceLive must start even if dfl_perf cannot.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(_HERE))))


def _same_dir(entry):
    try:
        return os.path.samefile(entry or os.getcwd(), _HERE)
    except OSError:
        return False


def _run_hidden_sitecustomize():
    search = [p for p in sys.path if not _same_dir(p)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", search)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["_dfl_perf_chained_sitecustomize"] = module
    spec.loader.exec_module(module)


def _activate():
    if not os.environ.get("DFL_PERF_DFL_CONFIG"):
        return
    try:
        from dfl_perf.adapters.deepfacelive._install import activate_from_env
    except ImportError:
        sys.path.append(_PACKAGE_ROOT)  # dfl_perf run from a checkout rather than installed
        from dfl_perf.adapters.deepfacelive._install import activate_from_env
    activate_from_env()


for _step in (_run_hidden_sitecustomize, _activate):
    try:
        _step()
    except Exception as _exc:  # never stop DeepFaceLive from starting
        sys.stderr.write("dfl_perf: sitecustomize step %s failed: %r\n" % (_step.__name__, _exc))
