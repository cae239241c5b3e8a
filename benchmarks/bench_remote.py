"""The remote swap on Ray Serve: the hop's cost, live pipeline remote vs local, streams and batching,
two simulated nodes with one lost, and per-batch model times (what a GPU server's figures come from).

Parts (``--parts``, default all):

- ``hop``: one client, one aligned 224x224 face (from the astronaut photo) per request, back to
  back: round trip, and the round trip minus the model run that served it (the server's
  ``Server-Timing``): the time the remote hop adds, p50/p99, raw and jpeg, with batching off and
  with the default batching (which waits ``--batch-wait-ms`` for company).
- ``live``: the reference live pipeline (camera-paced 640x480 frames, drop oldest, deadline) with the
  swap local vs on the server: latency p50/p99 and delivered FPS, side by side.
- ``streams``: 1, 2 and 4 client streams (each back to back, one face per request) against one
  replica, batching on vs off, and the same number of independent local processes each running the
  model itself (threads split between them): aggregate faces/s, cells alternated in every repeat.
- ``batch``: the model alone, per batch size on this machine's provider: ms per batch, faces/s.
- ``cluster``: two simulated nodes (``ray.cluster_utils.Cluster``, one CPU each), one replica on
  each; a worker node is removed mid-stream and added back; every frame's status is counted.

The swap model is the DFM stand-in (``--cost``) carrying ``--dense-mb`` MB of dense weights read on
every run, as a real DFM's middle layers are (real DFMs are 100-700 MB files); ``--dense-mb 0`` is
the 0.3 MB convolution-only stand-in. Server, clients and local processes share this machine.

    python benchmarks/bench_remote.py [--parts hop live streams batch cluster] [--repeats 3] [--seconds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from _common import median, print_header, write_json  # noqa: E402

PARTS = ("hop", "live", "streams", "batch", "cluster")


def _percentiles(values: List[float]) -> Dict[str, float]:
    p50, p99 = np.percentile(np.asarray(values) * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def aligned_face(resolution: int = 224) -> np.ndarray:
    """The astronaut's face, detected and aligned as the pipeline does (a realistic JPEG size)."""
    import cv2

    from dfl_perf.facepipe.align import align_matrix, warp_face
    from dfl_perf.facepipe.clip import default_face_image
    from dfl_perf.facepipe.detector import FaceDetector

    image = cv2.imread(str(default_face_image()), cv2.IMREAD_COLOR)
    face = FaceDetector("yunet_n_320_320").detect(image)[0]
    return warp_face(image, align_matrix(face.keypoints, resolution, 2.2), resolution)


# ------------------------------------------------------------------------------------ a server

class BenchServer:
    """A local Ray (its own temp dir) with Serve, redeployed per configuration; the product's code."""

    def __init__(self, model: str, port: int) -> None:
        from dfl_perf.serve.command import Server
        from dfl_perf.serve.settings import ServeSettings

        self.settings = ServeSettings(model, port=port, object_store_mb=200)
        self.server = Server(self.settings)
        self.server.start()
        self.url = self.settings.url

    def deploy(self, **changes: Any) -> Dict[str, Any]:
        import dataclasses

        from dfl_perf.remote import RemoteSwapper

        settings = dataclasses.replace(self.settings, **changes)
        self.server.deploy(settings)
        with RemoteSwapper(self.url, timeout=30) as client:
            for _ in range(300):
                info = client.info(refresh=True)
                if (info["max_batch"], info["batch_wait_ms"]) == (
                        settings.max_batch if info["batch_axis"] == "dynamic" else 1, settings.batch_wait_ms):
                    return info
                time.sleep(0.2)
        raise RuntimeError("redeploy with %s did not take" % (changes,))

    def stop(self) -> None:
        self.server.stop()


# ----------------------------------------------------------------------------------------- hop

def part_hop(server: BenchServer, face: np.ndarray, requests: int) -> Dict[str, Any]:
    from dfl_perf.remote import RemoteSwapper

    results: Dict[str, Any] = {}
    for label, batch, wait in (("batching off", 1, 0.0), ("batching on (max 8, no wait)", 8, 0.0),
                               ("batching on (max 8, 2 ms wait)", 8, 2.0)):
        server.deploy(max_batch=batch, batch_wait_ms=wait)
        clients = {codec: RemoteSwapper(server.url, codec=codec) for codec in ("raw", "jpeg")}
        rtt: Dict[str, List[float]] = {c: [] for c in clients}
        hop: Dict[str, List[float]] = {c: [] for c in clients}
        model: List[float] = []
        try:
            for client in clients.values():
                for _ in range(10):
                    client.swap_uint8(face)
            for _ in range(requests):
                for codec, client in clients.items():  # interleaved: both see the same machine
                    start = time.perf_counter()
                    client.swap_uint8(face)
                    elapsed = time.perf_counter() - start
                    ran = client.last_server_timing()["model"] / 1e3
                    rtt[codec].append(elapsed)
                    hop[codec].append(elapsed - ran)
                    model.append(ran)
            for codec, client in clients.items():
                stats = client.stats()
                results["%s, %s" % (label, codec)] = {
                    "round_trip": _percentiles(rtt[codec]), "added_by_hop": _percentiles(hop[codec]),
                    "bytes_up_per_face": stats["sent_per_face"], "bytes_down_per_face": stats["received_per_face"]}
            results["%s, model run" % label] = _percentiles(model)
        finally:
            for client in clients.values():
                client.close()
    print("\n-- hop: one 224x224 face per request, %d requests per cell (ms) --" % requests)
    print("%-42s %9s %9s %9s %9s %9s %9s" % ("", "rtt p50", "rtt p99", "hop p50", "hop p99", "KB up", "KB down"))
    for key, row in results.items():
        if "round_trip" in row:
            print("%-42s %9.2f %9.2f %9.2f %9.2f %9.1f %9.1f" % (
                key, row["round_trip"]["p50_ms"], row["round_trip"]["p99_ms"], row["added_by_hop"]["p50_ms"],
                row["added_by_hop"]["p99_ms"], row["bytes_up_per_face"] / 1e3, row["bytes_down_per_face"] / 1e3))
        else:
            print("%-42s model run p50 %.2f p99 %.2f" % (key, row["p50_ms"], row["p99_ms"]))
    return results


# ------------------------------------------------------------------------------------- streams

_LOCAL_WORKER = r"""
import sys, time, numpy as np
from dfl_perf.serve.model import SwapModel
model = SwapModel(sys.argv[1], "cpu", threads=int(sys.argv[2]))
face = np.load(sys.argv[3])
for _ in range(5):
    model.swap(face)
print("ready", flush=True)
sys.stdin.readline()
seconds = float(sys.argv[4]); done = 0; end = time.perf_counter() + seconds
while time.perf_counter() < end:
    model.swap(face); done += 1
print(done, flush=True)
"""


def _local_processes(model: str, streams: int, face_file: str, seconds: float, budget: int) -> float:
    threads = max(1, budget // streams)
    procs = [subprocess.Popen([sys.executable, "-c", _LOCAL_WORKER, model, str(threads), face_file, str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(streams)]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a local worker failed to start")
        for proc in procs:  # all start together
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return sum(int(proc.stdout.readline()) for proc in procs) / seconds
    finally:
        for proc in procs:
            proc.wait(60)


def _remote_streams(url: str, streams: int, face: np.ndarray, seconds: float) -> float:
    from dfl_perf.remote import RemoteSwapper

    clients = [RemoteSwapper(url, connections=1, timeout=10) for _ in range(streams)]
    counts = [0] * streams
    start = threading.Barrier(streams)
    try:
        for client in clients:
            for _ in range(3):
                client.swap_uint8(face)

        def stream(i: int) -> None:
            start.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                clients[i].swap_uint8(face)
                counts[i] += 1

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for client in clients:
            client.close()
    return sum(counts) / seconds


def part_streams(server: BenchServer, model: str, face: np.ndarray, seconds: float, repeats: int,
                 counts: List[int], max_batch: int, wait_ms: float) -> Dict[str, Any]:
    from dfl_perf.devices import cpu_budget

    face_file = os.path.join(tempfile.mkdtemp(prefix="bench_remote"), "face.npy")
    np.save(face_file, face[None])
    modes = ("batching on", "batching off", "local processes")
    cells: Dict[str, Dict[int, List[float]]] = {m: {n: [] for n in counts} for m in modes}
    for repeat in range(repeats):
        order = modes if repeat % 2 == 0 else tuple(reversed(modes))
        for mode in order:
            if mode != "local processes":
                server.deploy(max_batch=max_batch if mode == "batching on" else 1, batch_wait_ms=wait_ms)
            for n in counts:
                if mode == "local processes":
                    rate = _local_processes(model, n, face_file, seconds, cpu_budget())
                else:
                    rate = _remote_streams(server.url, n, face[None], seconds)
                cells[mode][n].append(rate)
                print("  repeat %d %-16s %d streams: %.1f faces/s" % (repeat + 1, mode, n, rate), flush=True)
    table = {mode: {n: round(median(v), 1) for n, v in by_n.items()} for mode, by_n in cells.items()}
    print("\n-- streams: aggregate faces/s, median of %d (%.0f s each), one replica (max batch %d, wait %g ms) --"
          % (repeats, seconds, max_batch, wait_ms))
    print("%-18s" % "streams" + "".join("%10d" % n for n in counts))
    for mode in modes:
        print("%-18s" % mode + "".join("%10.1f" % table[mode][n] for n in counts))
    on, off = table["batching on"], table["batching off"]
    ratio = {n: round(on[n] / off[n], 2) for n in counts}
    print("%-18s" % "on / off" + "".join("%10.2f" % ratio[n] for n in counts))
    return {"faces_per_s": table, "runs": cells, "on_over_off": ratio}


# --------------------------------------------------------------------------------------- batch

def part_batch(model: str, face: np.ndarray, sizes: List[int]) -> Dict[str, Any]:
    from dfl_perf.serve.model import SwapModel

    swap = SwapModel(model)
    rows = {}
    try:
        for size in sizes:
            faces = np.repeat(face[None], size, axis=0)
            for _ in range(3):
                swap.swap(faces)
            times = []
            for _ in range(max(5, 40 // size)):
                start = time.perf_counter()
                swap.swap(faces)
                times.append(time.perf_counter() - start)
            ms = median(times) * 1e3
            rows[size] = {"ms_per_batch": round(ms, 2), "faces_per_s": round(size * 1e3 / ms, 1)}
    finally:
        swap.close()
    print("\n-- batch: the model alone on %s, %d intra-op threads --" % (swap.provider, swap.threads))
    for size, row in rows.items():
        print("  batch %2d: %7.2f ms per batch, %6.1f faces/s (%.2fx batch 1)"
              % (size, row["ms_per_batch"], row["faces_per_s"], row["faces_per_s"] / rows[sizes[0]]["faces_per_s"]))
    return {"provider": swap.provider, "threads": swap.threads, "rows": rows}


# ---------------------------------------------------------------------------------------- live

def part_live(url: str, face_model: str, seconds: float, repeats: int) -> Dict[str, Any]:
    from dfl_perf.facepipe.clip import PATH_PERIOD, make_clip
    from dfl_perf.facepipe.workload import OptimizedRunner, Workload, paced_frames
    from dfl_perf.remote.runner import RemoteDFM

    clip = make_clip(size=(640, 480), frames=PATH_PERIOD).to_list()
    workload = Workload(dfm=face_model)
    cells: Dict[str, List[Dict[str, float]]] = {"local": [], "remote": []}
    for repeat in range(repeats):
        for mode in (("local", "remote") if repeat % 2 == 0 else ("remote", "local")):
            dfm = RemoteDFM.connect(url, live=True) if mode == "remote" else None
            try:
                with OptimizedRunner(workload, live=True, deadline=0.25, dfm=dfm,
                                     swap_workers=dfm.connections if dfm is not None else None) as runner:
                    runner.run(clip[:10])
                    stats = runner.run(paced_frames(clip, 30.0, seconds))
            finally:
                if dfm is not None:
                    dfm.close()
            lat = stats.latency_percentiles()
            row = {"fps": stats.fps, "p50_ms": lat["p50"] * 1e3, "p99_ms": lat["p99"] * 1e3,
                   "not_done": stats.not_done}
            cells[mode].append(row)
            print("  repeat %d %-6s %.1f FPS, latency p50 %.1f ms p99 %.1f ms, %d not done"
                  % (repeat + 1, mode, row["fps"], row["p50_ms"], row["p99_ms"], row["not_done"]), flush=True)
    table = {mode: {k: round(median(r[k] for r in rows), 1) for k in rows[0]} for mode, rows in cells.items()}
    print("\n-- live: 640x480 frames at 30 FPS for %.0f s, deadline 250 ms, median of %d --" % (seconds, repeats))
    for mode, row in table.items():
        print("  %-6s %5.1f FPS delivered, latency p50 %6.1f ms, p99 %6.1f ms" % (mode, row["fps"], row["p50_ms"],
                                                                                 row["p99_ms"]))
    return {"table": table, "runs": cells}


# ------------------------------------------------------------------------------------- cluster

def part_cluster(model: str, face: np.ndarray, port: int) -> Dict[str, Any]:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from dfl_perf.remote import RemoteSwapError, RemoteSwapper
    from dfl_perf.serve.app import build_app
    from dfl_perf.serve.settings import APP_NAME, ServeSettings

    os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"  # as dfl-perf serve does
    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 1, "object_store_memory": 100 << 20, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, object_store_memory=100 << 20)
    cluster.wait_for_nodes()
    settings = ServeSettings(model, port=port, replicas=2, threads=1, max_batch=4)
    statuses: List[Dict[str, Any]] = []
    phase = ["both nodes"]
    stop = threading.Event()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly",
                    logging_config={"enable_access_log": False, "log_level": "WARNING"})
        serve.run(build_app(settings, 0.0, 2.0), name=APP_NAME, route_prefix="/", blocking=False,
                  logging_config={"enable_access_log": False, "log_level": "WARNING"})
        nodes = _replica_nodes(settings.url)
        print("\n-- cluster: replicas on nodes %s (head %s, worker %s) --"
              % (sorted(set(nodes.values())), _short(cluster.head_node.node_id), _short(worker.node_id)))

        def stream(client: RemoteSwapper) -> None:
            while not stop.is_set():
                row = {"phase": phase[0], "status": "ok", "reason": "", "replica": ""}
                try:
                    client.swap_uint8(face[None])
                    row["replica"] = client.last_replica()
                except RemoteSwapError as exc:
                    row.update(status=exc.status, reason=exc.reason)
                statuses.append(row)
                stop.wait(1 / 15.0)

        clients = [RemoteSwapper(settings.url, timeout=1.0, retry_interval=0.2, connections=1) for _ in range(2)]
        threads = [threading.Thread(target=stream, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        time.sleep(5)
        phase[0] = "worker node lost"
        cluster.remove_node(worker)
        time.sleep(8)
        phase[0] = "node added back"
        cluster.add_node(num_cpus=1, object_store_memory=100 << 20)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(set(_replica_nodes(settings.url).values())) < 2:
            time.sleep(1)
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join(30)
        for c in clients:
            c.close()
        after = _replica_nodes(settings.url)
    finally:
        stop.set()
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    return _cluster_report(statuses, nodes, after)


def _short(node_id: str) -> str:
    return node_id[:8]


def _replica_nodes(url: str) -> Dict[str, str]:
    from dfl_perf.remote import RemoteSwapper

    nodes = {}
    with RemoteSwapper(url, timeout=5) as client:
        for _ in range(20):
            try:
                info = client.info(refresh=True)
            except Exception:
                continue
            nodes[info["replica"]] = _short(info["node"])
    return nodes


def _cluster_report(statuses: List[Dict[str, Any]], before: Dict[str, str], after: Dict[str, str]) -> Dict[str, Any]:
    phases: Dict[str, Dict[str, Any]] = {}
    for row in statuses:
        cell = phases.setdefault(row["phase"], {"frames": 0, "ok": 0, "error": 0, "late": 0, "replicas": set(),
                                                "reasons": {}})
        cell["frames"] += 1
        cell[row["status"]] += 1
        if row["replica"]:
            cell["replicas"].add(row["replica"])
        if row["reason"]:
            key = row["reason"].split(":")[0][:60]
            cell["reasons"][key] = cell["reasons"].get(key, 0) + 1
    for name, cell in phases.items():
        cell["replicas"] = sorted(cell["replicas"])
        print("  %-18s %4d frames: %4d ok, %3d error, %3d late; answered by %d replica(s); reasons %s"
              % (name, cell["frames"], cell["ok"], cell["error"], cell["late"], len(cell["replicas"]),
                 cell["reasons"] or "-"))
    every = all(row["status"] in ("ok", "error", "late") for row in statuses)
    print("  every frame has a status: %s (%d frames); replicas' nodes before %s, after %s"
          % (every, len(statuses), sorted(set(before.values())), sorted(set(after.values()))))
    return {"phases": phases, "every_frame_has_a_status": every, "nodes_before": before, "nodes_after": after}


# ---------------------------------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--cost", default="20ms", help="stand-in compute preset (default 20ms)")
    parser.add_argument("--dense-mb", type=float, default=200.0, help="stand-in dense weights read per run (MB)")
    parser.add_argument("--requests", type=int, default=300, help="hop: requests per cell")
    parser.add_argument("--seconds", type=float, default=6.0, help="streams/live: seconds per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--max-batch", type=int, default=8, help="streams: max batch with batching on (as serve)")
    parser.add_argument("--batch-wait-ms", type=float, default=0.0, help="streams: batch wait with batching on (as serve)")
    parser.add_argument("--port", type=int, default=8265 + os.getpid() % 500)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="brr", dir="/tmp")  # this run's Ray only
    os.environ.pop("RAY_ADDRESS", None)
    info = print_header("remote swap on Ray Serve (loopback, one machine)")
    import ray

    from dfl_perf.facepipe.workload import standin_model_path

    info["versions"]["ray"] = ray.__version__
    print("ray %s; model: DFM stand-in 224, cost %s, %g MB of dense weights" % (ray.__version__, args.cost,
                                                                                  args.dense_mb))
    model = str(standin_model_path(224, args.cost, dense_mb=args.dense_mb))
    face = aligned_face()
    report: Dict[str, Any] = {"machine": info, "args": vars(args)}
    if "batch" in args.parts:
        report["batch"] = part_batch(model, face, [1, 2, 4, 8])
    if any(p in args.parts for p in ("hop", "live", "streams")):
        server = BenchServer(model, args.port)
        try:
            if "hop" in args.parts:
                report["hop"] = part_hop(server, face, args.requests)
            if "live" in args.parts:
                server.deploy(max_batch=8, batch_wait_ms=0.0)
                report["live"] = part_live(server.url, model, args.seconds, args.repeats)
            if "streams" in args.parts:
                report["streams"] = part_streams(server, model, face, args.seconds, args.repeats, args.streams,
                                                 args.max_batch, args.batch_wait_ms)
        finally:
            server.stop()
    if "cluster" in args.parts:
        report["cluster"] = part_cluster(model, face, args.port + 1)
    write_json(args.json, json.loads(json.dumps(report, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
