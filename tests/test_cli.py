"""The `dfl-perf` command: help, every subcommand listed, pass-through commands, user errors in one line."""

from __future__ import annotations

import json
import platform
import re

import numpy as np
import pytest

from dfl_perf import __version__
from dfl_perf.cli import main

COMMANDS = ("doctor", "benchmark", "run", "soak", "models", "serve", "dfl")


def _listed_commands(text):
    """The subcommand names argparse lists under 'positional arguments' (one per indented line)."""
    return set(re.findall(r"^    (\w+)(?: +\S|$)", text, flags=re.M))


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: dfl-perf") and _listed_commands(out) == set(COMMANDS)


def test_cli_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-h"])
    assert exit_info.value.code == 0
    assert _listed_commands(capsys.readouterr().out) == set(COMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == "dfl_perf " + __version__


def test_dfl_command_passes_arguments_through(capsys):
    assert main(["dfl", "-h"]) == 0
    assert "DeepFaceLive's main.py" in capsys.readouterr().out


def test_models_command_passes_arguments_through(capsys):
    assert main(["models", "path", "--no-fetch", "yunet_n_320_320"]) == 0
    assert capsys.readouterr().out.strip().endswith("dfl_perf/data/yunet_n_320_320.onnx")
    assert main(["models", "path", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "--output", "o.mp4"], "the following arguments are required: --source"),
    (["benchmark", "--resolution", "640by480"], "resolution must look like 640x480, got '640by480'"),
    (["benchmark", "--dfm-cost", "1ms"], "invalid choice: '1ms'"),
    (["bogus"], "invalid choice: 'bogus'"),
])
def test_bad_arguments_are_usage_errors_that_say_why(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_is_one_line_not_a_traceback(tmp_path, capsys):
    code = main(["run", "--model", str(tmp_path / "none.dfm"), "--source", str(tmp_path / "none.avi"),
                 "--output", str(tmp_path / "o.mp4"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("dfl-perf run: ") and "none.avi" in err and len(err.strip().splitlines()) == 1


def test_doctor_json_is_json_with_the_facts(capsys):
    assert main(["doctor", "--json", "--no-import-cost"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["recommendations"], list) and "CPUExecutionProvider" in info["providers"]
    assert info["python"]["version"] == platform.python_version() and info["versions"]["numpy"] == np.__version__
    assert info["import_seconds"] == {}  # --no-import-cost: nothing measured
