"""Latency figures of one load run, and the two judgements made on them: against SLO thresholds, and
against a stored baseline run.

Figure names follow ``vllm bench serve``'s JSON (``p99_ttft_ms``, ``median_tpot_ms``, ``output_throughput``)
so that a user reads one vocabulary. A name ending in ``_ms`` is a latency (lower is better, a threshold
is a maximum); every other figure is a rate or a share (higher is better, a threshold is a minimum).
Percentiles are numpy's (linear interpolation), as in vLLM's benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from pytest_glm.catalog.figures import DESCRIPTIONS, METRICS, STATS, lower_is_better
from pytest_glm.measuring.load import LoadResult


def describe(figure: str) -> str:
    if figure in DESCRIPTIONS:
        return DESCRIPTIONS[figure]
    stat, metric, _ = figure.split("_")
    return f"{stat} {DESCRIPTIONS.get(metric, metric)}"


def _stats(values_s: list[float]) -> dict[str, float]:
    if not values_s:
        return {}
    ms = np.asarray(values_s) * 1000.0
    return {"mean": float(ms.mean()), "median": float(np.median(ms)),
            "p90": float(np.percentile(ms, 90)), "p99": float(np.percentile(ms, 99))}


def figures(result: LoadResult, goodput_slo_ms: Mapping[str, float] | None = None) -> dict[str, float]:
    """Every figure of one run. ``goodput_slo_ms`` (keys ttft, tpot, e2el) is the per-request SLO that
    goodput counts against; without one, every completed request counts."""
    done = result.completed
    per_metric = {
        "ttft": [r.ttft for r in done],
        "tpot": [t for r in done if (t := r.tpot) is not None],
        "itl": [gap for r in done for gap in r.itls],
        "e2el": [r.latency for r in done],
    }
    out: dict[str, float] = {
        "completed": float(len(done)), "failed": float(len(result.records) - len(done)),
        "duration_s": result.duration, "concurrency": float(result.concurrency),
        "total_input_tokens": float(sum(r.prompt_tokens for r in done)),
        "total_output_tokens": float(sum(r.output_tokens for r in done)),
    }
    for metric, values in per_metric.items():
        for stat, value in _stats(values).items():
            out[f"{stat}_{metric}_ms"] = value
    duration = max(result.duration, 1e-9)
    out["request_throughput"] = len(done) / duration
    out["output_throughput"] = out["total_output_tokens"] / duration
    out["total_token_throughput"] = (out["total_input_tokens"] + out["total_output_tokens"]) / duration
    good = [r for r in done if _within(r, goodput_slo_ms or {})]
    out["request_goodput"] = len(good) / duration
    out["goodput_ratio"] = len(good) / len(result.records) if result.records else 0.0
    return out


def _within(record, slo_ms: Mapping[str, float]) -> bool:
    measured = {"ttft": record.ttft, "tpot": record.tpot or 0.0, "e2el": record.latency}
    return all(measured[key] * 1000.0 <= limit for key, limit in slo_ms.items())


@dataclass(frozen=True)
class Finding:
    """One figure that failed a judgement, worded for the person reading the failure."""

    figure: str
    measured: float
    needed: str

    def __str__(self) -> str:
        unit = " ms" if lower_is_better(self.figure) else ""
        return f"{self.figure} ({describe(self.figure)}) measured {self.measured:.4g}{unit}, needed {self.needed}"


def check(measured: Mapping[str, float], limits: Mapping[str, float]) -> list[Finding]:
    """Figures outside their thresholds (a latency above its maximum, a rate below its minimum)."""
    out = []
    for figure, limit in limits.items():
        value = measured.get(figure)
        if value is None:
            out.append(Finding(figure, float("nan"), f"{'<=' if lower_is_better(figure) else '>='} {limit:g} "
                                                     f"but this run has no such figure (no completed request?)"))
        elif lower_is_better(figure) and value > limit:
            out.append(Finding(figure, value, f"<= {limit:g} ms"))
        elif not lower_is_better(figure) and value < limit:
            out.append(Finding(figure, value, f">= {limit:g}"))
    return out


def table(measured: Mapping[str, float]) -> str:
    """The latency figures as a small fixed-width table (rows: metric; columns: statistic)."""
    lines = [f"{'':6}" + "".join(f"{s:>10}" for s in STATS) + "  (ms)"]
    for metric in METRICS:
        cells = "".join(f"{measured.get(f'{s}_{metric}_ms', float('nan')):>10.2f}" for s in STATS)
        lines.append(f"{metric:6}{cells}")
    lines.append(f"throughput {measured.get('request_throughput', 0):.2f} req/s, "
                 f"{measured.get('output_throughput', 0):.1f} output tok/s; goodput "
                 f"{measured.get('goodput_ratio', 0):.0%} of requests")
    return "\n".join(lines)
