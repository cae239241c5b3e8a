"""Pinned models: a registry, the embedded defaults, a resolver and a resumable, hash-checked downloader.

The package ships two small files in ``dfl_perf/data`` (sources and licences in ``SOURCES.md`` there):
the YuNet-n 320 detector (``model_path("yunet_n_320_320")``) and a face photo (``face_photo_path()``),
so the reference pipeline runs offline with nothing else installed.

Where ``model_path(name)`` looks, in order:
0. the package itself, for an embedded model (size and sha256 checked; a damaged file is an error);
1. the mirror (``mirror=`` or env ``DFL_PERF_MODEL_MIRROR``): a directory holding the files under
   their registry file names (used in place, after a size and sha256 check), or an http(s) base
   URL (files fetched from ``<base>/<filename>`` into the cache);
2. the user cache, ``dfl_perf.paths.user_cache_dir() / "models"`` (env ``DFL_PERF_CACHE_DIR``);
3. the upstream URL (GitHub raw address at a pinned commit), downloaded into the cache.

Downloads go to ``<file>.part`` and become ``<file>`` only after the size and sha256 match
(``os.replace``, atomic), so the cache never holds a half-written or wrong model file under its
real name. The ``.part`` file is kept only after an interrupted transfer (connection closed or
timed out mid-body): it is then a prefix of what the server sent, and the next fetch resumes it
with an HTTP Range request (a wrong prefix shows up as a hash mismatch, which deletes it). After a
hash mismatch or a file of the wrong size the ``.part`` is deleted; an HTTP error leaves it as it was.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, TextIO, Tuple

from dfl_perf.progress import ProgressBar

__all__ = ["ModelInfo", "REGISTRY", "EMBEDDED_MODELS", "MIRROR_ENV", "ModelFetchError", "models_cache_dir",
           "model_path", "face_photo_path", "fetch", "model_status", "models_main"]

MIRROR_ENV = "DFL_PERF_MODEL_MIRROR"
_CHUNK = 256 * 1024
_USER_AGENT = "dfl_perf-models/1"


@dataclass(frozen=True)
class ModelInfo:
    """One pinned model file."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int
    licence: str
    description: str = ""


_YUNET = "https://raw.githubusercontent.com/ShiqiYu/libfacedetection.train/0047ac24afb1a50a0c6105001c89d1b5b805dbf1/onnx/"
_ZARU = "https://raw.githubusercontent.com/SludgePhD/Zaru/95d4f0c1c4afb509061e1f43fceaed91e4f21434/3rdparty/onnx/"
_SKIMAGE = "https://raw.githubusercontent.com/scikit-image/scikit-image/d496654a566b0bdfff0585bddbdf4c030e0e080f/skimage/data/"

REGISTRY: Dict[str, ModelInfo] = {m.name: m for m in (
    ModelInfo("yunet_s_640_640", "yunet_s_640_640.onnx", _YUNET + "yunet_s_640_640.onnx",
              "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", 232589, "Apache-2.0",
              "YuNet-s face detector, 640x640, 5 keypoints"),
    ModelInfo("yunet_n_320_320", "yunet_n_320_320.onnx", _YUNET + "yunet_n_320_320.onnx",
              "81dbde155e982455488235acb8ec2dec5d647edf7cf7080d33e4abb69b93a0d2", 317434, "Apache-2.0",
              "YuNet-n face detector, 320x320, 5 keypoints"),
    ModelInfo("facemesh_468", "facemesh_468.onnx", _ZARU + "face_landmark.onnx",
              "2ece916c568172aafde5d8beaf0198c65b10691a618e551c4b1015a32116e326", 2432529,
              "Apache-2.0 (MediaPipe weights)", "MediaPipe FaceMesh, 468 landmarks, 192x192"),
    ModelInfo("peppa_slim_160_68pt", "peppa_slim_160_68pt.onnx", _ZARU + "slim_160_latest.onnx",
              "6cf9b509fba3a3c5f89cbcfb19ce0d503254da1d854e9e977a3c45ba5d16dab8", 936698, "Apache-2.0",
              "Peppa slim-160, 68 landmarks, 160x160"),
    ModelInfo("astronaut", "astronaut.png", _SKIMAGE + "astronaut.png",
              "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", 791555, "public domain (NASA)",
              "real face photo for the test clip (not a model), 512x512 RGB"),
)}

# Registry models that ship inside the package (dfl_perf/data, under their registry file names).
EMBEDDED_MODELS = frozenset({"yunet_n_320_320"})
_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
_FACE_PHOTO = ModelInfo("face_photo", "astronaut.jpg", "", "74139dcfd87ccd42855a9e35bcd6df9d08640d041f77d29115e381bdebf60a59",
                        66489, "public domain (NASA)",
                        "astronaut.png re-encoded as JPEG, 512x512 BGR, face box about (179, 63, 270, 174)")


class ModelFetchError(RuntimeError):
    """A model could not be found, downloaded or verified; the message names the file or URL and why."""


class _Interrupted(Exception):
    def __init__(self, received: int, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.reason = reason


_locks: Dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_verified: Dict[Tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, this process


def _info(name: str) -> ModelInfo:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelFetchError("unknown model %r; known models: %s" % (name, ", ".join(REGISTRY))) from None


def models_cache_dir() -> Path:
    """The folder where fetched models are kept (not created here)."""
    from dfl_perf.paths import user_cache_dir

    return user_cache_dir() / "models"


def _mirror(mirror: Optional[str]) -> Optional[str]:
    value = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "")
    value = str(value).strip()
    if value.startswith("file://"):
        value = value[len("file://"):]
    return value or None


def _is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def _sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    digest = _verified.get(key)
    if digest is None:
        from dfl_perf.files import sha256_file

        digest = _verified[key] = sha256_file(path)
    return digest


def _check_file(path: Path, info: ModelInfo, what: str) -> None:
    size = path.stat().st_size
    if size != info.size:
        raise ModelFetchError("%s %s has %d bytes, expected %d for %s" % (what, path, size, info.size, info.name))
    digest = _sha256(path)
    if digest != info.sha256:
        raise ModelFetchError("%s %s has sha256 %s, expected %s for %s" % (what, path, digest, info.sha256, info.name))


def _valid(path: Path, info: ModelInfo) -> bool:
    try:
        _check_file(path, info, "file")
        return True
    except (ModelFetchError, OSError):
        return False


def _embedded(info: ModelInfo) -> Path:
    """The verified file shipped in the package; ModelFetchError when it is missing or damaged."""
    path = _DATA_DIR / info.filename
    if not path.is_file():
        raise ModelFetchError("embedded file %s is missing: the dfl_perf install is incomplete; reinstall it" % path)
    try:
        _check_file(path, info, "embedded file")
    except ModelFetchError as exc:
        raise ModelFetchError("%s: the dfl_perf install is damaged; reinstall it" % exc) from None
    return path


def face_photo_path() -> Path:
    """The face photo shipped with the package (verified): astronaut.png from scikit-image (public domain,
    NASA) as a 512x512 JPEG; ``dfl_perf.facepipe.clip.ASTRONAUT_FACE_BOX`` locates its face."""
    return _embedded(_FACE_PHOTO)


def model_path(name: str, download: bool = True, progress: bool = False, mirror: Optional[str] = None) -> Path:
    """Path of a verified model file: the package's own copy (``EMBEDDED_MODELS``), the mirror directory,
    the user cache, or (``download``) fetched now."""
    info = _info(name)
    if name in EMBEDDED_MODELS:
        return _embedded(info)
    source = _mirror(mirror)
    if source and not _is_url(source):
        candidate = Path(source).expanduser() / info.filename
        if candidate.is_file():
            _check_file(candidate, info, "mirror file")
            return candidate
    cached = models_cache_dir() / info.filename
    if cached.is_file() and _valid(cached, info):
        return cached
    if not download:
        raise ModelFetchError("model %s is not in the cache (%s) or the mirror; run: dfl-perf models fetch %s"
                              % (name, cached, name))
    return fetch(name, progress=progress, mirror=mirror)


def fetch(name: str, progress: bool = True, mirror: Optional[str] = None, timeout: float = 30.0,
          retries: int = 2) -> Path:
    """Put a verified copy of model ``name`` in the user cache (from the mirror or upstream); return its path.

    An interrupted transfer is resumed up to ``retries`` times in this call (and by later calls).
    An embedded model needs no fetch: its path in the package is returned.
    """
    info = _info(name)
    if name in EMBEDDED_MODELS:
        return _embedded(info)
    with _locks_guard:
        lock = _locks.setdefault(name, threading.Lock())
    with lock:
        from dfl_perf.paths import ensure_private_dir

        dest = ensure_private_dir(models_cache_dir()) / info.filename
        if dest.is_file() and _valid(dest, info):
            return dest
        part = dest.with_name(dest.name + ".part")
        source = _mirror(mirror)
        if source and not _is_url(source):
            local = Path(source).expanduser() / info.filename
            if local.is_file():
                return _copy_from_mirror(local, part, dest, info)
            url = info.url
        else:
            url = source.rstrip("/") + "/" + info.filename if source else info.url
        _download(url, part, info, progress, timeout, retries)
        _finish(part, dest, info, url)
        return dest


def _copy_from_mirror(local: Path, part: Path, dest: Path, info: ModelInfo) -> Path:
    try:
        shutil.copyfile(str(local), str(part))
    except OSError as exc:
        _remove(part)
        raise ModelFetchError("cannot copy %s from the mirror %s: %s" % (info.name, local, exc)) from exc
    _finish(part, dest, info, str(local))
    return dest


def _finish(part: Path, dest: Path, info: ModelInfo, origin: str) -> None:
    try:
        _check_file(part, info, "download")
    except ModelFetchError as exc:
        _remove(part)
        raise ModelFetchError("%s from %s: %s; nothing was kept" % (info.name, origin, exc)) from None
    os.replace(str(part), str(dest))


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _download(url: str, part: Path, info: ModelInfo, progress: bool, timeout: float, retries: int) -> None:
    attempt = 0
    while True:
        try:
            _transfer(url, part, info, progress, timeout)
            return
        except _Interrupted as exc:
            attempt += 1
            if attempt > retries:
                raise ModelFetchError("transfer of %s from %s interrupted (%s) after %d of %d bytes; the partial "
                                      "file %s is kept and the next fetch resumes it"
                                      % (info.name, url, exc.reason, exc.received, info.size, part)) from None


def _transfer(url: str, part: Path, info: ModelInfo, progress: bool, timeout: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    if have > info.size:
        _remove(part)
        have = 0
    if have == info.size:
        return
    headers = {"User-Agent": _USER_AGENT}
    if have:
        headers["Range"] = "bytes=%d-" % have
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our prefix does not fit the server's file: start again
            _remove(part)
            raise _Interrupted(0, "server refused the resume range") from None
        raise ModelFetchError("HTTP %d %s from %s (model %s)" % (exc.code, exc.reason, url, info.name)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelFetchError("cannot download %s from %s: %s" % (info.name, url, reason)) from None
    with response:
        if have and response.status != 206:  # the server ignored the Range header: start again
            have = 0
        remaining = response.headers.get("Content-Length")
        remaining = int(remaining) if remaining and remaining.isdigit() else None
        _receive(response, part, have, remaining, info, url, progress)


def _receive(response, part: Path, have: int, remaining: Optional[int], info: ModelInfo, url: str,
             progress: bool) -> None:
    bar = _progress(info.name, info.size, sys.stderr) if progress else None
    got = 0
    try:
        with open(part, "ab" if have else "wb") as out:
            while True:
                try:
                    block = response.read(_CHUNK)
                except Exception as exc:  # IncompleteRead, socket timeout, connection reset
                    raise _Interrupted(have + got, type(exc).__name__) from None
                if not block:
                    break
                got += len(block)
                if have + got > info.size:
                    out.close()
                    _remove(part)
                    raise ModelFetchError("%s sends more than the %d bytes expected for %s; nothing was kept"
                                          % (url, info.size, info.name))
                out.write(block)
                if bar:
                    bar.update(have + got)
    finally:
        if bar:
            bar.close()
    total = have + got
    if total < info.size:
        if remaining is not None and got >= remaining:  # a complete response, but a different file
            _remove(part)
            raise ModelFetchError("%s is %d bytes, expected %d for %s; nothing was kept"
                                  % (url, total, info.size, info.name))
        raise _Interrupted(total, "connection closed early")


def _progress(label: str, total: int, stream: TextIO) -> ProgressBar:
    """A download bar in (decimal) MB, shown even when stderr is not a terminal (the caller asked for it)."""
    return ProgressBar(label, total, stream=stream, enabled=True, unit="B", unit_scale=True)


def model_status(name: str, mirror: Optional[str] = None) -> Tuple[str, Optional[Path]]:
    """("embedded" | "damaged" | "mirror" | "cached" | "partial NN%" | "missing", path or None), without downloading."""
    info = _info(name)
    if name in EMBEDDED_MODELS:
        path = _DATA_DIR / info.filename
        if not path.is_file():
            return "missing", None
        return ("embedded" if _valid(path, info) else "damaged"), path
    source = _mirror(mirror)
    if source and not _is_url(source):
        candidate = Path(source).expanduser() / info.filename
        if candidate.is_file() and _valid(candidate, info):
            return "mirror", candidate
    cached = models_cache_dir() / info.filename
    if cached.is_file() and _valid(cached, info):
        return "cached", cached
    part = cached.with_name(cached.name + ".part")
    if part.is_file():
        return "partial %d%%" % (100 * part.stat().st_size // info.size), part
    return "missing", None


def models_main(argv: List[str]) -> int:
    """``dfl-perf models [list | fetch [NAME...] | path NAME]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="dfl-perf models", description="Pinned models: list, fetch, locate.")
    parser.add_argument("--mirror", default=None, help="directory or http(s) base URL holding the model files "
                        "(default: env %s)" % MIRROR_ENV)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("list", help="the registry and where each model is")
    p_fetch = sub.add_parser("fetch", help="put verified copies into the user cache, from the mirror or upstream "
                             "(all models when no NAME; an embedded model is only located)")
    p_fetch.add_argument("names", nargs="*", metavar="NAME")
    p_fetch.add_argument("--quiet", action="store_true", help="no progress bar")
    p_path = sub.add_parser("path", help="print the path of a model (fetching it if needed)")
    p_path.add_argument("name", metavar="NAME")
    p_path.add_argument("--no-fetch", action="store_true", help="fail instead of downloading")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.command in (None, "list"):
            print("%-22s %10s  %-32s %-12s %s" % ("name", "bytes", "licence", "status", "path"))
            for name, info in REGISTRY.items():
                status, path = model_status(name, args.mirror)
                print("%-22s %10d  %-32s %-12s %s" % (name, info.size, info.licence, status, path or "-"))
            return 0
        if args.command == "fetch":
            for name in args.names or list(REGISTRY):
                _info(name)
            for name in args.names or list(REGISTRY):
                print(fetch(name, progress=not args.quiet, mirror=args.mirror))
            return 0
        print(model_path(args.name, download=not args.no_fetch, progress=True, mirror=args.mirror))
        return 0
    except (ModelFetchError, OSError) as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
