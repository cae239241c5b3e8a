"""dfl_perf.cluster.command without Ray: addresses, and the error that says how to install Ray."""

from __future__ import annotations

import importlib.util

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


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None,
                    reason="Ray is installed here; test_cluster_job hides it in a subprocess instead")
def test_without_ray_the_command_names_the_extra(tmp_path, capsys):
    pytest.importorskip("cv2")
    from dfl_perf.cli import main

    model, video = tmp_path / "m.dfm", tmp_path / "v.avi"
    model.write_bytes(b"x")
    video.write_bytes(b"x")
    code = main(["run", "--ray", "--model", str(model), "--source", str(video), "--output", str(tmp_path / "o.avi")])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "dfl_perf[ray]"' in err, err
