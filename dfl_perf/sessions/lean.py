"""Lean weights: a copy of a model with its weights in a separate file, for loads that cost about
one copy of MatMul weights instead of two or three (conv weights: fewer, not one; see RESULTS.md).

onnxruntime loading a model file parses it whole (one copy of the weights), copies every weight
into its own buffer (a second) and, on CPU, may pre-pack MatMul/Conv weights (a third, kept on
onnxruntime 1.15). From a model whose weights sit in an external data file it reads (1.15) or
memory-maps (newer versions) that file instead, and with pre-packing off the kernels use those
bytes as they are. ``benchmarks/bench_model_memory.py`` measures the effect per operator and
version; it costs some speed on MatMul-heavy models (no pre-packed layout).

The copy is made once per model file, by the ``onnx`` package in a child process (so the host
never holds the two or three copies the conversion needs), under
``user_cache_dir()/'lean'/<key>/`` (``model.onnx``, ``weights.bin``, ``source.json``) where
``<key>`` hashes the model's real path, size, mtime and inode: an edited model gets a new copy.
Written to a temporary folder and renamed, so readers never see half a copy. Making a copy also
removes the copies whose model file is gone or changed (``remove_stale``), so edited models do not
fill the disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Union

from dfl_perf.files import file_stamp

__all__ = ["lean_copy", "lean_dir", "remove_stale", "LeanWeightsError"]

log = logging.getLogger("dfl_perf.sessions")

FORMAT = 1
MODEL_NAME = "model.onnx"
WEIGHTS_NAME = "weights.bin"
SOURCE_NAME = "source.json"
#: Tensors at least this big go to the weights file (small ones stay in the graph).
MIN_TENSOR_BYTES = 1024
CONVERT_TIMEOUT = 900.0
#: A temporary folder older than this (seconds) belongs to a conversion that died.
STALE_TMP_SECONDS = 3600.0


class LeanWeightsError(RuntimeError):
    """The lean copy of a model could not be made (the message says why)."""


def lean_dir() -> Path:
    """Where lean copies are kept (``DFL_PERF_CACHE_DIR`` moves the root); not created here."""
    from dfl_perf.paths import user_cache_dir

    return user_cache_dir() / "lean"


def _key(model: Path) -> str:
    real = os.path.realpath(str(model))
    text = "%d|%s|%s" % (FORMAT, real, file_stamp(os.stat(real)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def _complete(folder: Path) -> bool:
    try:
        meta = json.loads((folder / SOURCE_NAME).read_text())
        return (folder / MODEL_NAME).is_file() and (folder / WEIGHTS_NAME).stat().st_size == meta["weights_bytes"]
    except (OSError, ValueError, KeyError, TypeError):
        return False


def lean_copy(model: Union[str, Path], timeout: float = CONVERT_TIMEOUT) -> Path:
    """The lean copy of ``model`` (its ``model.onnx``), made on first use; raises LeanWeightsError."""
    from dfl_perf.paths import ensure_private_dir

    source = Path(model)
    if not source.is_file():
        raise LeanWeightsError("model not found: %s" % source)
    root = ensure_private_dir(lean_dir())
    final = root / _key(source)
    if _complete(final):
        return final / MODEL_NAME
    tmp = root / ("%s.tmp.%d.%d" % (final.name, os.getpid(), threading.get_ident()))
    shutil.rmtree(str(tmp), ignore_errors=True)
    try:
        _convert_in_child(source, tmp, timeout)
        if final.exists() and not _complete(final):
            shutil.rmtree(str(final), ignore_errors=True)  # a damaged copy: replace it
        try:
            os.rename(str(tmp), str(final))
        except OSError:
            if not _complete(final):  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(str(tmp), ignore_errors=True)
    remove_stale()
    return final / MODEL_NAME


def remove_stale() -> List[str]:
    """Delete copies whose model file is gone or changed, and dead conversions' leftovers; returns their names."""
    removed = []
    try:
        folders = list(lean_dir().iterdir())
    except OSError:
        return removed
    for folder in folders:
        if ".tmp." in folder.name:
            try:
                stale = time.time() - folder.stat().st_mtime > STALE_TMP_SECONDS
            except OSError:
                continue
        else:
            stale = not _source_unchanged(folder)
        if stale:
            shutil.rmtree(str(folder), ignore_errors=True)
            removed.append(folder.name)
    return removed


def _source_unchanged(folder: Path) -> bool:
    try:
        source = Path(json.loads((folder / SOURCE_NAME).read_text())["source"])
        return source.is_file() and _key(source) == folder.name
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _convert_in_child(source: Path, folder: Path, timeout: float) -> None:
    cmd = [sys.executable, "-m", "dfl_perf.sessions.lean", str(source), str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LeanWeightsError("%s: making the lean copy took over %.0f s" % (source, timeout)) from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else "exit code %d" % proc.returncode
        raise LeanWeightsError("%s: cannot make the lean copy: %s" % (source, reason))


def convert(source: Path, folder: Path) -> None:
    """Write the lean copy of ``source`` into the new folder ``folder`` (the child's job)."""
    import onnx

    model = onnx.load(str(source))  # external data of the source, if any, is read in too
    folder.mkdir(parents=True)
    onnx.save_model(model, str(folder / MODEL_NAME), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=WEIGHTS_NAME, size_threshold=MIN_TENSOR_BYTES)
    weights = folder / WEIGHTS_NAME
    if not weights.exists():  # no tensor over the threshold: an empty weights file keeps the layout
        weights.touch()
    meta = {"format": FORMAT, "source": os.path.realpath(str(source)), "weights_bytes": weights.stat().st_size}
    (folder / SOURCE_NAME).write_text(json.dumps(meta))


def _main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m dfl_perf.sessions.lean MODEL.onnx NEW_FOLDER", file=sys.stderr)
        return 2
    try:
        convert(Path(argv[0]), Path(argv[1]))
    except ImportError:
        print("the onnx package is needed for lean weights (pip install onnx)", file=sys.stderr)
        return 1
    except Exception as exc:  # reported to the parent in one line
        print("%s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
