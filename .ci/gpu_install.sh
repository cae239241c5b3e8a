#!/usr/bin/env bash
# The GPU install path, checked as on a fresh machine (issue 24): requirements_gpu.txt and the [gpu]
# extra must resolve with pip's real resolver, to onnxruntime-gpu and no other onnxruntime flavour
# (two flavours in one environment break each other). Nothing is installed: pip install --dry-run.
#   usage: .ci/gpu_install.sh PYTHON FRESH_VENV_DIR      (run from the repo's root)
set -euo pipefail
python=$1 venv=$2
"$python" -m venv "$venv"
for target in "-r requirements_gpu.txt" ".[gpu]"; do
  # shellcheck disable=SC2086  # $target is two words for the requirements file
  "$venv/bin/python" -m pip install -q --dry-run --ignore-installed --report "$venv/report.json" $target
  "$venv/bin/python" - "$venv/report.json" "$target" <<'PY'
import json, sys
report, target = sys.argv[1], sys.argv[2]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(report))["install"]}
others = sorted(n for n in names if n.startswith("onnxruntime") and n != "onnxruntime-gpu")
assert "onnxruntime-gpu" in names, "%s: onnxruntime-gpu is not in what pip resolved: %s" % (target, names)
assert not others, "%s: pip would install %s beside onnxruntime-gpu" % (target, ", ".join(others))
print("GPU install on Python %s: %s resolves to onnxruntime-gpu %s (%d packages)"
      % (sys.version.split()[0], target, names["onnxruntime-gpu"], len(names)))
PY
done
