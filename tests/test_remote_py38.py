"""DeepFaceLive's Python 3.8 client against a ``dfl-perf serve`` started from a newer Python.

Ray does not run on 3.8, so the server comes from the interpreter named by ``DFL_PERF_SERVE_PYTHON``
(CI points it at the 3.11 job's environment). One server for the module: the client's swaps, then
the DFL stand-in launched with ``--remote-swap`` (its spawned FaceSwapDFM worker on this 3.8 picks
the server's model from the model list), then the server is stopped with SIGINT, as Ctrl-C would,
and must leave no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.serve_harness import ServeProcess, alive, local_swap, wait_for

SERVE_PYTHON = os.environ.get("DFL_PERF_SERVE_PYTHON")
if sys.version_info >= (3, 10):  # one skip for the module, not one per test
    pytest.skip("this check is for DFL's Python 3.8 client; on this Python test_serve_ray.py runs the client "
                "against its own Ray Serve", allow_module_level=True)
if not SERVE_PYTHON:
    pytest.skip("set DFL_PERF_SERVE_PYTHON to a Python >= 3.10 with dfl_perf[serve] to run this 3.8 client "
                "against its server (CI does)", allow_module_level=True)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from dfl_perf.facepipe.standin import save_dfm_standin  # noqa: E402
from dfl_perf.remote import RemoteSwapError, RemoteSwapper  # noqa: E402

TOKEN = "py38-token"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STANDIN = os.path.join(REPO, "tests", "dfl_standin")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_dfm_standin(tmp_path_factory.mktemp("py38") / "celeb.dfm", resolution=224, cost="5ms", seed=3)


@pytest.fixture(scope="module")
def served(model):
    server = ServeProcess(SERVE_PYTHON, model, token=TOKEN)
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        server.kill_everything()


def test_py38_client_against_a_server_from_a_newer_python(served, model):
    faces = np.random.RandomState(0).randint(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    local = local_swap(model, faces)
    with RemoteSwapper(served.url, token=TOKEN) as client:
        remote = client.swap(faces)
        assert client.info()["protocol"] == "dfl-perf-swap/1"
    for r, loc in zip(remote, local):
        assert np.abs(r - loc).max() * 255 <= 1.0
    with RemoteSwapper(served.url, token="nope") as client:
        with pytest.raises(RemoteSwapError) as info:
            client.swap(faces)
        assert info.value.http_status == 401


@pytest.fixture(scope="module")
def standin_models(tmp_path_factory):
    """Where the stand-in DFL builds its detector and marker models (once for the module)."""
    return tmp_path_factory.mktemp("standin_models")


def _standin(userdata, settings, launcher_args, models_dir):
    userdata.mkdir(parents=True, exist_ok=True)
    settings = dict(settings, frames=5, warmup=1, models_dir=str(models_dir))
    (userdata / "standin_settings.json").write_text(json.dumps(settings))
    env = dict(os.environ)
    for name in ("DFL_PERF_DFL_CONFIG", "PYTHONPATH", "DFL_PERF_SERVE_TOKEN"):
        env.pop(name, None)
    main = [os.path.join(STANDIN, "main.py"), "run", "DeepFaceLive", "--userdata-dir", str(userdata)]
    cmd = [sys.executable] + (["-m", "dfl_perf.adapters.deepfacelive"] + launcher_args if launcher_args else []) + main
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads((userdata / "standin_report.json").read_text())
    assert report["frames"] == 5 and set(report["exit_codes"]) == {0}
    return report["workers"]["FaceSwapDFM"]


@pytest.mark.timeout(300)
def test_dfl_remote_swap_lists_the_servers_model_and_swaps_there(served, model, tmp_path, standin_models):
    local = _standin(tmp_path / "local", {"dfm_path": model}, None, standin_models)
    models_dir = tmp_path / "dfm_models"
    models_dir.mkdir()
    (models_dir / "another.dfm").write_bytes(b"a local model file: listed, never loaded here")
    settings = {"dfm_models_dir": str(models_dir), "dfm_model": "celeb @"}
    remote = _standin(tmp_path / "remote", settings, ["--remote-swap", served.url, "--token", TOKEN], standin_models)
    assert remote["models"] == ["celeb @ 127.0.0.1:%d" % served.port, "another"]
    assert remote["model_type"] == "dfl_perf.adapters.deepfacelive.remote_swap"
    assert remote["model_file"].endswith(".remote-dfm") and remote["sessions"] == []  # no model in DFL's process
    assert len(remote["swapped_means"]) == len(local["swapped_means"]) == 5
    assert np.abs(np.subtract(remote["swapped_means"], local["swapped_means"])).max() <= 1.0
    with RemoteSwapper(served.url, token=TOKEN) as client:
        assert client.info(refresh=True)["faces"] >= 5  # the faces reached the server


def test_ctrl_c_stops_the_server_and_leaves_no_process(served):
    """Last in the module: stops the shared server."""
    processes = served.ray_processes()
    assert len(processes) >= 4
    assert served.stop(signal.SIGINT) == 0, served.log()[-2000:]
    assert wait_for(lambda: not alive(processes), 15), [p.pid for p in alive(processes)]
