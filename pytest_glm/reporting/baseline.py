"""Stored latency runs: what the SLO suite writes into pytest-benchmark's records, and reading them back as
the baseline of ``--glm-baseline``.

Storage is pytest-benchmark's own (``--benchmark-save``, ``--benchmark-autosave``, ``--benchmark-json``):
each latency cell is one benchmark whose ``extra_info["glm"]`` holds the figures and what produced them.
A cell is judged against its stored one by :func:`against`, through the same per-figure judgement as
``--glm-compare`` (:func:`pytest_glm.reporting.compare.figure_change`): one tolerance lookup, one
direction rule, one wording of the move.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm.catalog.figures import FIGURES, lower_is_better, tolerance
from pytest_glm.exceptions import ConfigError
from pytest_glm.measuring.slo import Finding
from pytest_glm.reporting.compare import figure_change

EXTRA_INFO_KEY = "glm"


@dataclass(frozen=True)
class Cell:
    """One latency cell of a stored run: a workload at a batch size, its figures and its provenance."""

    name: str
    workload: str
    input_len: int
    output_len: int
    batch: int
    figures: dict[str, float]
    model: str = ""
    profile: str = ""
    vllm_version: str = ""

    def record(self) -> dict[str, Any]:
        """The ``extra_info["glm"]`` form."""
        return {"workload": self.workload, "input_len": self.input_len, "output_len": self.output_len,
                "batch": self.batch, "figures": self.figures, "model": self.model, "profile": self.profile,
                "vllm_version": self.vllm_version}

    def comparable_with(self, other: Cell) -> str:
        """'' if the two cells measured the same traffic, else why not."""
        mine, theirs = (self.input_len, self.output_len, self.batch), (other.input_len, other.output_len, other.batch)
        if mine != theirs:
            return (f"the baseline measured {other.input_len} in / {other.output_len} out at batch {other.batch}, "
                    f"this run {self.input_len} / {self.output_len} at batch {self.batch}")
        return ""


def load(path: Path) -> dict[str, Cell]:
    """Cells of a pytest-benchmark JSON file, keyed by test name (``test_latency_slo[balanced-b8]``)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("--glm-baseline", f"cannot read {path}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError("--glm-baseline", f"{path} is not JSON: {exc}") from exc
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list):
        raise ConfigError("--glm-baseline", f"{path} is not a pytest-benchmark file (no 'benchmarks' list)",
                          "record one with: pytest suites/ -m slo --benchmark-json=FILE (or --benchmark-save=NAME)")
    cells = {}
    for bench in benchmarks:
        info = (bench.get("extra_info") or {}).get(EXTRA_INFO_KEY) if isinstance(bench, dict) else None
        if not isinstance(info, dict):
            continue
        try:
            cells[bench["name"]] = Cell(
                name=bench["name"], workload=info["workload"], input_len=int(info["input_len"]),
                output_len=int(info["output_len"]), batch=int(info["batch"]),
                figures={k: float(v) for k, v in info["figures"].items()}, model=info.get("model", ""),
                profile=info.get("profile", ""), vllm_version=info.get("vllm_version", ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("--glm-baseline", f"{path}: benchmark {bench.get('name')!r} has a damaged "
                                                f"pytest-glm record ({type(exc).__name__}: {exc})") from exc
    if not cells:
        raise ConfigError("--glm-baseline", f"{path} holds no pytest-glm latency figures",
                          "it must come from a run of the slo suite (pytest suites/ -m slo --benchmark-json=FILE)")
    return cells


def against(measured: Mapping[str, float], stored: Mapping[str, float], tolerances: Mapping[str, float]) -> list[Finding]:
    """The figures of a latency cell that are worse than its stored run's by more than their tolerance
    (a ``[baseline_tolerance]`` table; a negative entry leaves a figure out)."""
    out = []
    for figure in FIGURES:
        if figure not in measured or figure not in stored:
            continue
        base, value = stored[figure], measured[figure]
        change = figure_change(figure, {"figure": figure, "value": base}, {"figure": figure, "value": value}, tolerances)
        if change is None or change.kind != "worse":
            continue
        tol = tolerance(figure, tolerances)
        if lower_is_better(figure):
            out.append(Finding(figure, value, f"<= {base * (1 + tol):.4g} ms (baseline {base:.4g} ms "
                                              f"+{tol:.0%}; this run is {value / base - 1:+.1%})"))
        else:
            move = f"{value / base - 1:+.1%}" if base else "n/a"
            out.append(Finding(figure, value, f">= {base * (1 - tol):.4g} (baseline {base:.4g} -{tol:.0%}; "
                                              f"this run is {move})"))
    return out
