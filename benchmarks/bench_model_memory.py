"""What a DFM-sized model costs in memory to load and to keep, under onnxruntime's memory knobs.

A real DFM holds 100-700 MB of weights (convolutions, and dense layers in the middle); the
reference workload's stand-in holds 0.3 MB, so its footprint says nothing about them. This builds
two models of about 100 MB of weights with ``onnx``: ``conv`` (ten 3x3 512->512 convolutions at
14x14) and ``dense`` (one 25088x1024 MatMul), and takes ``activations``, the DFM stand-in at 320
(little weight, DFM-like activations: what a run needs), each also saved with its weights as an
external data file, and loads each in a fresh process under:

- ``dfl``: DeepFaceLive's options (``SessionConfig.dfl_default``, onnxruntime's defaults);
- ``arena_off``: the same with ``enable_cpu_mem_arena=False``;
- ``prepack_off``: the same with ``session.disable_prepacking=1``;
- ``mem_pattern_off``: the same with ``enable_mem_pattern=False`` (dfl_perf's choice on a CPU);
- ``external``: the external-data copy of the model, DFL's options;
- ``external_prepack_off``: the external-data copy with prepacking off;
- ``lean``: dfl_perf's ``SessionConfig.lean_weights`` on DFL's options (the same two knobs,
  through the lean copy ``dfl_perf.sessions.lean`` makes; made before the measured process).

Per cell: the peak RSS while loading and running (the process's ``VmHWM``) and the RSS after 10
runs, both minus the RSS before the load, the load time and the mean time of a run (this machine
is noisy: read times as rough). It measures what each knob buys; ``mem_pattern_off`` is what
dfl_perf's runner and DFL adapter use on a CPU, ``lean`` what their low-memory options add.

    python benchmarks/bench_model_memory.py [--json out.json]
    python benchmarks/bench_model_memory.py --models conv --repeats 3   # median and range per cell
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, print_header, write_json  # noqa: E402

MB = 1e6
CONFIGS = ("dfl", "arena_off", "prepack_off", "mem_pattern_off", "external", "external_prepack_off", "lean")
MODELS = ("conv", "dense", "activations")
RUNS = 10
_CHILD_FLAG = "--child"


def build_models(folder: Path) -> Dict[str, Path]:
    """``conv`` and ``dense`` (about 100 MB of weights each) and ``activations`` (the DFM stand-in at
    320), each with and without external data."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from dfl_perf.facepipe.standin import build_dfm_standin

    rng = np.random.RandomState(0)
    conv_weights = [numpy_helper.from_array(rng.normal(0, 0.01, (512, 512, 3, 3)).astype(np.float32), "w%d" % i)
                    for i in range(10)]
    conv_nodes = [helper.make_node("Conv", ["x" if i == 0 else "c%d" % (i - 1), "w%d" % i], ["c%d" % i],
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]) for i in range(10)]
    dense_weight = numpy_helper.from_array(rng.normal(0, 0.01, (25088, 1024)).astype(np.float32), "w")
    specs = {
        "conv": (conv_nodes, conv_weights, [1, 512, 14, 14], "c9", [1, 512, 14, 14]),
        "dense": ([helper.make_node("MatMul", ["x", "w"], ["y"])], [dense_weight], [1, 25088], "y", [1, 1024]),
    }
    models = {}
    for name, (nodes, inits, in_shape, out_name, out_shape) in specs.items():
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                                  [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
                                  initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
        model.ir_version = 7
        models[name] = model
    models["activations"] = build_dfm_standin(resolution=320, cost="60ms")
    paths = {}
    for name, model in models.items():
        paths[name] = folder / (name + ".onnx")
        onnx.save(model, str(paths[name]))
        paths[name + "_external"] = folder / (name + "_external.onnx")
        onnx.save_model(model, str(paths[name + "_external"]), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=name + "_external.data", size_threshold=1024)
    return paths


def _child(model: str, config_name: str) -> Dict[str, Any]:
    import numpy as np
    import psutil

    from dfl_perf.benchmark.measure import peak_rss_bytes
    from dfl_perf.sessions import SessionConfig, create_session

    config = SessionConfig.dfl_default()
    if config_name == "arena_off":
        config = config.replace(enable_cpu_mem_arena=False)
    if config_name == "mem_pattern_off":
        config = config.replace(enable_mem_pattern=False)
    if config_name.endswith("prepack_off"):
        config = config.replace(config_entries={"session.disable_prepacking": "1"})
    if config_name == "lean":
        config = config.replace(lean_weights=True)
    process = psutil.Process()
    before = process.memory_info().rss
    t0 = time.perf_counter()
    session = create_session(model, config)
    load = time.perf_counter() - t0
    rng = np.random.RandomState(1)
    feed = {spec.name: rng.rand(*[d if isinstance(d, int) else 1 for d in spec.shape]).astype(np.float32)
            for spec in session.get_inputs()}
    session.run(None, feed)
    t0 = time.perf_counter()
    for _ in range(RUNS):
        session.run(None, feed)
    run = (time.perf_counter() - t0) / RUNS
    return {"rss_before": before, "peak_rss": peak_rss_bytes(), "rss_after": process.memory_info().rss,
            "load_seconds": load, "run_seconds": run}


def measure(model: Path, config_name: str) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), _CHILD_FLAG, str(model), config_name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError("child for %s %s failed (exit %d):\n%s"
                           % (model.name, config_name, proc.returncode, proc.stderr[-3000:])) from None


def _mb_above_start(run: Dict[str, Any], key: str) -> float:
    return (run[key] - run["rss_before"]) / MB


def _cell(runs: List[Dict[str, Any]], key: str) -> str:
    """Median MB above the start; with several runs, their range too."""
    values = [_mb_above_start(r, key) for r in runs]
    text = "%.0f" % median(values)
    return text if len(values) == 1 else "%s (%.0f-%.0f)" % (text, min(values), max(values))


def table(rows: List[Dict[str, Any]]) -> List[str]:
    lines = ["| model | config | peak MB above start | kept MB after 10 runs | load s | run ms |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        runs = r["runs"]
        lines.append("| %s | %s | %s | %s | %.2f | %.1f |" % (
            r["model"], r["config"], _cell(runs, "peak_rss"), _cell(runs, "rss_after"),
            median(x["load_seconds"] for x in runs), median(x["run_seconds"] for x in runs) * 1e3))
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == _CHILD_FLAG:
        print(json.dumps(_child(argv[1], argv[2])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh processes per cell, taken in turn across configs (median and range shown)")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    info = print_header("model memory: load peak and kept RSS of DFM-sized models under onnxruntime's knobs")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfl_perf_model_memory_") as tmp:
        paths = build_models(Path(tmp))
        os.environ["DFL_PERF_CACHE_DIR"] = os.path.join(tmp, "cache")  # the lean copies go away with tmp
        from dfl_perf.sessions.lean import lean_copy

        for model in args.models:
            lean_copy(paths[model])  # made here: the measured process only loads it
            cells = [{"model": model, "config": name, "runs": []} for name in args.configs]
            for _ in range(args.repeats):
                for cell in cells:
                    name = cell["config"]
                    path = paths[model + "_external"] if name.startswith("external") else paths[model]
                    cell["runs"].append(measure(path, name))
            rows += cells
    print("\n".join(table(rows)))
    write_json(args.json, {"machine": info, "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
