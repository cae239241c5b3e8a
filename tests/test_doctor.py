"""`dfl-perf doctor`: real run on this machine, and the recommendations for described machines."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dfl_perf import doctor
from dfl_perf.cli import main


def _info(**changes):
    info = doctor.collect(measure_imports=False)
    info.update(changes)
    return info


@pytest.mark.timeout(120)
def test_doctor_json_runs_in_a_subprocess(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dfl_perf", "doctor", "--json", "--no-import-cost"],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["cpu"]["budget"] >= 1
    assert "CPUExecutionProvider" in info["providers"]
    assert isinstance(info["recommendations"], list)


def test_doctor_text_report(capsys):
    import platform

    import numpy as np
    import onnxruntime as ort

    assert main(["doctor", "--no-import-cost"]) == 0
    text = capsys.readouterr().out
    assert "Python %s" % platform.python_version() in text
    assert "numpy %s   onnxruntime %s" % (np.__version__, ort.__version__) in text
    assert "CPUExecutionProvider" in text.split("providers", 1)[1].splitlines()[0]
    assert "Recommendations" in text


def test_recommends_gpu_flavour_when_gpu_but_cpu_only():
    gpu = doctor.detect_gpus.__globals__["GpuInfo"](0, "RTX 3080", 1, 1, 0, 0, "550", (8, 6))
    info = _info(problems=doctor.install_problems(gpus=[gpu], providers=["CPUExecutionProvider"],
                                                  flavours=["onnxruntime"]))
    assert any("RTX 3080" in a and "onnxruntime-gpu" in a for a in doctor.recommendations(info))
    for gpus, providers in (([], ["CPUExecutionProvider"]), ([gpu], ["CUDAExecutionProvider", "CPUExecutionProvider"])):
        fine = _info(problems=doctor.install_problems(gpus=gpus, providers=providers, flavours=["onnxruntime"]))
        assert not any("install onnxruntime-gpu instead" in a for a in doctor.recommendations(fine))


def test_recommends_spinning_off_on_small_cpu():
    info = _info(providers=["CPUExecutionProvider"], cpu={"logical": 2, "budget": 2})
    assert any("only 2 usable CPU core(s)" in a and "spinning" in a for a in doctor.recommendations(info))
    big = _info(providers=["CPUExecutionProvider"], cpu={"logical": 16, "budget": 16})
    assert not any("spinning" in a for a in doctor.recommendations(big))


def test_recommends_heuristic_search_with_cuda():
    info = _info(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert any("HEURISTIC" in a for a in doctor.recommendations(info))
    assert not any("HEURISTIC" in a for a in doctor.recommendations(_info(providers=["CPUExecutionProvider"])))


def test_detects_dfl_zero_width_space_bug(tmp_path):
    device_py = tmp_path / "xlib" / "onnxruntime" / "device.py"
    device_py.parent.mkdir(parents=True)
    device_py.write_text("import os\nos.environ['CUDA_\u200bCACHE_\u200bMAXSIZE'] = '2147483647'\n", encoding="utf-8")
    info = doctor.collect(measure_imports=False, dfl_path=str(tmp_path))
    assert info["dfl"]["found"] and info["dfl"]["zwsp_bug"]
    assert any("CUDA_CACHE_MAXSIZE" in a for a in doctor.recommendations(info))
    device_py.write_text("import os\nos.environ['CUDA_CACHE_MAXSIZE'] = '2147483647'\n", encoding="utf-8")
    fixed = doctor.collect(measure_imports=False, dfl_path=str(tmp_path))
    assert fixed["dfl"]["found"] and not fixed["dfl"]["zwsp_bug"]
    assert not any("CUDA_CACHE_MAXSIZE" in a for a in doctor.recommendations(fixed))
