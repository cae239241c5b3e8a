"""File helpers shared by the caches and the model registry: a content hash, a change stamp, an
atomic write. Standard library only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, List, Optional, Union

__all__ = ["sha256_file", "file_stamp", "write_atomic"]

CHUNK_BYTES = 4 << 20

PathLike = Union[str, "os.PathLike[str]"]


def sha256_file(path: PathLike, scan: Optional[Callable[[bytes], None]] = None) -> str:
    """The sha256 of a file, read in large chunks; ``scan`` (optional) also sees every chunk, in order."""
    digest = hashlib.sha256()
    with open(os.fspath(path), "rb", buffering=0) as handle:
        while True:
            chunk = handle.read(CHUNK_BYTES)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)
            if scan is not None:
                scan(chunk)


def file_stamp(stat: os.stat_result) -> List[int]:
    """Size, modification and change times and inode: any write or replacement changes one of them
    (a copy that keeps size and mtime, as ``cp -p`` or ``rsync -t`` make, still gets a new inode or ctime)."""
    return [stat.st_size, stat.st_mtime_ns, getattr(stat, "st_ctime_ns", 0), stat.st_ino]


def write_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: readers see
    the old file or the new one, never half of one."""
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=str(target.parent), prefix=target.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, str(target))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
