"""Latency figures, SLO checks and baseline comparison on made-up request records (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm.exceptions import ConfigError
from pytest_glm.measuring.load import LoadResult, RequestRecord, Workload
from pytest_glm.measuring.slo import check, figures, table
from pytest_glm.reporting.baseline import EXTRA_INFO_KEY, Cell, load
from pytest_glm.reporting.baseline import against as compare


def record(start: float, ttft: float, gap: float, chunks: int, tokens: int) -> RequestRecord:
    times = [start + ttft + i * gap for i in range(chunks)]
    return RequestRecord(start=start, end=times[-1], chunk_times=times, prompt_tokens=10, output_tokens=tokens)


def run(*records: RequestRecord, duration: float = 2.0) -> LoadResult:
    return LoadResult(Workload("w", 10, 5), 2, list(records), duration)


def test_figures_follow_vllm_bench_definitions() -> None:
    # Two chunks of two tokens each after the first (MTP): ITL counts chunks, TPOT counts tokens.
    a = record(0.0, 0.100, 0.020, chunks=3, tokens=5)
    b = record(0.5, 0.300, 0.040, chunks=3, tokens=5)
    f = figures(run(a, b))
    assert f["mean_ttft_ms"] == pytest.approx(200) and f["median_ttft_ms"] == pytest.approx(200)
    assert f["p99_ttft_ms"] == pytest.approx(100 + 0.99 * 200)
    assert f["median_itl_ms"] == pytest.approx(30)  # gaps 20, 20, 40, 40
    assert f["mean_tpot_ms"] == pytest.approx((0.040 / 4 + 0.080 / 4) / 2 * 1000)
    assert f["mean_e2el_ms"] == pytest.approx((140 + 380) / 2)
    assert (f["completed"], f["failed"], f["total_output_tokens"], f["total_input_tokens"]) == (2, 0, 10, 20)
    assert f["request_throughput"] == pytest.approx(1.0) and f["output_throughput"] == pytest.approx(5.0)
    assert f["goodput_ratio"] == 1.0


def test_goodput_counts_requests_within_the_per_request_slo() -> None:
    a = record(0.0, 0.100, 0.020, chunks=3, tokens=5)
    b = record(0.5, 0.300, 0.040, chunks=3, tokens=5)
    failed = RequestRecord(start=0.0, end=1.0, error="HTTP 500")
    f = figures(run(a, b, failed), goodput_slo_ms={"ttft": 200})
    assert f["goodput_ratio"] == pytest.approx(1 / 3) and f["request_goodput"] == pytest.approx(0.5)
    assert f["failed"] == 1 and f["completed"] == 2


def test_one_token_answers_have_no_tpot() -> None:
    f = figures(run(record(0.0, 0.1, 0.0, chunks=1, tokens=1)))
    assert "mean_tpot_ms" not in f and "mean_itl_ms" not in f and f["mean_ttft_ms"] == pytest.approx(100)


def test_check_names_figure_measurement_and_need() -> None:
    measured = {"p99_ttft_ms": 2500.0, "median_itl_ms": 10.0, "output_throughput": 80.0}
    findings = check(measured, {"p99_ttft_ms": 2000, "median_itl_ms": 20, "output_throughput": 100,
                                "p99_e2el_ms": 5000})
    text = [str(f) for f in findings]
    assert text[0] == "p99_ttft_ms (p99 time to first token) measured 2500 ms, needed <= 2000 ms"
    assert text[1] == "output_throughput (output tokens per second) measured 80, needed >= 100"
    assert "no such figure" in text[2] and len(text) == 3


def test_compare_with_baseline_tolerances() -> None:
    base = {"median_ttft_ms": 100.0, "p99_itl_ms": 10.0, "output_throughput": 1000.0, "median_tpot_ms": 5.0}
    now = {"median_ttft_ms": 109.0, "p99_itl_ms": 12.0, "output_throughput": 850.0, "median_tpot_ms": 9.0}
    found = {f.figure: str(f) for f in compare(now, base, {"p99_itl_ms": 0.25, "median_tpot_ms": -1})}
    assert set(found) == {"output_throughput"}  # 9 % slower TTFT is within 10 %; ITL within its 25 %; TPOT off
    assert "baseline 1000 -10%; this run is -15.0%" in found["output_throughput"]
    found = compare({"median_ttft_ms": 111.0}, base, {})
    assert "this run is +11.0%" in str(found[0])


def test_table_lays_out_the_latencies() -> None:
    f = figures(run(record(0.0, 0.1, 0.02, chunks=3, tokens=5)))
    lines = table(f).splitlines()
    assert lines[0].split() == ["mean", "median", "p90", "p99", "(ms)"]
    assert lines[1].split()[0] == "ttft" and float(lines[1].split()[1]) == pytest.approx(100, abs=0.01)


def _bench_file(path: Path, cells: list[Cell]) -> Path:
    path.write_text(json.dumps({"benchmarks": [{"name": c.name, "extra_info": {EXTRA_INFO_KEY: c.record()}}
                                               for c in cells] + [{"name": "unrelated", "extra_info": {}}]}))
    return path


def test_baseline_round_trip(tmp_path: Path) -> None:
    cell = Cell("test_latency_slo[balanced-b8]", "balanced", 128, 128, 8, {"p99_ttft_ms": 50.0}, "glm-tiny", "cpu", "0.32.0")
    loaded = load(_bench_file(tmp_path / "b.json", [cell]))
    assert loaded == {cell.name: cell}
    other = Cell(cell.name, "balanced", 1000, 1000, 8, {})
    assert other.comparable_with(cell) == "the baseline measured 128 in / 128 out at batch 8, this run 1000 / 1000 at batch 8"
    assert cell.comparable_with(cell) == ""


@pytest.mark.parametrize(("content", "message"), [
    ("not json", "is not JSON"),
    ('{"machine_info": {}}', "is not a pytest-benchmark file"),
    ('{"benchmarks": [{"name": "x", "extra_info": {}}]}', "holds no pytest-glm latency figures"),
    ('{"benchmarks": [{"name": "x", "extra_info": {"glm": {"workload": "w"}}}]}', "has a damaged pytest-glm record"),
])
def test_baseline_errors_name_the_option(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert message in str(err.value) and "--glm-baseline" in str(err.value)


def test_one_tolerance_rule_for_baseline_and_compare() -> None:
    """--glm-baseline (baseline.against) and --glm-compare judge a figure through one engine (figure_change)."""
    from pytest_glm.catalog.figures import lower_is_better, tolerance
    from pytest_glm.reporting.compare import figure_change

    table = {"default": 0.5, "p99_itl_ms": 1.0}
    assert tolerance("p99_itl_ms", table) == 1.0 and tolerance("median_ttft_ms", table) == 0.5
    assert tolerance("acceptance_pos1", table) == 0.02 and tolerance("median_ttft_ms", {}) == 0.10
    assert lower_is_better("p99_itl_ms") and not lower_is_better("acceptance_rate", ">=")
    assert lower_is_better("unfaithful_answers", "<=")
    # the same move, judged by both: median TTFT 100 -> 160 ms is worse than +50 %
    assert [f.figure for f in compare({"median_ttft_ms": 160.0}, {"median_ttft_ms": 100.0}, table)] == ["median_ttft_ms"]
    fig = {"figure": "median_ttft_ms", "op": "", "passed": None}
    change = figure_change("slo b1 median_ttft_ms", {**fig, "value": 100.0}, {**fig, "value": 160.0}, table)
    assert change is not None and change.kind == "worse"
    assert compare({"median_ttft_ms": 140.0}, {"median_ttft_ms": 100.0}, table) == []
    assert figure_change("k", {**fig, "value": 100.0}, {**fig, "value": 140.0}, table) is None
