"""dfl_perf.cluster.command without Ray: addresses, and the error that says how to install Ray."""

from __future__ import annotations

import sys

import pytest

from dfl_perf.cluster.command import _host_port
from dfl_perf.cluster.plan import ClusterJobError


@pytest.mark.parametrize("address, expected", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("ray://head:10001", ("head", 10001)), ("[::1]:6379", ("::1", 6379)),
])
def test_addresses(address, expected):
    assert _host_port(address) == expected


@pytest.mark.parametrize("address", ["head", "ray://head", "head:port", "head:0", ":6379"])
def test_bad_addresses_are_said(address):
    with pytest.raises(ClusterJobError, match="bad Ray address"):
        _host_port(address)


def test_without_ray_the_command_names_the_extra(tmp_path, capsys, monkeypatch):
    """Where Ray is installed, it is hidden (``import ray`` then fails as on a machine without it)."""
    from dfl_perf.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    model, video = tmp_path / "m.dfm", tmp_path / "v.avi"
    model.write_bytes(b"x")
    video.write_bytes(b"x")
    code = main(["run", "--ray", "--model", str(model), "--source", str(video), "--output", str(tmp_path / "o.avi")])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "dfl_perf[ray]"' in err, err
    if sys.version_info < (3, 10):
        assert "Ray needs Python 3.10 or newer" in err
