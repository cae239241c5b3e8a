"""Exports: JSON and CSV round trips, Prometheus text parsed line by line, the HTTP endpoint."""

from __future__ import annotations

import csv
import json
import re
import urllib.error
import urllib.request

import pytest

from dfl_perf.lazy import is_available
from dfl_perf.monitor import PerformanceMonitor
from dfl_perf.monitor.export import prometheus_text

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
SAMPLE = re.compile(r"^(%s)(?:\{((?:%s)(?:,%s)*),?\})? (\S+)$" % (NAME, LABEL, LABEL))
VALUE = re.compile(r"^(?:[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|[-+]Inf|NaN)$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 64.0

    def __call__(self) -> float:
        return self.now


def parse_prometheus(text):
    """Parse the text exposition format 0.0.4 strictly; returns {family: {"type", "help", "samples"}}."""
    assert text.endswith("\n")
    families = {}
    current = None
    for number, line in enumerate(text.rstrip("\n").split("\n"), 1):
        where = "line %d: %r" % (number, line)
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP "):].partition(" ")
            assert re.match("^%s$" % NAME, name) and help_text, where
            assert name not in families, "family declared twice: " + where
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[len("# TYPE "):].split(" ")
            assert name == current and families[name]["type"] is None and not families[name]["samples"], where
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), where
            families[name]["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, "not a sample line: " + where
            name, labels_text, value = match.group(1), match.group(2), match.groups()[-1]
            assert VALUE.match(value), "bad value: " + where
            family = families[current]
            allowed = {current} | ({current + "_sum", current + "_count"} if family["type"] == "summary" else set())
            assert name in allowed, "sample outside its family: " + where
            labels = {}
            for key, raw in re.findall(LABEL, labels_text or ""):
                assert key not in labels, where
                labels[key] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            family["samples"].append((name, labels, float(value)))
    for name, family in families.items():
        assert name.startswith("dfl_perf_") and family["type"] and family["samples"], name
    return families


def busy_monitor():
    clock = FakeClock()
    monitor = PerformanceMonitor(interval=1.0, clock=clock)
    monitor.mark("models loaded")
    for index in range(40):
        clock.now += 0.0625
        monitor.record("detect", 0.01 + index * 1e-4)
        monitor.record('swap "fast"\\path\n', 0.02)  # a stage name that needs escaping
        monitor.frame_done(0.05 + (index % 4) * 0.01)
    monitor.frame_dropped(3)
    monitor.frame_late()
    clock.now += 0.5
    return monitor


def test_prometheus_text_is_valid_and_matches_the_summary():
    monitor = busy_monitor()
    families = parse_prometheus(prometheus_text(monitor))
    summary = monitor.summary()
    assert families["dfl_perf_fps"]["type"] == "gauge"
    assert families["dfl_perf_fps"]["samples"] == [("dfl_perf_fps", {}, pytest.approx(summary["fps"]))]
    assert families["dfl_perf_frames_total"]["samples"][0][2] == 40
    assert families["dfl_perf_dropped_frames_total"]["type"] == "counter"
    assert families["dfl_perf_dropped_frames_total"]["samples"][0][2] == 3
    stage = families["dfl_perf_stage_latency_seconds"]
    assert stage["type"] == "summary"
    by_key = {(name, labels.get("stage"), labels.get("quantile")): value for name, labels, value in stage["samples"]}
    detect = summary["stages"]["detect"]
    assert by_key[("dfl_perf_stage_latency_seconds", "detect", "0.95")] == pytest.approx(detect["p95"])
    assert by_key[("dfl_perf_stage_latency_seconds_count", "detect", None)] == 40
    assert by_key[("dfl_perf_stage_latency_seconds", 'swap "fast"\\path\n', "0.5")] == pytest.approx(0.02)
    latency = {labels.get("quantile"): value for _, labels, value in families["dfl_perf_frame_latency_seconds"]["samples"]}
    assert latency["0.99"] == pytest.approx(summary["latency"]["p99"])
    marks = families["dfl_perf_mark_seconds"]["samples"]
    assert marks == [("dfl_perf_mark_seconds", {"mark": "models loaded"}, 0.0)]


def test_prometheus_text_of_an_empty_monitor_is_valid():
    families = parse_prometheus(PerformanceMonitor().prometheus_text())
    assert "dfl_perf_frame_latency_seconds" in families  # _sum and _count, no quantiles yet
    assert families["dfl_perf_fps"]["samples"][0][2] == 0.0


def test_export_json_round_trip(tmp_path):
    monitor = busy_monitor()
    path = tmp_path / "perf.json"
    monitor.export_json(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    summary = monitor.summary()
    assert set(document) == {"summary", "timeline", "system_history"}
    assert document["summary"]["frames"] == 40 and document["summary"]["dropped"] == 3
    assert document["summary"]["stages"]["detect"]["p95"] == pytest.approx(summary["stages"]["detect"]["p95"])
    assert document["summary"]["fps"] == pytest.approx(summary["fps"])
    assert document["timeline"] == json.loads(json.dumps(monitor.timeline()))
    assert document["system_history"] == []


def test_export_csv_round_trip(tmp_path):
    monitor = busy_monitor()
    path = tmp_path / "perf.csv"
    monitor.export_csv(str(path))
    with open(str(path), newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    timeline = monitor.timeline()
    assert len(rows) == len(timeline) == 2
    assert [float(row["fps"]) for row in rows] == [row["fps"] for row in timeline]
    assert [int(row["frames"]) for row in rows] == [16, 16]
    assert float(rows[0]["latency_p95"]) == pytest.approx(timeline[0]["p95"])
    assert float(rows[1]["stage_detect_p50"]) == pytest.approx(timeline[1]["stages"]["detect"]["p50"])
    assert rows[0]["process_rss"] == ""  # no sampler: empty cells, not "None"


def test_export_csv_empty_and_bad_path(tmp_path):
    path = tmp_path / "empty.csv"
    PerformanceMonitor().export_csv(path)
    assert path.read_text(encoding="utf-8").startswith("time,frames,fps")
    with pytest.raises(OSError, match="no_such_dir"):
        PerformanceMonitor().export_json(tmp_path / "no_such_dir" / "x.json")


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Content-Type"), response.read().decode("utf-8")


@pytest.mark.timeout(60)
def test_http_endpoint_over_loopback(no_thread_leak):
    with busy_monitor() as monitor:
        host, port = monitor.serve_http(port=0, backend="stdlib")
        assert host == "127.0.0.1" and port > 0
        kind, body = fetch("http://127.0.0.1:%d/metrics" % port)
        assert kind.startswith("text/plain; version=0.0.4")
        families = parse_prometheus(body)
        assert families["dfl_perf_frames_total"]["samples"][0][2] == 40
        kind, body = fetch("http://127.0.0.1:%d/summary" % port)
        assert kind == "application/json" and json.loads(body)["dropped"] == 3
        with pytest.raises(urllib.error.HTTPError) as error:
            fetch("http://127.0.0.1:%d/nothing" % port)
        assert error.value.code == 404
        with pytest.raises(RuntimeError, match="already serving"):
            monitor.serve_http()
    with pytest.raises(urllib.error.URLError):
        fetch("http://127.0.0.1:%d/metrics" % port)
    with pytest.raises(RuntimeError, match="closed"):
        monitor.serve_http()


@pytest.mark.timeout(60)
def test_http_endpoint_restarts_and_rejects_bad_backend(no_thread_leak):
    monitor = PerformanceMonitor()
    try:
        first = monitor.serve_http()
        monitor.stop_http()
        second = monitor.serve_http()
        assert fetch("http://%s:%d/" % second)[1].startswith("# HELP dfl_perf_fps")
        assert first[0] == second[0] == "127.0.0.1"
        monitor.stop_http()
        with pytest.raises(ValueError, match="backend"):
            monitor.serve_http(backend="flask")
    finally:
        monitor.close()


@pytest.mark.timeout(60)
@pytest.mark.skipif(not is_available("prometheus_client"), reason="prometheus_client not installed")
def test_http_endpoint_with_prometheus_client(no_thread_leak):
    from prometheus_client.parser import text_string_to_metric_families

    with busy_monitor() as monitor:
        host, port = monitor.serve_http(backend="prometheus_client")
        body = fetch("http://%s:%d/metrics" % (host, port))[1]
    families = parse_prometheus(body)
    assert families["dfl_perf_frames_total"]["samples"][0][2] == 40
    for text in (body, prometheus_text(monitor)):  # its parser reads both the same way
        parsed = {family.name: family for family in text_string_to_metric_families(text)}
        assert parsed["dfl_perf_stage_latency_seconds"].type == "summary"
        assert parsed["dfl_perf_dropped_frames"].samples[0].value == 3
