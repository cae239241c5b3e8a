"""dfl_perf.serve.settings/auth and the refusals of ``dfl-perf serve`` that happen before Ray starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dfl_perf.serve.auth import ServeSetupError, TokenCheck, check_bind, is_loopback, resolve_token
from dfl_perf.serve.settings import ServeSettings


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.dfm"
    path.write_bytes(b"not checked here")
    return str(path)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_token(host):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "gpu-box.lan"])
def test_any_other_host_needs_a_token(host):
    assert not is_loopback(host)
    with pytest.raises(ServeSetupError, match="refusing to listen on .* without a token"):
        check_bind(host, None)
    check_bind(host, "s3cret")


def test_token_from_the_environment(monkeypatch):
    monkeypatch.setenv("DFL_PERF_SERVE_TOKEN", "from-env")
    assert resolve_token(None) == "from-env"
    assert resolve_token("given") == "given"
    monkeypatch.delenv("DFL_PERF_SERVE_TOKEN")
    assert resolve_token(None) is None
    with pytest.raises(ServeSetupError, match="empty"):
        resolve_token("  ")
    with pytest.raises(ServeSetupError, match="printable ASCII"):
        resolve_token("two words")


def test_token_check():
    check = TokenCheck("s3cret")
    assert check.required
    assert check.allows("Bearer s3cret") and check.allows("bearer s3cret")
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cretX", "Basic s3cret", "s3cret"):
        assert not check.allows(header), header
    assert TokenCheck(None).allows(None)


def test_settings_name_each_mistake(model, tmp_path):
    ServeSettings(model)
    cases = [(dict(model_path=str(tmp_path / "none.dfm")), "model not found"),
             (dict(replicas=0), "--replicas"), (dict(max_batch=0), "--max-batch"),
             (dict(batch_wait_ms=-1), "--batch-wait-ms"), (dict(port=0), "--port"),
             (dict(tls_cert=model), "both --tls-cert and --tls-key"), (dict(host="0.0.0.0"), "without a token")]
    for change, message in cases:
        kwargs = dict(dict(model_path=model), **change)
        with pytest.raises(ServeSetupError, match=message):
            ServeSettings(**kwargs)
    assert ServeSettings(model, host="0.0.0.0", token="t", port=9001).url == "http://0.0.0.0:9001"


def _serve(*args, env=None):
    import os

    environment = dict(os.environ, **(env or {}))
    environment.pop("DFL_PERF_SERVE_TOKEN", None) if env is None else None
    return subprocess.run([sys.executable, "-m", "dfl_perf.cli", "serve"] + list(args), capture_output=True,
                          text=True, timeout=60, env=environment)


def test_serve_refuses_a_public_host_without_a_token_before_starting_anything(model):
    done = _serve("--model", model, "--host", "0.0.0.0")
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in done.stderr
    assert "ray" not in done.stderr.lower().replace("dfl-perf serve", "")


def test_serve_says_what_is_missing_without_ray(model):
    """DFL's 3.8 has no Ray; here Ray is hidden from the command the same way (its import fails)."""
    code = ("import sys; sys.modules['ray'] = None; from dfl_perf.cli import main; "
            "sys.exit(main(['serve', '--model', %r, '--token', 't', '--host', '0.0.0.0']))" % model)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs Ray Serve, which needs Python 3.10 or newer" in done.stderr
    assert "pip install 'dfl_perf[serve]'" in done.stderr


def test_one_gpu_per_replica_when_the_cluster_has_gpus(model):
    """Placement only (no GPU here: what the replicas then do on a GPU is not measured)."""
    from dfl_perf.serve.settings import deployment_options

    options, _ = deployment_options(ServeSettings(model, replicas=2), gpus=4, cpus=32, cores=8)
    assert options["ray_actor_options"] == {"num_gpus": 1} and options["num_replicas"] == 2
    auto, _ = deployment_options(ServeSettings(model, replicas="auto"), gpus=4, cpus=32, cores=8)
    assert auto["autoscaling_config"]["max_replicas"] == 4 and "num_replicas" not in auto
    cpu, _ = deployment_options(ServeSettings(model, replicas=2, provider="cpu"), gpus=4, cpus=32, cores=8)
    assert cpu["ray_actor_options"] == {"num_cpus": 4}  # the CPU asked for: the GPUs are not taken


def test_cpu_replicas_reserve_their_threads(model):
    from dfl_perf.serve.settings import deployment_options

    options, threads = deployment_options(ServeSettings(model, replicas=2), gpus=0, cpus=2, cores=2)
    assert threads == 1 and options["ray_actor_options"] == {"num_cpus": 1}
    auto, threads = deployment_options(ServeSettings(model, replicas="auto"), gpus=0, cpus=8, cores=2)
    assert threads == 2 and auto["autoscaling_config"]["max_replicas"] == 4
    fixed, threads = deployment_options(ServeSettings(model, threads=3, max_batch=16), gpus=0, cpus=2, cores=2)
    assert threads == 3 and fixed["max_ongoing_requests"] == 64
