"""dfl_perf.lazy and the promise that `import dfl_perf` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import types

import pytest

from dfl_perf.lazy import LazyModule, import_cost, is_available, lazy_import, optional_import

HEAVY = ("numpy", "onnxruntime", "cv2", "onnx", "psutil", "pynvml")


def _modules_after(code: str) -> set:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, cwd=str(_repo()))
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stmt", [
    "import dfl_perf",
    "import dfl_perf.lazy",
    "import dfl_perf.devices",
    "import dfl_perf.paths",
    "import dfl_perf.cli",
])
def test_light_imports_pull_in_nothing_heavy(stmt):
    loaded = _modules_after(stmt)
    assert not loaded & set(HEAVY), "%s imported %s" % (stmt, sorted(loaded & set(HEAVY)))


def test_lazy_import_defers_until_attribute_access():
    name = "json.tool"  # small stdlib module, rarely imported
    sys.modules.pop(name, None)
    proxy = lazy_import(name)
    assert isinstance(proxy, LazyModule)
    assert name not in sys.modules
    assert callable(proxy.main)
    assert name in sys.modules
    assert "loaded" in repr(proxy)


def test_lazy_import_returns_real_module_when_already_imported():
    assert lazy_import("json") is json


@pytest.mark.timeout(30)
def test_lazy_import_under_16_threads_imports_once(monkeypatch):
    import importlib

    name = "dfl_perf_fake_slow_module"
    calls = []
    real_import = importlib.import_module

    def slow_import(mod_name, *args):
        if mod_name == name:
            calls.append(threading.get_ident())
            threading.Event().wait(0.05)  # widen the race window
            module = types.ModuleType(name)
            module.value = 42
            sys.modules[name] = module
            return module
        return real_import(mod_name, *args)

    monkeypatch.setattr(importlib, "import_module", slow_import)
    proxy = lazy_import(name)
    barrier = threading.Barrier(16)
    seen = []

    def touch():
        barrier.wait()
        seen.append(proxy.value)

    threads = [threading.Thread(target=touch) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    sys.modules.pop(name, None)
    assert seen == [42] * 16
    assert len(calls) == 1


def test_lazy_import_of_missing_module_fails_at_first_use():
    proxy = lazy_import("dfl_perf_no_such_module_xyz")
    with pytest.raises(ImportError):
        proxy.anything  # noqa: B018


def test_optional_import_and_is_available():
    assert optional_import("json") is json
    assert optional_import("dfl_perf_no_such_module_xyz") is None
    assert is_available("json")
    assert not is_available("dfl_perf_no_such_module_xyz")
    assert not is_available("dfl_perf_no_such_pkg.sub")


def test_is_available_does_not_import():
    loaded = _modules_after("from dfl_perf.lazy import is_available; assert is_available('numpy')")
    assert "numpy" not in loaded


@pytest.mark.timeout(120)
def test_import_cost_measures_in_fresh_interpreters():
    costs = import_cost(["json", "dfl_perf_no_such_module_xyz"])
    assert costs["dfl_perf_no_such_module_xyz"] is None
    assert 0 < costs["json"] < 5
