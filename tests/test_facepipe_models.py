"""facepipe.models: registry, mirror, and the downloader against a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from dfl_perf.facepipe import models
from dfl_perf.facepipe.models import REGISTRY, ModelFetchError, ModelInfo, fetch, model_path, models_main

PAYLOAD = bytes(range(256)) * 1500  # 384000 bytes: more than one read chunk
HALF = len(PAYLOAD) // 2


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        self.server.requests.append((self.path, self.headers.get("Range")))
        name = self.path.rsplit("/", 1)[-1].split(".")[0]
        start = 0
        rng = self.headers.get("Range")
        if rng and name in ("good", "flaky", "truncated"):
            start = int(rng.split("=")[1].split("-")[0])
        if name == "good" or (name == "flaky" and len(self.server.requests) > 1):
            return self._send(PAYLOAD, start)
        if name in ("flaky", "truncated"):  # promise the rest, send only up to HALF, hang up
            return self._send(PAYLOAD, start, stop=max(start, HALF))
        if name == "wronghash":
            return self._send(PAYLOAD[:-1] + b"X", 0)
        if name == "short":
            return self._send(PAYLOAD[:HALF], 0)
        if name == "long":
            return self._send(PAYLOAD + b"extra", 0)
        if name == "error":
            return self._error(500)
        return self._error(404)

    def _send(self, data, start, stop=None):
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:stop])
        if stop is not None:
            self.close_connection = True

    def _error(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server(no_thread_leak, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests = []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, name="test-http", daemon=True)
    thread.start()
    try:
        yield srv, "http://127.0.0.1:%d" % srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def register(monkeypatch, server):
    """Register a test model served at /<kind>.bin; returns its ModelInfo."""
    _, base = server
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)

    def _register(kind):
        info = ModelInfo("t_" + kind, "t_%s.bin" % kind, "%s/%s.bin" % (base, kind),
                         hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD), "test")
        monkeypatch.setitem(REGISTRY, info.name, info)
        return info
    return _register


def _leftovers(cache_dir):
    folder = cache_dir / "models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.timeout(30)
def test_good_download(cache_dir, register, capsys):
    info = register("good")
    path = fetch(info.name, progress=True)
    assert path == cache_dir / "models" / info.filename and path.read_bytes() == PAYLOAD
    assert "100%" in capsys.readouterr().err
    assert model_path(info.name, download=False) == path
    assert _leftovers(cache_dir) == [info.filename]


@pytest.mark.timeout(30)
def test_wrong_hash_keeps_nothing(cache_dir, register):
    info = register("wronghash")
    with pytest.raises(ModelFetchError, match=r"wronghash\.bin.*sha256 [0-9a-f]{64}, expected"):
        fetch(info.name, progress=False)
    assert _leftovers(cache_dir) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind,message", [("error", "HTTP 500"), ("missing", "HTTP 404")])
def test_http_errors_keep_nothing(kind, message, cache_dir, register):
    info = register(kind)
    with pytest.raises(ModelFetchError, match="%s .*%s\\.bin" % (message, kind)):
        fetch(info.name, progress=False)
    assert _leftovers(cache_dir) == []


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", ["short", "long"])
def test_wrong_size_keeps_nothing(kind, cache_dir, register):
    info = register(kind)
    with pytest.raises(ModelFetchError, match="%s\\.bin.*%d" % (kind, len(PAYLOAD))):
        fetch(info.name, progress=False)
    assert _leftovers(cache_dir) == []


@pytest.mark.timeout(30)
def test_truncated_transfer_keeps_a_resumable_part_only(cache_dir, register, server, monkeypatch):
    srv, base = server
    info = register("truncated")
    with pytest.raises(ModelFetchError, match=r"truncated\.bin interrupted .*after %d of %d bytes" % (HALF, len(PAYLOAD))):
        fetch(info.name, progress=False, retries=1)
    assert _leftovers(cache_dir) == [info.filename + ".part"]  # never under the real name
    assert (cache_dir / "models" / (info.filename + ".part")).read_bytes() == PAYLOAD[:HALF]
    assert srv.requests[-1] == ("/truncated.bin", "bytes=%d-" % HALF)
    assert models.model_status(info.name)[0] == "partial 50%"
    # the server is fixed: the next fetch resumes from the partial file
    monkeypatch.setitem(REGISTRY, info.name, dataclasses.replace(info, url=base + "/good.bin"))
    path = fetch(info.name, progress=False)
    assert path.read_bytes() == PAYLOAD and srv.requests[-1] == ("/good.bin", "bytes=%d-" % HALF)
    assert _leftovers(cache_dir) == [info.filename]


@pytest.mark.timeout(30)
def test_interrupted_transfer_resumes_in_the_same_call(cache_dir, register, server):
    srv, _ = server
    info = register("flaky")
    assert fetch(info.name, progress=False).read_bytes() == PAYLOAD
    assert srv.requests == [("/flaky.bin", None), ("/flaky.bin", "bytes=%d-" % HALF)]


@pytest.mark.timeout(30)
def test_unreachable_server(cache_dir, monkeypatch):
    import socket

    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    info = ModelInfo("t_gone", "t_gone.bin", "http://127.0.0.1:%d/x.bin" % port, "0" * 64, 10, "test")
    monkeypatch.setitem(REGISTRY, info.name, info)
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)
    with pytest.raises(ModelFetchError, match="cannot download t_gone from http://127.0.0.1:%d/x.bin" % port):
        fetch(info.name, progress=False)
    assert _leftovers(cache_dir) == []


@pytest.mark.timeout(30)
def test_mirror_url(cache_dir, register, server, monkeypatch):
    srv, base = server
    info = register("missing")  # its own URL would fail
    monkeypatch.setitem(REGISTRY, info.name, dataclasses.replace(info, filename="good.bin"))
    monkeypatch.setenv(models.MIRROR_ENV, base + "/")
    path = model_path(info.name)
    assert path.read_bytes() == PAYLOAD and srv.requests == [("/good.bin", None)]


def test_registry_matches_the_shared_files(shared_models, upstream_registry):
    assert set(upstream_registry) >= {"yunet_s_640_640", "yunet_n_320_320", "facemesh_468", "peppa_slim_160_68pt",
                                      "astronaut"}
    for info in upstream_registry.values():
        folder = shared_models.parent / "media" if info.filename.endswith(".png") else shared_models
        data = (folder / info.filename).read_bytes()
        assert len(data) == info.size and hashlib.sha256(data).hexdigest() == info.sha256, info.name
        assert info.url.startswith("https://raw.githubusercontent.com/")
        assert info.licence.startswith("Apache-2.0") or info.licence == "public domain (NASA)"


def test_embedded_files_are_the_pinned_ones_with_sources_and_licence(upstream_registry):
    data = Path(models.__file__).resolve().parent.parent / "data"
    sources = (data / "SOURCES.md").read_text()
    for name in models.EMBEDDED_MODELS:
        info = upstream_registry[name]
        raw = (data / info.filename).read_bytes()
        assert len(raw) == info.size and hashlib.sha256(raw).hexdigest() == info.sha256, name
        assert info.sha256 in sources and info.url.split("/")[4] in sources  # the commit it came from
    photo = models.face_photo_path().read_bytes()
    assert hashlib.sha256(photo).hexdigest() in sources and len(photo) < 100_000 and photo[:2] == b"\xff\xd8"
    assert upstream_registry["astronaut"].sha256 in sources  # the PNG it was made from
    licence = (data / "LICENSE-yunet.txt").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence and "OpenMMLab" in licence
    assert "public domain" in sources


def test_embedded_detector_needs_no_mirror_cache_or_network(cache_dir, monkeypatch):
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)
    path = model_path("yunet_n_320_320", download=False)
    assert path.parent.name == "data" and path.stat().st_size == REGISTRY["yunet_n_320_320"].size
    assert fetch("yunet_n_320_320", progress=False) == path  # nothing to fetch
    monkeypatch.setenv(models.MIRROR_ENV, str(cache_dir / "empty-mirror"))  # a mirror does not shadow it
    assert model_path("yunet_n_320_320") == path
    assert models.model_status("yunet_n_320_320") == ("embedded", path)
    assert not cache_dir.exists(), "the embedded model was copied or fetched into the cache"


def test_default_clip_photo_is_the_embedded_one(monkeypatch, tmp_path):
    from dfl_perf.facepipe.clip import default_face_image

    monkeypatch.setenv("DFL_PERF_SHARED", str(tmp_path / "no-shared-here"))
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)
    assert default_face_image() == models.face_photo_path()
    assert default_face_image().parent.name == "data" and default_face_image().suffix == ".jpg"


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_damaged_embedded_files_are_reported(damage, tmp_path, monkeypatch):
    if damage == "garbage":
        (tmp_path / "yunet_n_320_320.onnx").write_bytes(b"garbage")
        (tmp_path / "astronaut.jpg").write_bytes(b"garbage")
    monkeypatch.setattr(models, "_DATA_DIR", tmp_path)
    expected = "is missing: the dfl_perf install is incomplete" if damage == "missing" else \
        "has 7 bytes, expected %d .*install is damaged; reinstall it"
    with pytest.raises(ModelFetchError, match=r"yunet_n_320_320.onnx " + expected.replace("%d", "317434")):
        model_path("yunet_n_320_320")
    with pytest.raises(ModelFetchError, match=r"astronaut.jpg " + expected.replace("%d", "66489")):
        models.face_photo_path()
    assert models.model_status("yunet_n_320_320")[0] == ("missing" if damage == "missing" else "damaged")


def test_mirror_directory_is_used_in_place(cache_dir, monkeypatch, tmp_path):
    info = ModelInfo("t_mirrored", "t_mirrored.bin", "http://127.0.0.1:9/unreachable.bin",
                     hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD), "test")
    monkeypatch.setitem(REGISTRY, info.name, info)
    (tmp_path / info.filename).write_bytes(PAYLOAD)
    monkeypatch.setenv(models.MIRROR_ENV, str(tmp_path))
    assert model_path(info.name, download=False) == tmp_path / info.filename
    assert not (cache_dir / "models").exists()
    path = fetch(info.name, progress=False)  # fetch copies it into the cache, verified
    assert path == cache_dir / "models" / info.filename and path.read_bytes() == PAYLOAD


def test_bad_mirror_file_is_reported(tmp_path, cache_dir, monkeypatch):
    (tmp_path / "yunet_s_640_640.onnx").write_bytes(b"garbage")
    monkeypatch.setenv(models.MIRROR_ENV, str(tmp_path))
    with pytest.raises(ModelFetchError, match=r"mirror file .*yunet_s_640_640.onnx has 7 bytes, expected 232589"):
        model_path("yunet_s_640_640")


def test_missing_without_download_and_unknown_names(cache_dir, monkeypatch):
    monkeypatch.delenv(models.MIRROR_ENV, raising=False)
    with pytest.raises(ModelFetchError, match="dfl-perf models fetch facemesh_468"):
        model_path("facemesh_468", download=False)
    # tests never download: conftest points every upstream address at a closed local port
    with pytest.raises(ModelFetchError, match="cannot download facemesh_468 from http://127.0.0.1:9/"):
        model_path("facemesh_468")
    assert _leftovers(cache_dir) == []
    with pytest.raises(ModelFetchError, match="unknown model 'nope'.*yunet_n_320_320"):
        model_path("nope")


def test_models_main(cache_dir, monkeypatch, capsys, tmp_path):
    for name in ("t_one", "t_two"):
        info = ModelInfo(name, name + ".bin", "http://127.0.0.1:9/%s.bin" % name,
                         hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD), "test")
        monkeypatch.setitem(REGISTRY, name, info)
        (tmp_path / info.filename).write_bytes(PAYLOAD)
    monkeypatch.setenv(models.MIRROR_ENV, str(tmp_path))
    assert models_main(["list"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["t_one"][-2:] == ["mirror", str(tmp_path / "t_one.bin")]
    assert rows["yunet_n_320_320"][-2:] == ["embedded", str(model_path("yunet_n_320_320"))]
    assert rows["facemesh_468"][-2:] == ["missing", "-"]
    assert models_main(["fetch", "--quiet", "t_one"]) == 0
    assert Path(capsys.readouterr().out.strip()) == cache_dir / "models" / "t_one.bin"
    assert (cache_dir / "models" / "t_one.bin").read_bytes() == PAYLOAD
    assert models_main(["path", "t_two"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "t_two.bin")
    assert models_main(["fetch", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert models_main(["bogus"]) == 2
    monkeypatch.delenv(models.MIRROR_ENV)
    assert models_main(["path", "--no-fetch", "t_two"]) == 1
    assert "not in the cache" in capsys.readouterr().err
    assert models_main(["path", "--no-fetch", "t_one"]) == 0  # fetched into the cache above
    assert capsys.readouterr().out.strip() == str(cache_dir / "models" / "t_one.bin")
