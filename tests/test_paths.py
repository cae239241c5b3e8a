"""dfl_perf.paths: the user cache folder (platformdirs, or DFL_PERF_CACHE_DIR) and private folders."""

from __future__ import annotations

import stat
import sys

import pytest

from dfl_perf.paths import CACHE_DIR_ENV, ensure_private_dir, user_cache_dir


def test_the_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert user_cache_dir() == tmp_path / "mine"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="XDG_CACHE_HOME is the Linux and BSD convention")
def test_the_platform_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "dfl_perf"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir().parts[-2:] == (".cache", "dfl_perf")


def test_private_folders_are_the_users_only(tmp_path):
    folder = ensure_private_dir(tmp_path / "a" / "b")
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="file"):
        ensure_private_dir(tmp_path / "file")
