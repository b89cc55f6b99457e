"""--glm-compare through the plugin: the diff in the terminal and the JSON report, a regression failing a run
whose tests all passed, and bad stored reports stopping the run in one line. No server: the example tests
carry suite markers and record figures, which is all the report and the comparison read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EXAMPLE = """
import os
import pytest

@pytest.mark.tool_calling
def test_a():
    pass

@pytest.mark.tool_calling
def test_b():
    assert os.environ.get("B_FAILS") != "1", "b broke"

@pytest.mark.mtp
def test_prose(glm_record):
    glm_record("mtp", "prose", "acceptance_rate", float(os.environ["ACCEPTANCE"]), 0.9, ">=")
"""


def run(pytester: pytest.Pytester, *args: str, b_fails: bool = False, acceptance: float = 1.0) -> pytest.RunResult:
    pytester.makepyfile(test_gate=EXAMPLE)
    pytester._monkeypatch.setenv("B_FAILS", "1" if b_fails else "0")
    pytester._monkeypatch.setenv("ACCEPTANCE", str(acceptance))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm-profile=cpu", *args)


def stored_run(pytester: pytest.Pytester, **kwargs) -> Path:
    path = pytester.path / "stored.json"
    run(pytester, f"--glm-report={path}", **kwargs)
    data = json.loads(path.read_text())
    data["deployment"] = {"model": "glm-tiny", "profile": "cpu", "vllm_version": "0.32.0"}  # no server ran here
    path.write_text(json.dumps(data))
    return path


def test_a_fixed_test_is_shown_and_a_worse_figure_fails_the_run(pytester: pytest.Pytester) -> None:
    stored = stored_run(pytester, b_fails=True, acceptance=1.0)
    report = pytester.path / "now.json"
    result = run(pytester, f"--glm-compare={stored}", f"--glm-report={report}", acceptance=0.93)
    result.assert_outcomes(passed=3)  # every test passed ...
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # ... but MTP acceptance fell 7 % (tolerance 2 %)
    out = result.stdout.str()
    assert f"pytest-glm: compared with {stored} (vLLM 0.32.0 -> ?) — FAIL" in out
    result.stdout.fnmatch_lines(["worse (1):", "  mtp prose acceptance_rate: 1 -> 0.93  (-7%, tolerance -2%)",
                                 "fixed (1):", "  test_gate.py::test_b: failed -> passed"])
    data = json.loads(report.read_text())
    assert data["verdict"] == "fail" and data["comparison"]["verdict"] == "fail"
    assert data["comparison"]["counts"]["worse"] == 1 and data["comparison"]["counts"]["fixed"] == 1


def test_nothing_changed_passes(pytester: pytest.Pytester) -> None:
    stored = stored_run(pytester)
    result = run(pytester, f"--glm-compare={stored}")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*compared with * — pass*", "unchanged: 3 tests, 1 figures; failing in both runs: 0"])


def test_a_new_failure_is_named(pytester: pytest.Pytester) -> None:
    stored = stored_run(pytester)
    result = run(pytester, f"--glm-compare={stored}", b_fails=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["new failure (1):", "  test_gate.py::test_b: passed -> failed  (*b broke*"])


@pytest.mark.parametrize(("setup", "message"), [
    ("missing", "--glm-compare: {path} does not exist"),
    ("other-model", "--glm-compare: {path} is a run of glm-tiny-47 on cpu; this run tests glm-tiny on cpu"),
    ("benchmark", "--glm-compare: {path} is not a pytest-glm report"),
])
def test_bad_stored_report_stops_the_run_in_one_line(pytester: pytest.Pytester, setup: str, message: str) -> None:
    path = pytester.path / "stored.json"
    if setup == "other-model":
        path.write_text(json.dumps({"schema": "pytest-glm/report/1", "suites": {},
                                    "deployment": {"model": "glm-tiny-47", "profile": "cpu"}}))
    elif setup == "benchmark":
        path.write_text('{"benchmarks": []}')
    result = run(pytester, f"--glm-compare={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message.format(path=path) in result.stderr.str()
    assert "Traceback" not in result.stderr.str()
