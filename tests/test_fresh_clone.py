"""The fresh-clone gate (tests/conftest.py): with DFL_PERF_STRICT_SKIPS=1 a run fails on a skip that is
not on the allow-list, or on more than MAX_SKIPS skips; every skip's reason is printed."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).resolve().parent / "conftest.py").read_text()


def _suite(pytester, skips, name="test_suite"):
    pytester.makeconftest(CONFTEST)
    body = ["import pytest", "", "def test_passes():", "    pass", ""]
    for i, reason in enumerate(skips):
        body += ["def test_skip_%d():" % i, "    pytest.skip(%r)" % reason, ""]
    pytester.makepyfile(**{name: "\n".join(body)})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("strict, skips, code, unlisted", [
    ("1", ["running as root: no permission error"], 0, 0),
    ("1", ["running as root: no permission error", "shared models not found at /x"], 1, 1),  # not a listed test
    ("1", ["needs a network"], 1, 1),
    ("0", ["needs a network"], 0, 0),  # without the variable: reported, not failed
    ("1", ["running as root"] * 11, 1, 0),  # more than MAX_SKIPS
])
def test_strict_run_fails_on_a_skip_not_on_the_allow_list(pytester, monkeypatch, strict, skips, code, unlisted):
    _suite(pytester, skips)
    monkeypatch.setenv("DFL_PERF_STRICT_SKIPS", strict)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == code, out
    assert "skipped tests (%d) and why" % len(skips) in out
    for i, reason in enumerate(skips):
        assert "test_suite.py::test_skip_%d: %s" % (i, reason) in out
    assert ("%d skip(s) not on the allow-list" % unlisted in out) == bool(unlisted)
    assert ("11 skipped, at most 10 allowed" in out) == (len(skips) == 11)
