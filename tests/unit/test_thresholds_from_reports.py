"""benchmarks/thresholds_from_reports.py: worst figure per cell over the runs, the stated margins, a file
that loads as a threshold file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pytest_glm.catalog.profiles import Thresholds, load_thresholds

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "thresholds_from_reports.py"


def report(cells: dict[str, dict[str, float]]) -> dict:
    rows = [{"suite": "slo", "check": cell, "figure": figure, "value": value}
            for cell, figures in cells.items() for figure, value in figures.items()]
    return {"schema": "pytest-glm/report/1", "suites": {"slo": {"figures": rows}}}


def test_limits_come_from_the_worst_run_with_the_stated_margins(tmp_path: Path) -> None:
    runs = [report({"balanced-b8": {"median_ttft_ms": 20.0, "p99_ttft_ms": 40.0, "median_tpot_ms": 3.0,
                                    "p99_itl_ms": 9.0, "output_throughput": 3000.0, "client_lag_ms": 2.0}}),
            report({"balanced-b8": {"median_ttft_ms": 30.0, "p99_ttft_ms": 35.0, "median_tpot_ms": 2.0,
                                    "p99_itl_ms": 8.0, "output_throughput": 2400.0},
                    "decode_heavy-b1": {"median_tpot_ms": 0.5}})]
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"r{i}.json")
        paths[-1].write_text(json.dumps(run))
    out = subprocess.run([sys.executable, str(SCRIPT), "--profile", "cpu", *map(str, paths)],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    (tmp_path / "t.toml").write_text(out)
    t = load_thresholds(tmp_path / "t.toml", Thresholds())
    at8 = t.slo_limits("balanced", 8)
    assert at8["median_ttft_ms"] == 90      # worst 30 x 3
    assert at8["p99_ttft_ms"] == 200        # worst 40 x 5
    assert at8["median_tpot_ms"] == 9       # worst 3 x 3
    assert at8["p99_itl_ms"] == 45          # worst 9 x 5
    assert at8["output_throughput"] == 800  # worst 2400 / 3
    assert at8["goodput_ratio"] == 0.9
    assert "client_lag_ms" not in at8       # about the client, not the server
    assert t.slo_limits("decode_heavy", 1)["median_tpot_ms"] == 2.5  # 0.5 + the 2 ms floor
    assert t.batch_sizes == (1, 8) and t.workloads["balanced"] == (128, 128)  # the cpu profile's shapes
    assert t.goodput_slo_ms == {"ttft": 200}
    assert str(paths[0]) in out  # the header names the runs


def test_reports_without_latency_cells_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report({})))
    result = subprocess.run([sys.executable, str(SCRIPT), "--profile", "cpu", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no latency cell in these reports" in result.stderr
