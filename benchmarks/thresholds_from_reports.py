"""Latency thresholds from measured runs: the worst figure of each cell over the reports, with a stated margin.

    python benchmarks/thresholds_from_reports.py --profile h200x1 REPORT.json [REPORT.json ...] > FILE.toml

REPORT is a ``--glm-report`` JSON of runs that measured the latency cells (``pytest suites/ -m slo``).
For each cell (workload x batch) and figure the worst value over the reports is taken, then:

- medians (TTFT, TPOT, ITL): limit = 3 x worst, and at least worst + 25 ms (TTFT) or + 2 ms (TPOT, ITL);
- p99s (TTFT, TPOT, ITL, E2E): limit = 5 x worst, and at least worst + 100 ms (TTFT, E2E) or + 10 ms;
- output throughput: limit = worst / 3;
- goodput: 90 % of requests within the largest p99 TTFT and p99 TPOT limits (those the reports have).

So a server twice as slow as the one measured fails, while a noisy or somewhat slower box of the same kind
does not. The output is a threshold file (docs/thresholds.md) with ``[slo."<workload>.<batch>"]`` tables, a
header naming the reports, the profile's workload shapes and the batch sizes the reports measured; the profiles' reference
thresholds (``pytest_glm/catalog/thresholds/<profile>.reference.toml``) are made this way.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_glm.catalog.profiles import PROFILES

MEDIANS = ("median_ttft_ms", "median_tpot_ms", "median_itl_ms")
P99S = ("p99_ttft_ms", "p99_tpot_ms", "p99_itl_ms", "p99_e2el_ms")
RATES = ("output_throughput",)
CELL = re.compile(r"^(?P<workload>.+)-b(?P<batch>\d+)$")


def worst_figures(reports: list[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """(workload, batch) -> figure -> the worst value over the reports (largest latency, smallest rate)."""
    worst: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for report in reports:
        for row in report.get("suites", {}).get("slo", {}).get("figures", []):
            match = CELL.match(row["check"])
            figure, value = row["figure"], row["value"]
            if not match or value is None or figure not in (*MEDIANS, *P99S, *RATES):
                continue
            cell = worst[(match["workload"], int(match["batch"]))]
            pick = min if figure in RATES else max
            cell[figure] = pick(cell.get(figure, value), value)
    return dict(worst)


#: Slack added at least, in ms: a few ms of scheduling jitter is a large multiple of a 5 ms TTFT but not of
#: a per-token time, so TTFT and E2E get more than TPOT and ITL.
FLOOR_MS = {"median_ttft_ms": 25, "p99_ttft_ms": 100, "p99_e2el_ms": 100,
            "median_tpot_ms": 2, "median_itl_ms": 2, "p99_tpot_ms": 10, "p99_itl_ms": 10}


def limits(figures: dict[str, float]) -> dict[str, float]:
    out = {}
    for figure, value in figures.items():
        if figure in RATES:
            out[figure] = value / 3
        else:
            out[figure] = max((3 if figure in MEDIANS else 5) * value, value + FLOOR_MS[figure])
    return out


def _round(value: float, up: bool = True) -> float:
    """Two significant digits, rounded away from the measurement: up for a latency limit, down for a rate."""
    if value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - 1)
    steps = value / step
    return (math.ceil(steps - 1e-9) if up else math.floor(steps + 1e-9)) * step  # 1e-9: float noise


def to_toml(profile: str, sources: list[str], worst: dict[tuple[str, int], dict[str, float]],
            workloads: dict[str, list[int]]) -> str:
    cells = {cell: limits(figs) for cell, figs in sorted(worst.items())}
    p99_ttft = max((c.get("p99_ttft_ms", 0) for c in cells.values()), default=0)
    p99_tpot = max((c.get("p99_tpot_ms", 0) for c in cells.values()), default=0)
    lines = [f"# Reference-model latency thresholds for the {profile} profile, made by",
             f"#   python benchmarks/thresholds_from_reports.py --profile {profile} \\",
             *(f"#     {s} \\" for s in sources[:-1]), f"#     {sources[-1]}",
             "# from the worst of each cell over those runs: medians 3x (TTFT at least +25 ms, TPOT/ITL +2 ms),",
             "# p99s 5x (TTFT/E2E at least +100 ms, TPOT/ITL +10 ms), output throughput a third.", "",
             f"batch_sizes = [{', '.join(str(b) for b in sorted({b for _, b in cells}))}]", "",
             "[workloads]"]
    lines += [f"{name} = [{shape[0]}, {shape[1]}]" for name, shape in sorted(workloads.items())]
    goodput = [f"{key} = {_round(value):g}" for key, value in (("ttft", p99_ttft), ("tpot", p99_tpot)) if value]
    lines += ["", "[goodput_slo_ms]", *goodput, "", "[slo.default]", "goodput_ratio = 0.9"]
    for (workload, batch), figs in cells.items():
        lines += ["", f"[slo.{workload}.{batch}]"]
        lines += [f"{figure} = {_round(value, up=figure not in RATES):g}" for figure, value in figs.items()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("reports", nargs="+", type=Path)
    args = parser.parse_args()
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            parser.error(f"{path}: {exc}")
    worst = worst_figures(reports)
    if not worst:
        parser.error("no latency cell in these reports (run `pytest suites/ -m slo --glm-report FILE`)")
    profile = PROFILES.get(args.profile)
    if profile is None:
        parser.error(f"unknown profile {args.profile!r} (known: {', '.join(PROFILES)})")
    workloads = {name: list(shape) for name, shape in profile.thresholds.workloads.items()}
    missing = {w for w, _ in worst} - set(workloads)
    if missing:
        parser.error(f"the {args.profile} profile has no shape for {', '.join(sorted(missing))}")
    sys.stdout.write(to_toml(args.profile, [str(p) for p in args.reports], worst, workloads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
