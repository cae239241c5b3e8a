"""dfl_perf.files: one sha256, one change stamp, one atomic write for every cache of the package."""

from __future__ import annotations

import hashlib
import os

import pytest

from dfl_perf import files


def test_sha256_reads_in_chunks_and_shows_each_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK_BYTES", 1000)
    data = os.urandom(4321)
    path = tmp_path / "blob"
    path.write_bytes(data)
    seen = []
    assert files.sha256_file(path, seen.append) == hashlib.sha256(data).hexdigest()
    assert [len(c) for c in seen] == [1000, 1000, 1000, 1000, 321] and b"".join(seen) == data
    assert files.sha256_file(str(path)) == hashlib.sha256(data).hexdigest()


def test_stamp_changes_when_a_file_is_replaced_keeping_size_and_mtime(tmp_path):
    path, other = tmp_path / "m.onnx", tmp_path / "new"
    path.write_bytes(b"a" * 100)
    before = os.stat(str(path))
    other.write_bytes(b"b" * 100)
    os.utime(str(other), ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(str(other), str(path))
    after = os.stat(str(path))
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert files.file_stamp(after) != files.file_stamp(before)


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "meta.json"
    files.write_atomic(path, b"old")
    files.write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    with pytest.raises(TypeError):
        files.write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
