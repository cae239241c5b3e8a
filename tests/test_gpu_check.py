"""benchmarks/gpu_check.py and gpu_bundle.py on the CPU: the skip path, the time boxes, partial
results, the rehearsal of the parts, the skip decision of the GPU tests, and the fat-binary pruning.

What cannot exist here is faked, and each fake says so: an onnxruntime-gpu build (a CUDA provider
that is listed), and a CUDA fat binary (a synthetic one with the real container layout).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_bundle  # noqa: E402
import gpu_check  # noqa: E402


def _has_cuda_provider() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


# ---------------------------------------------------------------------------------------- the skip path

def test_without_cuda_the_check_says_why_writes_skipped_and_exits_0(tmp_path):
    if _has_cuda_provider():
        pytest.skip("this onnxruntime has CUDA: the skip path is for machines without it")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gpu_check skipped: CUDA is not available" in proc.stdout
    report = json.loads(out.read_text())
    assert report["skipped"] is True and "no CUDAExecutionProvider" in report["reason"]
    assert list(report["parts"]) == ["probe"] and report["machine"]["providers"]


class _FakeSession:
    def __init__(self, providers, fail=None):
        self._providers, self._fail = providers, fail

    def run(self, *args):
        return [None]

    def get_providers(self):
        return list(self._providers)


class _FakeOrt:
    """Stands in for onnxruntime-gpu, which cannot be installed beside the CPU build here."""

    __version__ = "1.31.1"

    def __init__(self, listed, active=None, error=None):
        self.listed, self.active, self.error = listed, active, error

    def get_available_providers(self):
        return list(self.listed)

    def InferenceSession(self, model, providers):  # noqa: N802 - onnxruntime's name
        if self.error:
            raise RuntimeError(self.error)
        return _FakeSession(self.active or providers)


def test_cuda_unavailable_reason_names_each_way_cuda_can_be_missing():
    cpu_build = _FakeOrt(["CPUExecutionProvider"])
    assert "has no CUDAExecutionProvider" in gpu_check.cuda_unavailable_reason(cpu_build)
    silent = _FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"], active=["CPUExecutionProvider"])
    assert "fell back to CPUExecutionProvider" in gpu_check.cuda_unavailable_reason(silent)
    broken = _FakeOrt(["CUDAExecutionProvider"], error="libcublasLt.so.13: cannot open shared object file")
    assert "libcublasLt.so.13" in gpu_check.cuda_unavailable_reason(broken)
    working = _FakeOrt(["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpu_check.cuda_unavailable_reason(working) == ""
    for fake in (cpu_build, silent, broken):  # the GPU tests' skip reasons are on conftest's allow-list
        assert gpu_check.cuda_unavailable_reason(fake).startswith("CUDA is not available")


def test_the_real_onnxruntime_here_gives_a_reason_or_runs_on_cuda():
    reason = gpu_check.cuda_unavailable_reason()
    assert reason.startswith("CUDA is not available") or reason == ""
    if not _has_cuda_provider():
        assert reason


def test_gpu_tests_skip_on_this_machine_with_the_reason():
    if not gpu_check.cuda_unavailable_reason():
        pytest.skip("a GPU is here: the GPU tests run instead")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_gpu.py")], capture_output=True, text=True, cwd=str(REPO),
                          timeout=120)
    assert proc.returncode in (0, 5), proc.stdout[-2000:]  # 5: the module skipped whole, so no test ran
    assert "1 skipped" in proc.stdout and "CUDA is not available" in proc.stdout


# ------------------------------------------------------------------------------------------- time boxes

def test_run_boxed_kills_a_hung_command_and_its_children():
    if not os.path.isdir("/proc"):
        pytest.skip("reads process states from Linux's /proc")
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; "
            "time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)")
    started = time.monotonic()
    result, output, seconds = gpu_check.run_boxed([sys.executable, "-c", code], 2.0)
    assert result is None and time.monotonic() - started < 15
    grandchild = int(output.split()[0])
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan waits for init to reap it)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_run_boxed_returns_exit_code_and_output():
    code, output, seconds = gpu_check.run_boxed([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], 30)
    assert code == 3 and output.strip() == "hi" and seconds < 30


def test_a_hung_part_costs_only_its_box_and_keeps_what_it_saved(tmp_path):
    out = tmp_path / "gpu.json"
    status = gpu_check.check_gpu(str(out), budget=120, parts=["selftest_hang", "tensorrt"], rehearse=True)
    report = json.loads(out.read_text())
    hung = report["parts"]["selftest_hang"]
    assert status == 1 and hung["status"] == "timeout" and "box" in hung["reason"]
    assert hung["figures"] == {"saved_before_hanging": True} and hung["seconds"] < 20
    assert report["parts"]["tensorrt"]["status"] == "skipped"  # the next part still ran
    assert report["summary"] == {"skipped": 1, "timeout": 1, "passed": 1}


def test_a_spent_budget_leaves_later_parts_not_run(tmp_path):
    out = tmp_path / "gpu.json"
    gpu_check.check_gpu(str(out), budget=gpu_check.RESERVE_SECONDS + gpu_check.MIN_PART_SECONDS + 2,
                        parts=["selftest_hang", "tensorrt"], rehearse=True)
    parts = json.loads(out.read_text())["parts"]
    assert parts["tensorrt"]["status"] == "not_run" and "budget" in parts["tensorrt"]["reason"]


def test_unknown_parts_are_refused():
    with pytest.raises(SystemExit, match="unknown part"):
        gpu_check.check_gpu(None, parts=["warp_drive"])


# ------------------------------------------------------------------------------------------- rehearsal

@pytest.mark.slow
def test_rehearsal_runs_iobinding_and_graph_parts_on_the_cpu(tmp_path):
    """The parts' code against dfl_perf's real APIs, on the CPU provider: same calls as on CUDA."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--parts", "iobinding,cuda_graph",
                           "--json", str(out)], capture_output=True, text=True, timeout=280, cwd=str(REPO))
    report = json.loads(out.read_text())
    assert report["rehearsal"] is True and "REHEARSAL" in proc.stdout
    for name in ("iobinding", "cuda_graph"):
        part = report["parts"][name]
        assert part["status"] == "passed", (name, part.get("error"), [c for c in part["checks"] if not c["ok"]])
    io = report["parts"]["iobinding"]["figures"]
    assert io["bound_device"]["device_pool"]["allocations_during_runs"] == 0
    assert io["bound_numpy"]["host_bytes_per_frame"]["frames"] == gpu_check.FRAMES
    assert report["parts"]["cuda_graph"]["figures"]["fallback"]["status"].startswith("fallback")
    assert proc.returncode == 0


def test_read_junit(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.test_gpu" name="test_a" time="0.5"/>'
                   '<testcase classname="tests.test_gpu" name="test_b" time="1"><failure message="assert 1 == 2">'
                   'trace</failure></testcase><testcase classname="tests.test_gpu" name="test_c" time="0">'
                   '<skipped message="CUDA is not available: x"/></testcase></testsuite></testsuites>')
    tests = gpu_check.read_junit(xml)
    assert [t["outcome"] for t in tests] == ["passed", "failed", "skipped"]
    assert tests[1]["message"] == "assert 1 == 2" and tests[2]["message"].startswith("CUDA is not available")


def test_child_env_puts_nvidia_pip_libraries_on_the_loader_path(tmp_path, monkeypatch):
    lib = tmp_path / "site" / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (tmp_path / "site" / "nvidia" / "cudnn" / "lib").mkdir(parents=True)
    assert gpu_check.nvidia_library_dirs([str(tmp_path / "site")]) == [
        str(tmp_path / "site" / "nvidia" / "cu13" / "lib"), str(tmp_path / "site" / "nvidia" / "cudnn" / "lib")]
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")] + sys.path)
    env = gpu_check.child_env(tmp_path, {"LD_LIBRARY_PATH": "/opt/x", "PYTHONPATH": "/tmp/site"})
    assert env["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(lib) and env["LD_LIBRARY_PATH"].endswith("/opt/x")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/tmp/site"]
    assert env["DFL_PERF_CACHE_DIR"] == str(tmp_path / "cache")


# --------------------------------------------------------------------------------------- the bundle tool

def _entry(kind: int, arch: int, payload: bytes) -> bytes:
    head = bytearray(64)
    struct.pack_into("<HHIQ", head, 0, kind, 0x101, 64, len(payload))
    struct.pack_into("<I", head, 28, arch)
    return bytes(head) + payload


def _container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", gpu_bundle.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_prune_fatbin_keeps_one_architecture_per_container():
    """A synthetic fat binary with the layout of CUDA's (no real one exists on this machine)."""
    a = _container(_entry(2, 80, b"A" * 40), _entry(2, 90, b"B" * 24), _entry(2, 120, b"C" * 16))
    b = _container(_entry(2, 120, b"D" * 8))  # nothing for sm_90: kept whole
    c = _container(_entry(1, 90, b"P" * 8), _entry(2, 75, b"E" * 8))  # PTX is always kept
    section = a + bytes(8) + b + c
    buf = bytearray(b"HEAD" + section + b"TAIL")
    stats = gpu_bundle.prune_fatbin(buf, 4, len(section), 90)
    assert stats == {"containers": 3, "kept": 3, "dropped": 3, "whole": 1, "bytes_dropped": 64 + 40 + 64 + 16 + 64 + 8}
    assert len(buf) == len(section) + 8 and buf[:4] == b"HEAD" and buf[-4:] == b"TAIL"
    magic, _v, head, size = struct.unpack_from("<IHHQ", buf, 4)
    assert (magic, size) == (gpu_bundle.FATBIN_MAGIC, 64 + 24)
    assert struct.unpack_from("<I", buf, 4 + 16 + 28)[0] == 90 and bytes(buf[4 + 16 + 64:4 + 16 + 88]) == b"B" * 24
    assert bytes(buf[4 + 16 + 88:4 + len(a)]) == bytes(len(a) - 16 - 88)  # the rest of the container is zeros
    assert bytes(buf[4 + len(a) + 8:4 + len(a) + 8 + len(b)]) == b


def test_prune_fatbin_refuses_a_container_that_does_not_add_up():
    bad = bytearray(struct.pack("<IHHQ", gpu_bundle.FATBIN_MAGIC, 1, 16, 100) + _entry(2, 90, b"x" * 8) + bytes(28))
    with pytest.raises(ValueError, match="do not add up|past its section"):
        gpu_bundle.prune_fatbin(bad, 0, len(bad), 90)


def test_elf_section_finds_a_section_of_a_real_library():
    path = Path(sys.executable).resolve()
    data = path.read_bytes()
    if not data.startswith(b"\x7fELF"):
        pytest.skip("needs an ELF interpreter binary (Linux)")
    offset, size = gpu_bundle.elf_section(data, ".text")
    assert 0 < offset < len(data) and size > 0
    assert gpu_bundle.elf_section(data, ".nv_fatbin") is None
    with pytest.raises(ValueError, match="ELF"):
        gpu_bundle.elf_section(b"not an elf" * 10, ".text")


def test_bundle_prints_the_device_command():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bundle.py"), "--print-run"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "benchmarks/gpu_check.py --json $OUT/gpu_check.json" in out and "tar -xJf .whl/ort-gpu.tar.xz" in out
    assert "gpu_bundle.py --print-run" in gpu_check.__doc__


def test_a_parts_inner_commands_end_before_its_own_box(tmp_path):
    """The part's box kills its process group only; commands it starts in groups of their own must
    stop first, so each gets at most what is left of the part's box (less a margin)."""
    part = gpu_check.Part("benchmark", tmp_path / "p.json", tmp_path, True, deadline=time.time() + 20)
    assert 15 <= part.box(230) <= 17 and part.box(5) == 5
    assert gpu_check.Part("x", tmp_path / "p.json", tmp_path, True, deadline=time.time() + 1).box(60) == 1.0
