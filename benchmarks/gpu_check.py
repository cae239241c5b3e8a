"""One prepared GPU check: every CUDA path of dfl_perf in one run, under 8 minutes (issue 24).

    python benchmarks/gpu_check.py [--json PATH] [--budget SECONDS] [--parts a,b] [--rehearse]

Without a usable CUDA provider (no onnxruntime-gpu, no GPU, CUDA/cuDNN libraries missing) it
prints why, writes ``{"skipped": true, "reason": ...}`` and exits 0. On a CUDA machine it runs
these parts, each in a fresh process with its own time box inside one overall budget (default
360 s), and rewrites the JSON after every part, so one hang costs only its box and everything
measured before it is kept:

- ``probe``: onnxruntime build, providers, NVML's GPUs, one tiny session that must run on CUDA;
- ``pytest_gpu``: ``pytest -m gpu`` (tests/test_gpu.py), every test's outcome;
- ``iobinding``: the DFM stand-in through ``BoundSession`` on device 'cuda' with pooled device
  buffers (``OrtValuePool``): host bytes allocated per frame (tracemalloc), new device-pool bytes
  per frame, device memory growth (NVML), ms per frame, outputs against the CPU provider's;
- ``cuda_graph``: ``BoundSession(enable_cuda_graph=True)``: captured, replayed, same outputs, ms
  per frame with and without; a second input shape; the fallback when capture is impossible (a
  node only the CPU provider runs);
- ``tensorrt``: when the TensorRT provider really starts: cold engine build, then a warm start
  from the engine cache in a fresh process (engine files unchanged);
- ``device_memory``: peak device memory (NVML through ``dfl_perf.monitor.SystemSampler``) of the
  reference workload with a DFM-sized stand-in (200 MB of weights) in the default and
  ``low_memory`` modes of ``OptimizedRunner`` and DFL's way, each in a fresh process;
- ``benchmark``: ``dfl-perf benchmark --quick --provider cuda``.

Exit status: 0 when every part passed or was skipped with its reason (or the whole check was
skipped), 1 otherwise. ``--rehearse`` runs every part on the CPU provider instead: it proves the
script's own plumbing on a machine without a GPU; its figures are not GPU figures.

The device recipe (no GPU was lent to the session that wrote this; run it the day one is):
the lent machine (KINDS.md: one H200, Python 3.12 at /opt/torch/.venv, CUDA 13 libraries from
pip, onnx/numpy/opencv/psutil/nvidia-ml-py/pytest installed, *plain CPU onnxruntime*, no network,
64 MiB per call) needs onnxruntime-gpu, which is 256 MB as a wheel. ``benchmarks/gpu_bundle.py``
makes it fit: it downloads the wheel for that Python and platform here, keeps only the Hopper
(sm_90) kernels of its CUDA provider, adds platformdirs (missing there) and packs it all with xz
(58 MiB; the checkout adds about 2; the tool refuses a bundle that would pass 64 MiB)::

    mkdir -p .whl && echo /.whl/ >> .git/info/exclude    # in the checkout the session runs from
    python benchmarks/gpu_bundle.py .whl                 # here: pip download + prune + pack (about 4 minutes)

then ONE device call (``carry: [".whl"]``, ``timeout_s: 420``; the script's budget is 360 s, so a
rerun on the warm machine still fits in the 15 device minutes with the machine's start)::

    tar -xJf .whl/ort-gpu.tar.xz -C /tmp && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
    python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log

``gpu_bundle.py --print-run`` prints exactly that command. The machine's own CPU onnxruntime stays
installed (``/tmp/site`` comes first on ``sys.path``), so dfl_perf's "several onnxruntime flavours"
warning is expected there. If the sm_90-only CUDA provider fails to load its kernels ("no kernel
image is available"), the unpruned wheel needs five calls of 60 MB chunks instead (assembled in /tmp). README's "GPU status" says what to do
with the results (RESULTS.md, and the README claims they replace).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BUDGET_SECONDS = 360.0  # the whole check: twice this plus a machine start fits the 15 device minutes
RESERVE_SECONDS = 10.0  # kept back for writing the report
MIN_PART_SECONDS = 15.0  # a part that would get less is not started
DIFF_TOLERANCE = 1.0 / 255  # outputs 0..1: less than one uint8 level once scaled to a frame
FRAMES = 50  # timed runs per variant in iobinding and cuda_graph
WEIGHTS_MB = 200.0  # the DFM-sized stand-in of device_memory (real DFMs: 100-700 MB)

#: (part, time box in seconds), in the order they run
PARTS: List[Tuple[str, float]] = [
    ("probe", 90.0),
    ("pytest_gpu", 150.0),
    ("iobinding", 90.0),
    ("cuda_graph", 90.0),
    ("tensorrt", 150.0),
    ("device_memory", 150.0),
    ("benchmark", 240.0),
]
#: a part only the tests run (never by default): it saves a partial result, then hangs
TEST_PARTS: Dict[str, float] = {"selftest_hang": 3.0}
FAILING = ("failed", "error", "timeout")


# ============================================================================ the parent: orchestration

def nvidia_library_dirs(paths: Sequence[str]) -> List[str]:
    """``lib`` folders of NVIDIA's pip packages (nvidia/cu13/lib, nvidia/cudnn/lib, ...) under ``paths``.

    onnxruntime-gpu loads libcublas, libcudnn and friends by name; on a machine where they come from
    pip (PyTorch's) and onnxruntime lives elsewhere, nothing else tells the loader where they are.
    """
    found: List[str] = []
    for base in paths:
        for lib in sorted(glob.glob(os.path.join(base or ".", "nvidia", "*", "lib"))):
            if os.path.isdir(lib) and lib not in found:
                found.append(lib)
    return found


def child_env(workdir: Path, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of every part: this repo importable, NVIDIA's pip libraries on the loader's
    path, a fresh dfl_perf cache (cold-start figures, a private TensorRT engine cache)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    libs = nvidia_library_dirs(sys.path)
    if libs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in [env.get("LD_LIBRARY_PATH", "")] if p])
    env["DFL_PERF_CACHE_DIR"] = str(workdir / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_boxed(cmd: Sequence[str], seconds: float, env: Optional[Dict[str, str]] = None,
              cwd: Optional[str] = None) -> Tuple[Optional[int], str, float]:
    """Run ``cmd`` for at most ``seconds``; returns (exit code or None on timeout, output, seconds).

    The command gets its own process group, and the whole group is killed at the limit, so a hung
    grandchild (pytest's, the benchmark's workers) cannot outlive its box.
    """
    started = time.monotonic()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=max(0.1, seconds))
        code: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        output, _ = proc.communicate()
        code = None
    return code, output or "", time.monotonic() - started


def run_part(name: str, seconds: float, workdir: Path, env: Dict[str, str], rehearse: bool) -> Dict[str, Any]:
    """One part in a fresh process, time-boxed; its result, also when it hung or crashed."""
    out = workdir / ("%s.json" % name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--out", str(out),
           "--workdir", str(workdir), "--deadline", "%.3f" % (time.time() + seconds)] + (["--rehearse"] if rehearse else [])
    code, output, elapsed = run_boxed(cmd, seconds, env, cwd=str(REPO))
    result: Dict[str, Any] = {}
    if out.is_file():
        try:
            result = json.loads(out.read_text())
        except ValueError:
            result = {}
    if code is None:
        result["status"] = "timeout"
        result["reason"] = "still running after its %.0f s box; killed (figures above were measured before)" % seconds
    elif not result:
        result = {"status": "error", "reason": "the part exited %s without a result" % code}
    result["seconds"] = round(elapsed, 1)
    if result.get("status") in FAILING or name == "probe":
        result["log_tail"] = output[-3000:]
    return result


def write_report(path: Optional[str], report: Dict[str, Any]) -> None:
    """Write the JSON atomically (a reader never sees half a file)."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(str(tmp), str(target))


def _summary_line(name: str, result: Dict[str, Any]) -> str:
    keys = result.get("headline") or {}
    figures = ", ".join("%s %s" % (k, v) for k, v in keys.items())
    why = result.get("reason") or result.get("error") or ""
    failed = [c["check"] for c in result.get("checks", []) if not c["ok"]]
    tail = "; failed: %s" % ", ".join(failed) if failed else ""
    return "%-14s %-8s %6.1fs  %s%s%s" % (name, result.get("status", "?"), result.get("seconds", 0.0), figures,
                                          (" | " + why) if why and not figures else "", tail)


def check_gpu(json_path: Optional[str], budget: float = BUDGET_SECONDS, parts: Optional[Sequence[str]] = None,
              rehearse: bool = False) -> int:
    """Run the check; returns the exit status (see the module docstring)."""
    started = time.monotonic()
    deadline = started + budget
    boxes = dict(PARTS, **TEST_PARTS)
    wanted = [p for p, _ in PARTS] if not parts else ["probe"] + [p for p in parts if p != "probe"]
    unknown = [p for p in wanted if p not in boxes]
    if unknown:
        raise SystemExit("unknown part(s) %s; known: %s" % (", ".join(unknown), ", ".join(p for p, _ in PARTS)))
    report: Dict[str, Any] = {"check": "dfl_perf GPU check (issue 24)", "rehearsal": rehearse, "skipped": False,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "budget_seconds": budget,
                              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "parts": {}}
    with tempfile.TemporaryDirectory(prefix="dfl_perf_gpu_check_") as tmp:
        workdir = Path(tmp)
        env = child_env(workdir)
        report["nvidia_library_dirs"] = nvidia_library_dirs(sys.path)
        for name in wanted:
            box = boxes[name]
            left = deadline - time.monotonic() - RESERVE_SECONDS
            if left < MIN_PART_SECONDS:
                report["parts"][name] = {"status": "not_run", "reason": "the %.0f s budget was spent" % budget}
                continue
            print("gpu_check: %s (box %.0f s) ..." % (name, min(box, left)), flush=True)
            result = run_part(name, min(box, left), workdir, env, rehearse)
            print("gpu_check: %s %s in %.0f s" % (name, result.get("status"), result.get("seconds", 0)), flush=True)
            report["parts"][name] = result
            if name == "probe":
                report["machine"] = result.get("machine")
                if not rehearse and not result.get("cuda"):
                    return _skipped(json_path, report, result)
            report["seconds"] = round(time.monotonic() - started, 1)
            write_report(json_path, report)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    statuses = [r.get("status") for r in report["parts"].values()]
    report["summary"] = {s: statuses.count(s) for s in sorted(set(statuses))}
    write_report(json_path, report)
    print("\n== gpu_check%s: %.0f s of %.0f ==" % (" (REHEARSAL on the CPU: not GPU figures)" if rehearse else "",
                                                   report["seconds"], budget))
    for name, result in report["parts"].items():
        print(_summary_line(name, result))
    if json_path:
        print("wrote %s" % json_path)
    return 1 if any(s in FAILING for s in statuses) else 0


def _skipped(json_path: Optional[str], report: Dict[str, Any], probe: Dict[str, Any]) -> int:
    if probe.get("status") in FAILING:
        report["error"] = "the probe itself failed: %s" % (probe.get("reason") or probe.get("error"))
        write_report(json_path, report)
        print("gpu_check: %s" % report["error"], file=sys.stderr)
        return 1
    reason = probe.get("reason") or "no usable CUDA execution provider"
    report.update(skipped=True, reason=reason, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_report(json_path, report)
    print("gpu_check skipped: %s" % reason)
    return 0


# =================================================================================== the parts (children)

class Part:
    """What a part's process has: where to write, the device under test, and the result so far."""

    def __init__(self, name: str, out: Path, workdir: Path, rehearse: bool, deadline: float = 0.0) -> None:
        self.name = name
        self.deadline = deadline or time.time() + 3600
        self.out = out
        self.workdir = workdir
        self.rehearse = rehearse
        self.provider = "cpu" if rehearse else "cuda"
        self.device = "cpu" if rehearse else "cuda"
        self.result: Dict[str, Any] = {"status": "passed", "checks": [], "headline": {}}

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        """Record one pass/fail check (a failed one fails the part, the part goes on)."""
        self.result["checks"].append({"check": name, "ok": bool(ok), "detail": detail})
        self.save()
        return bool(ok)

    def box(self, seconds: float) -> float:
        """A time box for a command this part runs: ``seconds``, cut to end before the part's own box
        does (the part's box kills only its own process group; a command in a group of its own must
        be stopped by its own box first)."""
        return max(1.0, min(seconds, self.deadline - time.time() - 3.0))

    def skip(self, reason: str) -> None:
        self.result["status"] = "skipped"
        self.result["reason"] = reason

    def save(self) -> None:
        """Write what is known so far (kept if the part is killed at its box)."""
        write_report(str(self.out), self.result)

    def finish(self) -> None:
        if self.result["status"] == "passed" and not all(c["ok"] for c in self.result["checks"]):
            self.result["status"] = "failed"
        self.save()


def _ort():
    import onnxruntime

    return onnxruntime


def _standin(resolution: int = 224, cost: str = "20ms", dense_mb: float = 0.0) -> bytes:
    from dfl_perf.facepipe.standin import build_dfm_standin

    return build_dfm_standin(resolution=resolution, cost=cost, dense_mb=dense_mb).SerializeToString()


def _faces(batch: int, res: int = 224, seed: int = 0):
    import numpy as np

    rng = np.random.RandomState(seed)
    return (rng.randint(0, 256, size=(batch, res, res, 3)).astype(np.float32) / 255.0).astype(np.float32)


def _session(model: bytes, provider: str, **cuda_options: str):
    """A tuned dfl_perf session on ``provider`` (strict: a silent fallback would be an error)."""
    from dfl_perf.devices import select_providers
    from dfl_perf.sessions import SessionConfig, create_session

    providers = select_providers(provider)[:1]
    if cuda_options and providers[0][0] == "CUDAExecutionProvider":
        providers = [(providers[0][0], dict(providers[0][1], **cuda_options))]
    return create_session(model, SessionConfig.tuned(providers=providers).replace(strict=True))


def _max_diff(got: Sequence[Any], want: Sequence[Any]) -> float:
    import numpy as np

    return float(max(np.abs(np.asarray(g, np.float64) - np.asarray(w, np.float64)).max() for g, w in zip(got, want)))


def _ms_per_run(run: Callable[[], Any], count: int = FRAMES) -> float:
    import statistics

    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)


def _device_used() -> Optional[int]:
    """Bytes in use on GPU 0, device-wide, from NVML (the lent GPU runs nothing else); None without NVML."""
    from dfl_perf.monitor import SystemSampler

    sampler = SystemSampler(interval=1.0, gpus=True)
    try:
        gpus = sampler.sample_once().get("gpus") or []
    finally:
        sampler.close()
    return gpus[0]["memory_used"] if gpus else None


# ------------------------------------------------------------------------------------------------ probe

def part_probe(p: Part) -> None:
    """What this machine has, and whether one tiny session really runs on CUDA."""
    import platform

    from dfl_perf.devices import detect_gpus, installed_onnxruntime_flavours

    gpus = detect_gpus()
    machine: Dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                               "cpu_count": os.cpu_count(), "gpus": [g.__dict__ for g in gpus],
                               "nvml": gpus.reason or "ok"}
    p.result["machine"] = machine
    try:
        ort = _ort()
    except ImportError as exc:
        p.result.update(cuda=False, reason="onnxruntime is not installed (%s); install onnxruntime-gpu" % exc)
        return
    machine["onnxruntime"] = ort.__version__
    machine["onnxruntime_flavours"] = installed_onnxruntime_flavours()
    machine["onnxruntime_cuda_build"] = _ort_cuda_build()
    providers = list(ort.get_available_providers())
    machine["providers"] = providers
    gpu_note = ("; NVML sees %s" % ", ".join(g.name for g in gpus)) if gpus else ("; %s" % gpus.reason)
    reason = cuda_unavailable_reason(ort)
    if reason:
        p.result.update(cuda=False, reason=reason + gpu_note)
        return
    p.result.update(cuda=True)
    p.result["headline"] = {"gpu": gpus[0].name if gpus else "?", "onnxruntime": ort.__version__}


def cuda_unavailable_reason(ort: Any = None) -> str:
    """Why no session can run on CUDA here ('' when one can): the GPU tests' skip and the script's.

    A CUDA provider in ``get_available_providers()`` is not enough: onnxruntime-gpu lists it even
    without a GPU or without the CUDA/cuDNN libraries, and then falls back to the CPU in silence.
    So one tiny session must be created on CUDA, run, and still report CUDA as its provider.
    """
    if ort is None:
        try:
            ort = _ort()
        except ImportError as exc:
            return "CUDA is not available: onnxruntime is not installed (%s)" % exc
    providers = list(ort.get_available_providers())
    if "CUDAExecutionProvider" not in providers:
        return ("CUDA is not available: onnxruntime %s has no CUDAExecutionProvider (providers: %s; "
                "it is not onnxruntime-gpu)" % (ort.__version__, ", ".join(providers)))
    try:
        import numpy as np

        session = ort.InferenceSession(_tiny_model(), providers=["CUDAExecutionProvider"])
        session.run(None, {"x": np.ones((2, 4), np.float32)})
    except Exception as exc:
        return ("CUDA is not available: CUDAExecutionProvider is listed but a session on it failed: %s"
                % " ".join(str(exc).split())[:600])
    active = list(session.get_providers())
    if active[:1] != ["CUDAExecutionProvider"]:
        return ("CUDA is not available: CUDAExecutionProvider is listed but the session fell back to %s "
                "(no GPU, or the CUDA/cuDNN libraries were not found)" % ", ".join(active))
    return ""


def _ort_cuda_build() -> Optional[str]:
    try:
        from onnxruntime.capi import build_and_package_info as info
    except ImportError:
        return None
    return getattr(info, "cuda_version", None)


def _tiny_model() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


# ------------------------------------------------------------------------------------------- pytest -m gpu

def part_pytest_gpu(p: Part) -> None:
    """``pytest -m gpu`` over tests/, each test's outcome from its JUnit XML."""
    junit = p.workdir / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
           "--junitxml", str(junit), "tests"]
    code, output, seconds = run_boxed(cmd, p.box(140.0), cwd=str(REPO))
    tests = read_junit(junit) if junit.is_file() else []
    counts = {k: sum(1 for t in tests if t["outcome"] == k) for k in ("passed", "failed", "error", "skipped")}
    p.result.update(exit_code=code, tests=tests, counts=counts, output_tail=output[-2500:])
    p.result["headline"] = counts
    if p.rehearse:
        p.check("on a CPU machine every GPU test skips with its reason",
                tests and all(t["outcome"] == "skipped" and t["message"] for t in tests), counts)
        return
    p.check("pytest -m gpu ran tests", bool(tests), "exit %s" % code)
    p.check("no GPU test failed", counts["failed"] == 0 and counts["error"] == 0 and code in (0, 5), counts)


def read_junit(path: Path) -> List[Dict[str, Any]]:
    """[{test, outcome, seconds, message}] from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    tests = []
    for case in ET.parse(str(path)).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = " ".join((node.get("message") or node.text or "").split())[:500]
                break
        tests.append({"test": "%s::%s" % (case.get("classname", ""), case.get("name", "")), "outcome": outcome,
                      "seconds": float(case.get("time") or 0.0), "message": message})
    return tests


# ----------------------------------------------------------------------------------------------- iobinding

def part_iobinding(p: Part) -> None:
    """The DFM stand-in: plain runs vs BoundSession (host outputs) vs device-resident OrtValues."""
    import numpy as np

    from dfl_perf.benchmark.measure import allocations_per_frame
    from dfl_perf.buffers import BoundSession, OrtValuePool

    ort = _ort()
    model = _standin()
    x = _faces(1)
    feeds = {"in_face:0": x}
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)
    session = _session(model, p.provider)
    p.result["session_providers"] = list(session.get_providers())
    figures: Dict[str, Any] = {}
    p.result["figures"] = figures

    plain = session.run(None, feeds)
    p.check("plain run on %s equals the CPU provider's" % p.provider, _max_diff(plain, reference) <= DIFF_TOLERANCE,
            {"max_abs_diff": _max_diff(plain, reference), "tolerance": DIFF_TOLERANCE})
    figures["plain_run"] = {"ms_per_frame": _ms_per_run(lambda: session.run(None, feeds)),
                            "host_bytes_per_frame": allocations_per_frame(lambda i: session.run(None, feeds), FRAMES)}
    p.save()

    with BoundSession(session, device=p.device) as bound:
        out = [o.copy() for o in bound.run(feeds)]
        p.check("BoundSession numpy outputs equal the CPU provider's", _max_diff(out, reference) <= DIFF_TOLERANCE,
                {"max_abs_diff": _max_diff(out, reference)})
        figures["bound_numpy"] = {"ms_per_frame": _ms_per_run(lambda: bound.run(feeds)),
                                  "host_bytes_per_frame": allocations_per_frame(lambda i: bound.run(feeds), FRAMES)}
        p.save()

        pool = bound.device_pool if bound.device_pool is not None else OrtValuePool("cpu")
        x_dev = pool.acquire(x.shape, np.float32)
        x_dev.update_inplace(x)
        device_feeds = {"in_face:0": x_dev}
        values = bound.run(device_feeds, as_ortvalues=True)
        where = sorted({v.device_name().lower() for v in values})
        p.check("OrtValue outputs stay on %s" % p.device, where == [p.device], where)
        got = [v.numpy() for v in values]
        p.check("device-resident outputs equal the CPU provider's", _max_diff(got, reference) <= DIFF_TOLERANCE,
                {"max_abs_diff": _max_diff(got, reference)})
        before, used_before = pool.stats(), _device_used()
        ms = _ms_per_run(lambda: bound.run(device_feeds, as_ortvalues=True))
        host = allocations_per_frame(lambda i: bound.run(device_feeds, as_ortvalues=True), FRAMES)
        after, used_after = pool.stats(), _device_used()
        runs = 2 * FRAMES
        new_bytes = max(0, after["peak_bytes"] - before["peak_bytes"])
        figures["bound_device"] = {
            "ms_per_frame": ms, "host_bytes_per_frame": host,
            "device_pool": {"allocations_during_runs": after["allocations"] - before["allocations"],
                            "new_device_bytes_per_frame": new_bytes / runs, "bytes_held": after["bytes_held"],
                            "reuse_rate": after["reuse_rate"]},
            "nvml_used_growth_bytes": (used_after - used_before) if used_after is not None and used_before is not None
            else None}
        p.check("no device buffer allocated after the first run (pooled)",
                after["allocations"] == before["allocations"], figures["bound_device"]["device_pool"])
        pool.release(x_dev)
    p.result["headline"] = {"ms/frame plain": figures["plain_run"]["ms_per_frame"],
                            "bound": figures["bound_numpy"]["ms_per_frame"],
                            "device-resident": figures["bound_device"]["ms_per_frame"],
                            "host B/frame device-resident": figures["bound_device"]["host_bytes_per_frame"]["median"]}


# ---------------------------------------------------------------------------------------------- cuda_graph

def part_cuda_graph(p: Part) -> None:
    """Capture and replay, another shape beside it, and the fallback when a node cannot be captured."""
    import warnings

    from dfl_perf.buffers import BoundSession
    from dfl_perf.buffers._graph import CudaGraphFallbackWarning

    ort = _ort()
    model = _standin()
    x1, x2 = _faces(1, seed=1), _faces(2, seed=2)
    cpu = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    ref1, ref2 = cpu.run(None, {"in_face:0": x1}), cpu.run(None, {"in_face:0": x2})
    session = _session(model, p.provider)
    figures: Dict[str, Any] = {}
    p.result["figures"] = figures
    with BoundSession(session, device=p.device) as plain:
        figures["ms_per_frame_without_graph"] = _ms_per_run(lambda: plain.run({"in_face:0": x1}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BoundSession(session, device=p.device, enable_cuda_graph=True) as bound:
            out1 = [o.copy() for o in bound.run({"in_face:0": x1})]
            figures["status_after_first_run"] = bound.cuda_graph_status
            figures["ms_per_frame_with_graph"] = _ms_per_run(lambda: bound.run({"in_face:0": x1}))
            out2 = [o.copy() for o in bound.run({"in_face:0": x2})]
            stats = bound.stats()
    figures["stats"] = stats
    figures["warnings"] = [str(w.message) for w in caught]
    p.save()
    p.check("batch-1 outputs equal the CPU provider's", _max_diff(out1, ref1) <= DIFF_TOLERANCE, _max_diff(out1, ref1))
    p.check("a second input shape runs beside the graph, correct", _max_diff(out2, ref2) <= DIFF_TOLERANCE,
            _max_diff(out2, ref2))
    if p.rehearse:
        p.check("on the CPU the graph falls back with a reason", stats["cuda_graph"].startswith("fallback"),
                stats["cuda_graph"])
    else:
        p.check("the graph was captured and replayed", stats["cuda_graph"].startswith("active")
                and stats["cuda_graph_runs"] >= FRAMES, {"status": stats["cuda_graph"],
                                                         "replays": stats["cuda_graph_runs"]})
        p.check("no fallback warning for a capturable model",
                not any(issubclass(w.category, CudaGraphFallbackWarning) for w in caught), figures["warnings"])
    fallback = _graph_fallback(p, ort)
    figures["fallback"] = fallback
    p.result["headline"] = {"ms/frame without graph": figures["ms_per_frame_without_graph"],
                            "with graph": figures["ms_per_frame_with_graph"], "graph": stats["cuda_graph"][:40]}


def _graph_fallback(p: Part, ort: Any) -> Dict[str, Any]:
    """A model with a node only the CPU provider runs (ai.onnx.ml Scaler) cannot be captured."""
    import warnings

    from dfl_perf.buffers import BoundSession
    from dfl_perf.buffers._graph import CudaGraphFallbackWarning

    model = cpu_node_model()
    x = _faces(1, res=16)[..., 0].reshape(1, 1, 16, 16).astype("float32")
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    session = _session(model, p.provider)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BoundSession(session, device=p.device, enable_cuda_graph=True) as bound:
            got = [o.copy() for o in bound.run({"x": x})]
            got_again = [o.copy() for o in bound.run({"x": x})]
            status = bound.cuda_graph_status
    reasons = [str(w.message) for w in caught if issubclass(w.category, CudaGraphFallbackWarning)]
    p.check("an uncapturable model falls back with a CudaGraphFallbackWarning and a reason",
            bool(reasons) and status.startswith("fallback"), {"status": status, "warnings": reasons})
    p.check("its outputs are still right", max(_max_diff(got, want), _max_diff(got_again, want)) <= 1e-5,
            _max_diff(got, want))
    return {"status": status, "warnings": reasons, "session_providers": list(session.get_providers())}


def cpu_node_model() -> bytes:
    """Conv (CUDA) then ai.onnx.ml Scaler (CPU provider only): a graph CUDA cannot capture whole."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1, 1, 3, 3), 1.0 / 9, np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"], axis=1),
             helper.make_node("Scaler", ["f"], ["y"], domain="ai.onnx.ml", offset=[0.5], scale=[2.0])]
    graph = helper.make_graph(nodes, "cpu_node", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 8
    return model.SerializeToString()


# ------------------------------------------------------------------------------------------------ tensorrt

def part_tensorrt(p: Part) -> None:
    """Cold engine build, then a warm start from the engine cache in a fresh process."""
    ort = _ort()
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        p.skip("this onnxruntime has no TensorrtExecutionProvider")
        return
    if p.rehearse:
        p.skip("rehearsal: TensorRT needs a GPU")
        return
    cache = p.workdir / "trt_cache"
    model = p.workdir / "trt_standin.onnx"
    model.write_bytes(_standin())
    runs = []
    for label in ("cold", "warm"):
        code, output, seconds = run_boxed([sys.executable, str(Path(__file__).resolve()), "--trt-once", str(model),
                                           str(cache)], p.box(65.0), cwd=str(REPO))
        line = [ln for ln in output.splitlines() if ln.startswith("{")]
        if code != 0 or not line:
            p.result["log_tail"] = output[-2500:]
            p.check("TensorRT %s start ran" % label, False, "exit %s after %.0f s" % (code, seconds))
            return
        run = json.loads(line[-1])
        run["label"] = label
        runs.append(run)
        p.result["runs"] = runs
        p.save()
        if run["providers"][0] != "TensorrtExecutionProvider":
            p.skip("TensorrtExecutionProvider is listed but does not start here (TensorRT libraries missing?): "
                   "the session ran on %s" % run["providers"][0])
            return
    cold, warm = runs
    p.check("the warm start built no new engine (cache hit)", warm["engine_files"] == cold["engine_files"]
            and bool(cold["engine_files"]), {"cold": cold["engine_files"], "warm": warm["engine_files"]})
    p.check("the warm start is faster than the cold one", warm["create_and_first_run_s"] < cold["create_and_first_run_s"],
            {"cold_s": cold["create_and_first_run_s"], "warm_s": warm["create_and_first_run_s"]})
    p.result["headline"] = {"cold s": cold["create_and_first_run_s"], "warm s": warm["create_and_first_run_s"]}


def trt_once(model: str, cache: str) -> int:
    """One TensorRT session start (fresh process): seconds to create and run once, engine files after."""
    from dfl_perf.devices import select_providers
    from dfl_perf.sessions import SessionConfig, create_session

    t0 = time.perf_counter()
    session = create_session(model, SessionConfig.tuned(providers=select_providers("tensorrt", cache_dir=Path(cache))))
    session.run(None, {"in_face:0": _faces(1)})
    seconds = time.perf_counter() - t0
    files = sorted("%s:%d" % (f.name, f.stat().st_size) for f in Path(cache).glob("*") if f.is_file())
    print(json.dumps({"providers": list(session.get_providers()), "create_and_first_run_s": round(seconds, 3),
                      "engine_files": [f for f in files if ".engine" in f], "cache_files": files}))
    return 0


# ------------------------------------------------------------------------------------------- device_memory

MEMORY_MODES = ("baseline", "default", "low_memory")


def part_device_memory(p: Part) -> None:
    """Each mode in a fresh process: device memory before, once ready, at peak (NVML), and FPS."""
    from dfl_perf.devices import canonical_provider
    from dfl_perf.facepipe.workload import Workload

    Workload(dfm_weights_mb=WEIGHTS_MB).dfm_path()  # build the 200 MB stand-in once, before the children
    modes: Dict[str, Any] = {}
    p.result["modes"] = modes
    p.result["note"] = "NVML's device-wide used memory; nothing else runs on the lent GPU"
    for mode in MEMORY_MODES:
        code, output, seconds = run_boxed([sys.executable, str(Path(__file__).resolve()), "--memory-once", mode,
                                           canonical_provider(p.provider)], p.box(45.0), cwd=str(REPO))
        line = [ln for ln in output.splitlines() if ln.startswith("{")]
        if code != 0 or not line:
            modes[mode] = {"error": "exit %s after %.0f s" % (code, seconds), "log_tail": output[-1500:]}
            p.check("%s ran" % mode, False, modes[mode]["error"])
            continue
        modes[mode] = json.loads(line[-1])
        p.save()
    done = {m: r for m, r in modes.items() if "error" not in r}
    peaks = {m: r.get("device_peak_delta") for m, r in done.items()}
    if p.rehearse or any(v is None for v in peaks.values()):
        p.result["reason"] = "no NVML device memory here (rehearsal or no NVML): host figures only"
    elif "default" in peaks and "low_memory" in peaks:
        p.result["low_memory_vs_default"] = "%+.1f%%" % (100.0 * (peaks["low_memory"] / peaks["default"] - 1.0))
        p.check("NVML read device memory in every mode", all(v > 0 for v in peaks.values()), peaks)
    p.result["headline"] = {m: ("%.0f MB" % (v / 1e6) if v else "?") for m, v in peaks.items()}


def memory_once(mode: str, provider: str) -> int:
    """One mode of the reference workload with a 200 MB stand-in, sampling NVML every 20 ms."""
    from dfl_perf.benchmark.measure import peak_rss_bytes
    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import BaselineRunner, OptimizedRunner, Workload
    from dfl_perf.monitor import SystemSampler

    clip = make_clip(size=(640, 480), frames=PATH_PERIOD)
    frames = 120
    workload = Workload(dfm_weights_mb=WEIGHTS_MB)
    sampler = SystemSampler(interval=0.02, history=100000, gpus=True).start()
    try:
        start = _gpu0(sampler.sample_once())
        source = (clip.render(i % PATH_PERIOD) for i in range(frames))
        if mode == "baseline":
            runner = BaselineRunner(workload, provider)
            ready = _gpu0(sampler.sample_once())
            stats = runner.run(source, sink=lambda i, f: None)
        else:
            with OptimizedRunner(workload, provider, low_memory=mode == "low_memory") as runner:
                ready = _gpu0(sampler.sample_once())
                stats = runner.run(source, sink=lambda i, f: None)
        end = _gpu0(sampler.sample_once())
    finally:
        sampler.close()
    used = [v for v in (_gpu0(s) for s in sampler.history()) if v is not None]
    peak = max(used) if used else None

    def delta(value: Optional[int]) -> Optional[int]:
        return value - start if value is not None and start is not None else None

    print(json.dumps({"mode": mode, "frames": stats.frames, "fps": round(stats.fps, 1), "samples": len(used),
                      "device_start": start, "device_ready_delta": delta(ready), "device_peak_delta": delta(peak),
                      "device_end_delta": delta(end), "host_peak_rss": peak_rss_bytes()}))
    return 0


def _gpu0(sample: Dict[str, Any]) -> Optional[int]:
    gpus = sample.get("gpus") or []
    return gpus[0].get("memory_used") if gpus else None


# ----------------------------------------------------------------------------------------------- benchmark

def part_benchmark(p: Part) -> None:
    """``dfl-perf benchmark --quick`` on the device; the whole report is kept."""
    report_path = p.workdir / "benchmark.json"
    cmd = [sys.executable, "-m", "dfl_perf.cli", "benchmark", "--quick", "--no-progress", "--provider", p.provider,
           "--json", str(report_path)]
    code, output, seconds = run_boxed(cmd, p.box(230.0), cwd=str(REPO))
    p.result.update(exit_code=code, table=output[-2500:])
    if not report_path.is_file():
        p.check("dfl-perf benchmark --quick wrote its report", False, "exit %s after %.0f s" % (code, seconds))
        return
    report = json.loads(report_path.read_text())
    report.pop("runs", None)  # per-repeat timelines: the medians above them are what counts
    p.result["report"] = report
    p.check("the benchmark ran on %s" % p.provider, report["workload"]["provider"].lower().startswith(p.provider),
            report["workload"]["provider"])
    p.check("optimized output frames match the baseline's", bool(report["outputs_match"]), report["output_check"])
    p.result["headline"] = {"speedup": "%.2fx" % report["speedup"],
                            "fps": "%.1f -> %.1f" % (report["baseline"]["fps"], report["optimized"]["fps"])}


def part_selftest_hang(p: Part) -> None:
    p.result["figures"] = {"saved_before_hanging": True}
    p.save()
    time.sleep(3600)


PART_FUNCTIONS: Dict[str, Callable[[Part], None]] = {
    "selftest_hang": part_selftest_hang,
    "probe": part_probe, "pytest_gpu": part_pytest_gpu, "iobinding": part_iobinding, "cuda_graph": part_cuda_graph,
    "tensorrt": part_tensorrt, "device_memory": part_device_memory, "benchmark": part_benchmark,
}


def run_part_here(name: str, out: Path, workdir: Path, rehearse: bool, deadline: float = 0.0) -> int:
    """The body of a part's process: run it, record an exception as the part's error."""
    part = Part(name, out, workdir, rehearse, deadline)
    part.save()
    try:
        PART_FUNCTIONS[name](part)
    except Exception as exc:
        part.result["status"] = "error"
        part.result["error"] = "%s: %s" % (type(exc).__name__, " ".join(str(exc).split())[:800])
        part.result["traceback"] = traceback.format_exc()[-3000:]
    part.finish()
    return 0


# ===================================================================================================== main

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write every figure here (rewritten after each part)")
    parser.add_argument("--budget", type=float, default=BUDGET_SECONDS, help="seconds for the whole check (360)")
    parser.add_argument("--parts", help="comma-separated subset of: " + ", ".join(p for p, _ in PARTS))
    parser.add_argument("--rehearse", action="store_true",
                        help="run every part on the CPU provider (checks the script here; not GPU figures)")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--trt-once", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--memory-once", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return run_part_here(args.part, Path(args.out), Path(args.workdir), args.rehearse, args.deadline)
    if args.trt_once:
        return trt_once(*args.trt_once)
    if args.memory_once:
        return memory_once(*args.memory_once)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    return check_gpu(args.json, args.budget, parts, args.rehearse)


if __name__ == "__main__":
    sys.exit(main())
