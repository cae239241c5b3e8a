"""The `dfl-perf` command: help, every subcommand listed, pass-through commands."""

from __future__ import annotations

import pytest

from dfl_perf.cli import main


def test_no_command_prints_help(capsys):
    assert main([]) == 2


def test_cli_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["-h"])
    text = capsys.readouterr().out
    for command in ("doctor", "benchmark", "run", "soak", "models", "dfl"):
        assert command in text


def test_dfl_command_passes_arguments_through(capsys):
    assert main(["dfl", "-h"]) == 0
    assert "DeepFaceLive's main.py" in capsys.readouterr().out
