"""Make the folder one device call carries for ``benchmarks/gpu_check.py`` (issue 24).

The lent GPU machine (an H200: Python 3.12, CUDA 13 libraries from pip, plain CPU onnxruntime,
no network) takes at most 64 MiB per call, and onnxruntime-gpu's wheel is 256 MB. Here, with
network, this script:

1. downloads the onnxruntime-gpu wheel for that Python and platform (``pip download --no-deps
   --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ...``);
2. keeps, in its CUDA provider's fat binary, only the GPU code of the target architecture
   (``--sm 90``: Hopper, the H100/H200): every other architecture's cubins are cut out of each
   container, whose size field is rewritten; a container with no code for the target is kept whole.
   The host code is untouched. A note inside the package (``PRUNED.txt``) says what was removed;
3. adds the pure-Python packages dfl_perf needs that the image lacks (``platformdirs``);
4. leaves out ``libonnxruntime.so`` (the C API library, which the Python module does not load);
5. packs it all as ``ort-gpu.tar.xz`` (unpacks to ``site/``; about 60 MB instead of 256);
6. fails if the folder and the checkout together would pass the 64 MiB a call may carry.

Nothing else is missing there: the check's models are built with ``onnx`` or ship in the package
(YuNet-n, the face photo), and onnxruntime-gpu's own needs (numpy, protobuf, flatbuffers,
packaging) and dfl_perf's others (psutil, filelock, tqdm, onnx, opencv-python-headless, nvidia-ml-py, pytest,
pytest-timeout, hypothesis) are in the machine's image (KINDS.md's package list).

    python benchmarks/gpu_bundle.py .whl            # in the checkout's root; about 4 minutes
    python benchmarks/gpu_bundle.py --print-run     # the device call's command
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
ORT_VERSION = "1.31.1"  # built for CUDA 13.0 (the machine's libraries); 1.31.x is the newest for cp312
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
LIMIT_BYTES = 64 << 20  # what one device call may carry, checkout included
ARCHIVE = "ort-gpu.tar.xz"
#: pure-Python packages dfl_perf needs that the machine's image lacks (KINDS.md's package list)
EXTRA_PACKAGES = ("platformdirs",)
FATBIN_MAGIC = 0xBA55ED50
CUBIN, PTX = 2, 1

RUN_COMMAND = (
    "tar -xJf .whl/ort-gpu.tar.xz -C /tmp && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 "
    "python3 benchmarks/gpu_check.py --json $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log"
)


# ------------------------------------------------------------------------------------ fat binaries

def elf_section(data: bytes, name: str) -> Optional[Tuple[int, int]]:
    """(file offset, size) of the 64-bit little-endian ELF section ``name``; None when absent."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> Tuple[int, ...]:
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)

    names = header(shstrndx)[4]
    for i in range(shnum):
        h = header(i)
        start = names + h[0]
        if data[start:data.index(b"\0", start)].decode("ascii", "replace") == name:
            return h[4], h[5]
    return None


def prune_fatbin(buf: bytearray, offset: int, size: int, keep_sm: int) -> Dict[str, int]:
    """Keep only ``keep_sm`` cubins (and any PTX) in every fatbin container of ``buf[offset:offset+size]``.

    A container is a 16-byte header (magic, version, header size, payload size) and entries, each
    a header (kind at +0, header size at +4, payload size at +8, architecture at +28) and its
    payload. The kept entries move to the front of their container, the rest becomes zeros, and the
    container's size says how much is left. Containers with nothing for ``keep_sm`` stay as they are.
    """
    stats = {"containers": 0, "kept": 0, "dropped": 0, "whole": 0, "bytes_dropped": 0}
    pos, end = offset, offset + size
    while pos + 16 <= end:
        magic, _version, head, payload = struct.unpack_from("<IHHQ", buf, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned; padding between them
            continue
        stats["containers"] += 1
        body, body_end = pos + head, pos + head + payload
        if body_end > end:
            raise ValueError("fatbin container at %#x runs past its section" % pos)
        entries = []
        entry = body
        while entry < body_end:
            kind, _v, entry_head, entry_size = struct.unpack_from("<HHIQ", buf, entry)
            if entry_head < 32 or entry + entry_head + entry_size > body_end:
                raise ValueError("fatbin container at %#x: its entries do not add up to its size" % pos)
            arch = struct.unpack_from("<I", buf, entry + 28)[0]
            entries.append((entry, entry_head + entry_size, kind, arch))
            entry += entry_head + entry_size
        if entry != body_end:
            raise ValueError("fatbin container at %#x: its entries do not add up to its size" % pos)
        keep = [e for e in entries if e[2] == PTX or (e[2] == CUBIN and e[3] == keep_sm)]
        if not keep:
            stats["whole"] += 1
        elif len(keep) < len(entries):
            kept = b"".join(bytes(buf[start:start + length]) for start, length, _, _ in keep)
            buf[body:body_end] = kept + bytes(payload - len(kept))
            struct.pack_into("<Q", buf, pos + 8, len(kept))
            stats["bytes_dropped"] += payload - len(kept)
        stats["kept"] += len(keep) if keep else len(entries)
        stats["dropped"] += len(entries) - len(keep) if keep else 0
        pos = body_end
    return stats


# ------------------------------------------------------------------------------------------ the bundle

def download_wheel(dest: Path, requirement: str, pattern: str, python_version: str) -> Path:
    """``pip download`` one wheel for the device's Python and platform into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
           python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [requirement], check=True)
    wheels = sorted(dest.glob(pattern))
    if not wheels:
        raise SystemExit("pip saved no %s wheel in %s" % (pattern, dest))
    return wheels[-1]


def pack(wheel: Path, archive: Path, keep_sm: int, extras: Sequence[Path] = ()) -> Dict[str, int]:
    """The wheels' files under ``site/`` (onnxruntime-gpu's CUDA provider pruned to ``keep_sm``), as tar.xz."""
    with tarfile.open(str(archive), "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
        for extra in extras:
            with zipfile.ZipFile(str(extra)) as whl:
                for info in whl.infolist():
                    if not info.is_dir():
                        _add(tar, "site/" + info.filename, whl.read(info))
        return _pack_onnxruntime(wheel, tar, keep_sm)


def _pack_onnxruntime(wheel: Path, tar: tarfile.TarFile, keep_sm: int) -> Dict[str, int]:
    stats: Dict[str, int] = {}
    with zipfile.ZipFile(str(wheel)) as whl:
        for info in whl.infolist():
            name = info.filename
            if info.is_dir() or os.path.basename(name).startswith("libonnxruntime.so"):
                continue
            data = whl.read(info)
            if name.endswith("libonnxruntime_providers_cuda.so"):
                buf = bytearray(data)
                section = elf_section(bytes(buf), ".nv_fatbin")
                if section is None:
                    raise SystemExit("%s has no .nv_fatbin section" % name)
                stats = prune_fatbin(buf, section[0], section[1], keep_sm)
                if not stats["kept"] or not stats["dropped"]:
                    raise SystemExit("no sm_%d code found to keep, or nothing to drop: %s" % (keep_sm, stats))
                data = bytes(buf)
                _add(tar, "site/onnxruntime/capi/PRUNED.txt", (
                    "dfl_perf's gpu_bundle.py cut every GPU architecture but sm_%d out of %s (%s), and left out "
                    "libonnxruntime.so. Host code is unchanged. Built for the lent H200 only.\n"
                    % (keep_sm, os.path.basename(name), stats)).encode())
            mode = 0o755 if name.endswith(".so") or ".so." in name else 0o644
            _add(tar, "site/" + name, data, mode)
    return stats


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def checkout_bytes(repo: Path) -> int:
    """Bytes of what a device call sends besides the carried folder: tracked and untracked, not ignored."""
    out = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout
    return sum((repo / f).stat().st_size for f in out.decode().split("\0") if f and (repo / f).is_file())


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", nargs="?", default=".whl", help="the carried folder, in the checkout's root (.whl)")
    parser.add_argument("--ort-version", default=ORT_VERSION)
    parser.add_argument("--python-version", default=PYTHON_VERSION)
    parser.add_argument("--sm", type=int, default=90, help="GPU architecture to keep (90: H100/H200)")
    parser.add_argument("--download-dir", default=str(Path(tempfile.gettempdir()) / "dfl_perf_gpu_bundle"),
                        help="where the 256 MB wheel is downloaded (outside the checkout)")
    parser.add_argument("--print-run", action="store_true", help="print the device call's command and stop")
    args = parser.parse_args(argv)
    if args.print_run:
        print(RUN_COMMAND)
        return 0
    dest = Path(args.dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(dest)]).returncode == 0
    if not ignored:
        raise SystemExit("%s is not ignored by git: run `echo /%s/ >> .git/info/exclude` first (it must never be "
                         "committed)" % (dest, dest.name))
    download = Path(args.download_dir)
    download.mkdir(parents=True, exist_ok=True)
    tag = "cp" + args.python_version.replace(".", "")
    wheel = download_wheel(download, "onnxruntime-gpu==%s" % args.ort_version,
                           "onnxruntime_gpu-%s-%s-*.whl" % (args.ort_version, tag), args.python_version)
    extras = [download_wheel(download, name, "%s-*.whl" % name, args.python_version) for name in EXTRA_PACKAGES]
    print("packing %s (sm_%d only) and %s into %s ..." % (wheel.name, args.sm, ", ".join(w.name for w in extras),
                                                          dest / ARCHIVE), flush=True)
    stats = pack(wheel, dest / ARCHIVE, args.sm, extras)
    carried, tree = folder_bytes(dest), checkout_bytes(REPO)
    print("fat binary: %s" % stats)
    print("carried %s: %.1f MiB (everything in it travels); checkout %.1f MiB; limit 64 MiB"
          % (dest.name, carried / 2**20, tree / 2**20))
    if carried + tree > LIMIT_BYTES:
        print("TOO BIG for one device call: %.1f MiB > 64 MiB" % ((carried + tree) / 2**20), file=sys.stderr)
        return 1
    print("device call: carry [%r], timeout_s 420, command:\n%s" % (dest.name, RUN_COMMAND))
    return 0


if __name__ == "__main__":
    sys.exit(main())
