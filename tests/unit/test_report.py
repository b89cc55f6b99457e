"""The run report: figures from user properties, outcomes from phase reports, tables, JSON, scrubbing."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from pytest_glm.reporting.report import SCHEMA, Figure, RunReport, recorder
from tests.helpers.report_data import PhaseReport

#: A phase report as RunReport.add reads it; half a second a phase (the durations asserted below).
FakeReport = functools.partial(PhaseReport, duration=0.5)


def phases(nodeid: str, suite: str, outcome: str = "passed", props: list | None = None, text: str = "") -> list:
    kw = {suite: 1}
    return [FakeReport(nodeid, "setup", keywords=kw), FakeReport(nodeid, "call", outcome, kw, props or [], longreprtext=text),
            FakeReport(nodeid, "teardown", keywords=kw)]


def test_figures_pass_fail_and_info() -> None:
    assert Figure("slo", "c", "p99_ttft_ms", 90.0, 100.0, "<=").passed is True
    assert Figure("slo", "c", "p99_ttft_ms", 110.0, 100.0, "<=").passed is False
    assert Figure("mtp", "prose", "acceptance_rate", 0.5, 0.9, ">=").passed is False
    assert Figure("mtp", "prose", "mean_acceptance_length", 1.9).passed is None
    assert Figure("slo", "c", "p99_ttft_ms", None, 100.0, "<=").passed is False


def test_collects_suites_figures_and_outcomes_and_scrubs_the_key(tmp_path: Path) -> None:
    props: list = []
    record = recorder(lambda name, value: props.append((name, value)))
    record("slo", "balanced-b8", "p99_ttft_ms", 120.0, 100.0, "<=", " ms")
    record("slo", "balanced-b8", "median_itl_ms", 9.5, None, "", " ms")
    report = RunReport(scrub_secret="sk-secret-123")
    for r in phases("suites/test_slo.py::test_latency_slo[balanced-b8]", "slo", "failed", props,
                    "E   AssertionError: p99 too high for key sk-secret-123\nE   more"):
        report.add(r)
    for r in phases("suites/test_tool_calling.py::test_case[x]", "tool_calling"):
        report.add(r)
    for r in phases("tests/test_other.py::test_unrelated", ""):
        report.add(r)  # not a suite test: ignored
    assert report.verdict() == "fail"
    assert report.counts("slo") == {"passed": 0, "failed": 1, "error": 0, "skipped": 0, "tolerated": 0, "known_defect": 0}
    tables = dict(report.tables())
    slo = tables["pytest-glm: slo — FAIL"]
    assert any("p99_ttft_ms" in line and "<= 100" in line and line.endswith("FAIL") for line in slo)
    assert any("median_itl_ms" in line and line.endswith("-") for line in slo)
    assert "pytest-glm: tool_calling — pass" in tables
    path = tmp_path / "r.json"
    report.write_json(path, {"model": "glm-tiny", "command": "vllm serve m --api-key sk-secret-123"})
    text = path.read_text()
    assert "sk-secret-123" not in text and "***" in text
    data = json.loads(text)
    assert data["schema"] == SCHEMA and data["verdict"] == "fail"
    assert data["suites"]["slo"]["figures"][0] == {"suite": "slo", "check": "balanced-b8", "figure": "p99_ttft_ms",
                                                   "value": 120.0, "limit": 100.0, "op": "<=", "unit": " ms",
                                                   "source": "", "passed": False}
    case = data["suites"]["slo"]["cases"][0]
    assert case["outcome"] == "failed" and case["message"].startswith("AssertionError: p99 too high for key ***")
    assert case["duration_s"] == 1.5
    assert data["suites"]["tool_calling"]["verdict"] == "pass" and set(data["suites"]) == {"slo", "tool_calling"}


def test_suites_are_modules_not_keywords() -> None:
    """test_mtp_acceptance[reasoning] belongs to the mtp suite although its id says 'reasoning'; a behaviour
    miss (xfail) is counted as tolerated."""
    report = RunReport()
    for r in phases("suites/test_mtp.py::test_mtp_acceptance[reasoning]", "reasoning"):
        report.add(r)
    report.add(FakeReport("suites/test_reasoning.py::test_behaves[x-plain]", "call", "skipped", {"reasoning": 1}))
    report.outcomes["suites/test_reasoning.py::test_behaves[x-plain]"].outcome = "skipped"
    tolerated = FakeReport("suites/test_reasoning.py::test_behaves[y-plain]", "call", "skipped", {})
    tolerated.wasxfail = "model behaviour miss (counted in the suite's rates): case y"
    report.add(tolerated)
    assert report.outcomes["suites/test_mtp.py::test_mtp_acceptance[reasoning]"].suite == "mtp"
    assert report.counts("reasoning") == {"passed": 0, "failed": 0, "error": 0, "skipped": 1, "tolerated": 1, "known_defect": 0}
    assert report.outcomes["suites/test_reasoning.py::test_behaves[y-plain]"].message.startswith("model behaviour miss")
    assert report.verdict() == "pass"


def test_setup_errors_and_skips() -> None:
    report = RunReport()
    kw = {"mtp": 1}
    report.add(FakeReport("suites/test_mtp.py::a", "setup", "failed", kw, longreprtext="E   vLLM server died (exit code -9)"))
    report.add(FakeReport("suites/test_mtp.py::b", "setup", "skipped", kw, longrepr=("f", 1, "Skipped: MTP is not expected")))
    assert report.outcomes["suites/test_mtp.py::a"].outcome == "error" and "server died" in report.outcomes["suites/test_mtp.py::a"].message
    assert report.outcomes["suites/test_mtp.py::b"].outcome == "skipped" and "MTP is not expected" in report.outcomes["suites/test_mtp.py::b"].message
    assert report.verdict() == "fail"


def test_many_cells_of_the_same_figures_read_as_one_row_each() -> None:
    props: list = []
    record = recorder(lambda name, value: props.append((name, value)))
    for cell in ("prompt_heavy-b1", "prompt_heavy-b8", "balanced-b1", "balanced-b8"):
        record("slo", cell, "median_ttft_ms", 20.0, 100.0, "<=", " ms")
        record("slo", cell, "p99_itl_ms", 250.0 if cell == "balanced-b8" else 8.0, 50.0, "<=", " ms")
        record("slo", cell, "output_throughput", 2500.0, 850.0, ">=")
        record("slo", cell, "goodput_ratio", 1.0, 0.9, ">=")
    report = RunReport()
    for r in phases("suites/test_slo.py::test_latency_slo[x]", "slo", "failed", props):
        report.add(r)
    (title, lines), = report.tables()
    assert title == "pytest-glm: slo — FAIL"
    assert lines[0].split() == ["check", "ttft", "med", "itl", "p99", "out", "tok/s", "goodput"]
    row = next(line for line in lines if line.startswith("balanced-b8"))
    assert row.split() == ["balanced-b8", "20", "250!", "2500", "1"]
    assert lines[lines.index(row) + 1].split() == ["limit", "<=100", "<=50", ">=850", ">=0.9"]
    assert sum(line.startswith("prompt_heavy-b") for line in lines) == 2  # one row per cell, not per figure


def test_failures_are_grouped_by_what_they_share() -> None:
    """One broken thing reads as one line: the same finding on different cases and arguments, the same
    HTTP 400 with different numbers, a refused gap and the skips it caused."""
    report = RunReport()
    finding = ("E       AssertionError: case {case} (single_tool, non-streamed): 1 problem(s)\n"
               "E           - tool parser: call 0 ({tool}): the tool parser returned {key}='{low}' where the model "
               "generated '{up}'\nE           request: ...")
    for i, (case, tool, key, value) in enumerate([("single.weather", "get_weather", "city", "Paris"),
                                                  ("choose.flights", "search_flights", "origin", "BER"),
                                                  ("types.unicode", "translate", "text", "Köln")]):
        text = finding.format(case=case, tool=tool, key=key, low=value.lower(), up=value)
        for r in phases(f"suites/test_tool_calling.py::test_served_faithfully[{case}-{i}]", "tool_calling", "failed",
                        text=text):
            report.add(r)
    for n in (1024, 8192):
        for r in phases(f"suites/test_reasoning.py::test_behaves[c{n}]", "reasoning", "failed",
                        text=f"E   Failed: case c{n}: the server rejected the request (HTTP 400): max_tokens={n} "
                             f"cannot be greater than max_model_len=512"):
            report.add(r)
    refusal = "the server serves max_model_len 512, but the collected suites send requests of up to 11078 tokens"
    report.add(FakeReport("suites/test_preflight.py::test_served_context", "call", "failed", {"preflight": 1},
                          longreprtext=f"E   Failed: {refusal}"))
    for k in range(4):
        report.add(FakeReport(f"suites/test_tool_calling.py::test_behaves[x{k}]", "setup", "skipped", {},
                              longrepr=("f", 1, f"Skipped: {refusal} (failed once, in test_served_context)")))
    causes = report.causes()
    assert [(c["count"], c["outcomes"]) for c in causes] == [
        (5, {"failed": 1, "skipped": 4}), (3, {"failed": 3}), (2, {"failed": 2})]
    assert causes[0]["cause"] == refusal and causes[0]["example"].endswith("test_served_context")
    assert causes[1]["cause"].startswith("tool parser: call 0 (get_weather): the tool parser returned city='paris'")
    assert "max_tokens=1024 cannot be greater than max_model_len=512" in causes[2]["cause"]
    lines = report.cause_lines()
    assert lines[0].startswith("   5 tests (1 failed, 4 skipped): the server serves max_model_len 512")
    assert report.to_json(None)["causes"] == causes
