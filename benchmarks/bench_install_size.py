"""Install size of dfl_perf's dependency sets beside DeepFaceLive's own pinned stack.

For each set: ``pip download`` into a temporary folder (download size per file), then
``pip install`` exactly those files (``--no-index``) into a fresh venv, and sum the files each
installed distribution lists in its RECORD (installed size per distribution). Packages already in
a fresh venv (pip, setuptools) are left out. Sizes are apparent sizes (sum of file sizes), in MB
(10^6 bytes). Everything is built under one temporary folder that is deleted at the end.

    python benchmarks/bench_install_size.py                   # all default sets (needs PyPI; minutes)
    python benchmarks/bench_install_size.py --quick           # dfl_perf's wheel, core and [cpu] only
    python benchmarks/bench_install_size.py --json out.json --markdown benchmarks/install_size.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
MB = 1e6
PIP_TIMEOUT_S = 3600

# DeepFaceLive's Windows builder / Dockerfile pins (notes/research/deepfacelive-full.md §5), without
# torch (installed there only to harvest its CUDA DLLs; see the "dfl-pinned+torch" set) and without
# its protobuf==3.20.1 pin, which cannot resolve together with onnx==1.14.0 (needs protobuf>=3.20.2;
# the builder installs one package at a time, so the later onnx install overrides it).
DFL_PINNED = [
    "onnxruntime-gpu==1.15.1", "numpy==1.21.6", "opencv-python==4.8.0.74",
    "opencv-contrib-python==4.8.0.74", "onnx==1.14.0", "PyQt6==6.5.1", "numexpr", "h5py",
]
DFL_TORCH = ["torch==1.13.1", "torchvision==0.14.1"]


def _python38() -> str:
    try:
        prefix = subprocess.run(["pyenv", "prefix", "3.8"], capture_output=True, text=True,
                                check=True).stdout.strip()
        return str(Path(prefix) / "bin" / "python")
    except (OSError, subprocess.CalledProcessError):
        return "python3.8"


def default_sets() -> Dict[str, dict]:
    """Name -> {python, requirements, note} for every set this script knows."""
    py311, py38 = "python3", _python38()
    return {
        "dfl_perf-wheel": {"python": py311, "reqs": ["--no-deps", "dfl_perf"],
                           "note": "dfl_perf's own wheel alone, no dependencies (the embedded YuNet-n and face photo "
                                   "included)"},
        "dfl_perf": {"python": py311, "reqs": ["dfl_perf"],
                     "note": "core, no extras (what a DFL user adds)"},
        "dfl_perf[cpu]": {"python": py311, "reqs": ["dfl_perf[cpu]"], "note": "core + onnxruntime"},
        "requirements_minimal.txt": {"python": py311, "reqs": ["-r", str(REPO / "requirements_minimal.txt")],
                                     "note": "CPU runtime + OpenCV headless"},
        "requirements_gpu.txt": {"python": py311, "reqs": ["-r", str(REPO / "requirements_gpu.txt")],
                                 "note": "CUDA runtime (onnxruntime-gpu) + NVML + OpenCV headless"},
        "requirements_gpu.txt+cuda": {"python": py311,
                                      "reqs": ["-r", str(REPO / "requirements_gpu.txt"), "onnxruntime-gpu[cuda,cudnn]"],
                                      "note": "the GPU set plus CUDA/cuDNN from pip (for hosts without a system CUDA)"},
        "dfl-pinned": {"python": py38, "reqs": list(DFL_PINNED), "note": "DeepFaceLive's pins, Python 3.8"},
        "dfl-pinned+dfl_perf": {"python": py38, "reqs": list(DFL_PINNED) + ["dfl_perf"],
                                "note": "DeepFaceLive's pins with dfl_perf added"},
        "dfl-pinned+torch": {"python": py38, "reqs": list(DFL_PINNED) + DFL_TORCH,
                             "note": "DeepFaceLive's full builder list (torch only for CUDA DLLs)"},
    }


DEFAULT_SETS = ["dfl_perf-wheel", "dfl_perf", "dfl_perf[cpu]", "requirements_minimal.txt", "requirements_gpu.txt",
                "dfl-pinned", "dfl-pinned+dfl_perf"]
QUICK_SETS = ["dfl_perf-wheel", "dfl_perf", "dfl_perf[cpu]"]

_MEASURE_SNIPPET = r"""
import json, os, sys
try:
    from importlib import metadata
except ImportError:
    import importlib_metadata as metadata
out, owners = {}, {}
for dist in metadata.distributions():
    name = dist.metadata["Name"]
    size = 0
    for f in dist.files or []:
        path = os.path.realpath(str(f.locate()))
        try:
            nbytes = os.path.getsize(path)
        except OSError:
            continue
        size += nbytes
        owners.setdefault(path, [nbytes, set()])[1].add(name)
    out[name] = {"version": dist.version, "bytes": size, "shared": {}}
for path, (nbytes, names) in owners.items():
    if len(names) > 1:  # one file listed by several distributions (e.g. two OpenCV wheels writing cv2/)
        for name in names:
            out[name]["shared"][path] = [nbytes, sorted(names - {name})]
print(json.dumps(out))
"""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(cmd: List[str], env: Optional[dict] = None, cwd: Optional[Path] = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=None if cwd is None else str(cwd),
                          timeout=PIP_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), proc.stderr[-4000:]))
    return proc.stdout


def _dist_name_of_file(filename: str) -> str:
    """Distribution name from a wheel or sdist file name (normalised)."""
    if filename.endswith(".whl"):
        return _norm(filename.split("-")[0])
    stem = re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", filename)
    return _norm(stem.rsplit("-", 1)[0])


def _installed(python: str) -> Dict[str, dict]:
    # -I and a neutral cwd: no project folder or egg-info on sys.path may count as installed.
    out = _run([python, "-I", "-c", _MEASURE_SNIPPET], cwd=Path(python).parent)
    return json.loads(out.strip().splitlines()[-1])


def _site_packages_bytes(python: str) -> int:
    site = _run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    total = 0
    for root, _dirs, files in os.walk(site):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _clean_pip_env(root: Path) -> dict:
    """Environment for pip as a fresh user would have it: PyPI only, no local config, wheel folders or
    constraints of this machine, and a private cache under ``root``."""
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("PIP_") and k not in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_CACHE_DIR=str(root / "pip-cache"),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def build_dfl_perf_wheel(dest: Path, env: dict) -> Path:
    """Build dfl_perf's own wheel (as it would be published) from a copy, so the checkout stays clean."""
    src = dest.parent / "src"
    shutil.copytree(str(REPO / "dfl_perf"), str(src / "dfl_perf"), ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(str(REPO / name), str(src / name))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(src)], env=env)
    wheels = sorted(dest.glob("dfl_perf-*.whl"))
    if not wheels:
        raise RuntimeError("no dfl_perf wheel built in %s" % dest)
    return wheels[-1]


def _pin_local(reqs: List[str], wheel: Path) -> List[str]:
    """Point every ``dfl_perf`` requirement at the freshly built wheel (never a PyPI name clash)."""
    out = []
    for req in reqs:
        match = re.match(r"^dfl_perf(\[[a-z,]+\])?$", req)
        out.append("dfl_perf%s @ %s" % (match.group(1) or "", wheel.as_uri()) if match else req)
    return out


def measure_set(name: str, spec: dict, root: Path, wheel_dir: Path, env: dict) -> dict:
    """Download, install into a fresh venv, measure; the venv is deleted before returning."""
    work = Path(tempfile.mkdtemp(prefix="set_", dir=str(root)))
    venv, dl = work / "venv", work / "dl"
    try:
        _run([spec["python"], "-m", "venv", str(venv)], env=env)
        vpy = str(venv / "bin" / "python")
        base = {_norm(n) for n in _installed(vpy)}
        base_site = _site_packages_bytes(vpy)
        links = ["--find-links", str(wheel_dir)]
        t0 = time.perf_counter()
        _run([vpy, "-m", "pip", "download", "-q", "--prefer-binary", "-d", str(dl)] + links + spec["reqs"], env=env)
        t_dl = time.perf_counter() - t0
        t0 = time.perf_counter()
        _run([vpy, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(dl)] + links + spec["reqs"],
             env=env)
        t_inst = time.perf_counter() - t0
        downloads: Dict[str, int] = {}
        files: Dict[str, str] = {}
        for f in sorted(dl.iterdir()):
            key = _dist_name_of_file(f.name)
            downloads[key] = downloads.get(key, 0) + f.stat().st_size
            files[key] = f.name
        packages = []
        shared_paths: Dict[str, list] = {}
        for dist_name, info in sorted(_installed(vpy).items(), key=lambda kv: -kv[1]["bytes"]):
            key = _norm(dist_name)
            if key in base:
                continue
            shared = info["shared"]
            packages.append({"name": dist_name, "version": info["version"], "installed_bytes": info["bytes"],
                             "download_bytes": downloads.get(key), "file": files.get(key),
                             "shared_bytes": sum(v[0] for v in shared.values()),
                             "shared_with": sorted({n for v in shared.values() for n in v[1]})})
            for path, (nbytes, _others) in shared.items():
                shared_paths.setdefault(path, [nbytes, 0])[1] += 1
        # a file several distributions list is on disk once: count it once in the total
        double_counted = sum(nbytes * (count - 1) for nbytes, count in shared_paths.values())
        python_version = _run([vpy, "-c", "import platform; print(platform.python_version())"]).strip()
        return {
            "set": name, "note": spec["note"], "python": python_version, "requirements": spec["reqs"],
            "packages": packages,
            "download_bytes": sum(downloads.values()),
            "installed_bytes": sum(p["installed_bytes"] for p in packages) - double_counted,
            "double_counted_bytes": double_counted,
            "site_packages_growth_bytes": _site_packages_bytes(vpy) - base_site,
            "download_seconds": round(t_dl, 1), "install_seconds": round(t_inst, 1),
        }
    finally:
        shutil.rmtree(str(work), ignore_errors=True)


def _mb(value: Optional[int]) -> str:
    if value is None:
        return "-"
    return ("%.2f" if value < MB else "%.1f") % (value / MB)


def set_table(result: dict) -> List[str]:
    lines = ["### %s (Python %s): %s" % (result["set"], result["python"], result["note"]), "",
             "| package | version | download MB | installed MB |", "|---|---|---:|---:|"]
    for p in result["packages"]:
        shared = ""
        if p.get("shared_bytes"):
            shared = " (%s MB of files also listed by %s)" % (_mb(p["shared_bytes"]), ", ".join(p["shared_with"]))
        lines.append("| %s | %s | %s | %s%s |" % (p["name"], p["version"], _mb(p["download_bytes"]),
                                                 _mb(p["installed_bytes"]), shared))
    lines.append("| **total** | %d packages | **%s** | **%s** |" % (
        len(result["packages"]), _mb(result["download_bytes"]), _mb(result["installed_bytes"])))
    if result.get("double_counted_bytes"):
        lines += ["", "Files listed by more than one distribution are counted once in the total (%s MB "
                      "would otherwise be counted twice)." % _mb(result["double_counted_bytes"])]
    return lines


def summary_table(results: List[dict]) -> List[str]:
    lines = ["| set | Python | packages | download MB | installed MB | largest package (installed MB) |",
             "|---|---|---:|---:|---:|---|"]
    for r in results:
        top = r["packages"][0] if r["packages"] else None
        largest = "%s (%s)" % (top["name"], _mb(top["installed_bytes"])) if top else "-"
        lines.append("| %s | %s | %d | %s | %s | %s |" % (
            r["set"], r["python"], len(r["packages"]), _mb(r["download_bytes"]), _mb(r["installed_bytes"]), largest))
    by_name = {r["set"]: r for r in results}
    base, added = by_name.get("dfl-pinned"), by_name.get("dfl-pinned+dfl_perf")
    if base and added:
        new = sorted({p["name"] for p in added["packages"]} - {p["name"] for p in base["packages"]})
        lines += ["", "Adding dfl_perf to DeepFaceLive's pinned stack: +%s MB download, +%s MB installed "
                      "(new distributions: %s)." % (
                          _mb(added["download_bytes"] - base["download_bytes"]),
                          _mb(added["installed_bytes"] - base["installed_bytes"]), ", ".join(new) or "none")]
    return lines


def machine_lines(results: List[dict]) -> List[str]:
    pythons = sorted({r["python"] for r in results})
    return ["machine: %s %s, %d CPUs; pythons measured: %s; wheels for this platform (manylinux)" % (
        platform.system(), platform.machine(), os.cpu_count() or 0, ", ".join(pythons))]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", help="sets to measure (default: %s)" % ", ".join(DEFAULT_SETS))
    parser.add_argument("--quick", action="store_true", help="only %s" % ", ".join(QUICK_SETS))
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the tables as markdown")
    parser.add_argument("--tmp", metavar="DIR", help="parent folder for the temporary venvs")
    args = parser.parse_args(argv)
    known = default_sets()
    names = args.sets or (QUICK_SETS if args.quick else DEFAULT_SETS)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error("unknown set(s) %s; known: %s" % (unknown, ", ".join(known)))
    root = Path(tempfile.mkdtemp(prefix="dfl_perf_install_", dir=args.tmp))
    env = _clean_pip_env(root)
    results = []
    try:
        wheel_dir = root / "wheels"
        wheel = build_dfl_perf_wheel(wheel_dir, env)
        print("built dfl_perf wheel: %s" % wheel.name, flush=True)
        for name in names:
            print("measuring %s ..." % name, flush=True)
            spec = dict(known[name], reqs=_pin_local(known[name]["reqs"], wheel))
            results.append(measure_set(name, spec, root, wheel_dir, env))
            r = results[-1]
            print("  %s: download %s MB, installed %s MB (%.0f s + %.0f s)" % (
                name, _mb(r["download_bytes"]), _mb(r["installed_bytes"]), r["download_seconds"],
                r["install_seconds"]), flush=True)
    finally:
        shutil.rmtree(str(root), ignore_errors=True)
    lines = machine_lines(results) + [""] + summary_table(results)
    for r in results:
        lines += [""] + set_table(r)
    text = "\n".join(lines)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_lines(results), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
