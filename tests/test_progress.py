"""dfl_perf.progress: tqdm's bar behind the commands' small API."""

from __future__ import annotations

import io

from dfl_perf.progress import ProgressBar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_absolute_progress_and_the_note_on_a_terminal():
    stream = _Terminal()
    with ProgressBar("benchmark", 10, stream=stream) as bar:
        bar.advance(note="baseline run 1/3")
        bar.update(7)
        assert bar.value == 7
        bar.update(10, note="comparing outputs")
    text = stream.getvalue()
    assert "benchmark" in text and "10/10" in text and "comparing outputs" in text and "100%" in text


def test_bytes_are_shown_in_units():
    stream = io.StringIO()
    with ProgressBar("yunet.onnx", 3_400_000, stream=stream, enabled=True, unit="B", unit_scale=True) as bar:
        bar.update(3_400_000)
    assert "3.40M/3.40M" in stream.getvalue() and "B/s" in stream.getvalue()


def test_no_bar_off_a_terminal_unless_asked():
    quiet, off = io.StringIO(), _Terminal()
    for bar in (ProgressBar("run", 5, stream=quiet), ProgressBar("run", 5, stream=off, enabled=False)):
        bar.update(5, note="done")
        bar.close()
    assert quiet.getvalue() == "" and off.getvalue() == ""


def test_bars_leave_no_thread_running():
    # in a fresh interpreter: tqdm's monitor thread, once started by an earlier test, never ends
    import subprocess
    import sys

    script = (
        "import io, threading\n"
        "from dfl_perf.progress import ProgressBar\n"
        "for enabled in (False, True, None):\n"
        "    with ProgressBar('run', 5, stream=io.StringIO(), enabled=enabled) as bar:\n"
        "        bar.update(5)\n"
        "print(sorted(t.name for t in threading.enumerate()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['MainThread']", done.stdout
