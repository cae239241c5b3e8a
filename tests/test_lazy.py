"""dfl_perf.lazy and the promise that `import dfl_perf` stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dfl_perf.lazy import import_cost, is_available, optional_import

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
    "import dfl_perf.processor",
    "import dfl_perf.monitor",
    "import dfl_perf.facepipe",
])
def test_light_imports_pull_in_nothing_heavy(stmt):
    loaded = _modules_after(stmt)
    assert not loaded & set(HEAVY), "%s imported %s" % (stmt, sorted(loaded & set(HEAVY)))


def test_optional_import_and_is_available():
    assert optional_import("json") is json
    assert optional_import("dfl_perf_no_such_module_xyz") is None
    assert is_available("json")
    assert not is_available("dfl_perf_no_such_module_xyz")
    assert not is_available("dfl_perf_no_such_pkg.sub")


def test_optional_import_counts_a_broken_install_as_absent(tmp_path, monkeypatch):
    (tmp_path / "dfl_perf_broken_mod.py").write_text("raise OSError('DLL load failed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert is_available("dfl_perf_broken_mod")
    assert optional_import("dfl_perf_broken_mod") is None
    sys.modules.pop("dfl_perf_broken_mod", None)


def test_is_available_does_not_import():
    loaded = _modules_after("from dfl_perf.lazy import is_available; assert is_available('numpy')")
    assert "numpy" not in loaded


@pytest.mark.timeout(120)
def test_import_cost_measures_in_fresh_interpreters():
    costs = import_cost(["json", "dfl_perf_no_such_module_xyz"])
    assert costs["dfl_perf_no_such_module_xyz"] is None
    assert 0 < costs["json"] < 5
