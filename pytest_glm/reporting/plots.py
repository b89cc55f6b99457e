"""PNG plots of a run (``--glm-plots DIR``; needs the ``plots`` extra, matplotlib).

Latency cells save their per-request TTFTs and per-chunk ITLs as JSON under ``DIR/samples/`` from whichever
process ran them (an xdist worker too); at the end of the run the controller draws, per workload, the TTFT
and ITL distributions at each batch size, and, from the recorded MTP figures, the acceptance rate at each
draft position per workload kind.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from pytest_glm.reporting.report import Figure

#: Samples kept per cell and metric (evenly spaced after sorting): enough for the shape of a distribution.
MAX_SAMPLES = 20000


def save_samples(directory: Path, cell: str, workload: str, batch: int, ttft_ms: list[float],
                 itl_ms: list[float]) -> Path:
    directory = directory / "samples"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", cell) + ".json")
    path.write_text(json.dumps({"cell": cell, "workload": workload, "batch": batch,
                                "ttft_ms": _thin(ttft_ms), "itl_ms": _thin(itl_ms)}))
    return path


def _thin(values: list[float]) -> list[float]:
    values = sorted(values)
    if len(values) <= MAX_SAMPLES:
        return values
    step = len(values) / MAX_SAMPLES
    return [values[int(i * step)] for i in range(MAX_SAMPLES)]


def render(directory: Path, figures: list[Figure], title: str) -> list[Path]:
    """Draw every plot the run has data for; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    written = []
    by_workload: dict[str, list[dict]] = defaultdict(list)
    for path in sorted((directory / "samples").glob("*.json")):
        data = json.loads(path.read_text())
        by_workload[data["workload"]].append(data)
    for workload, cells in sorted(by_workload.items()):
        cells.sort(key=lambda c: c["batch"])
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, metric, label in ((axes[0], "ttft_ms", "TTFT (ms)"), (axes[1], "itl_ms", "ITL (ms)")):
            data = [c[metric] or [float("nan")] for c in cells]
            ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2, "alpha": 0.4})
            ax.set_xticks(range(1, len(cells) + 1), [f"batch {c['batch']}\n({len(c[metric])})" for c in cells])
            ax.set_ylabel(label)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(axis="y", alpha=0.3, which="both")
            ax.set_title(f"{label.split()[0]}: box = quartiles, whiskers = p1..p99")
        fig.suptitle(f"{workload} — {title}", fontsize=11)
        fig.tight_layout()
        out = directory / f"latency-{workload}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)

    positions: dict[str, dict[int, float]] = defaultdict(dict)
    minimum = None
    for f in figures:
        m = re.fullmatch(r"acceptance_pos(\d+)", f.figure)
        if f.suite == "mtp" and m and f.value is not None:
            positions[f.check][int(m.group(1))] = f.value
        if f.suite == "mtp" and f.figure in ("acceptance_rate", "acceptance_pos0") and f.limit is not None:
            minimum = f.limit
    if positions:
        kinds = sorted(positions)
        k = max(max(p) for p in positions.values()) + 1
        fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(kinds) * k), 4.5))
        width = 0.8 / k
        for pos in range(k):
            xs = [i + pos * width for i in range(len(kinds))]
            ys = [positions[kind].get(pos, 0.0) for kind in kinds]
            bars = ax.bar(xs, ys, width, label=f"draft position {pos}")
            ax.bar_label(bars, fmt="%.3f", fontsize=8)
        if minimum is not None:
            ax.axhline(minimum, color="firebrick", linestyle="--", linewidth=1, label=f"threshold {minimum:.2f}")
        ax.set_xticks([i + width * (k - 1) / 2 for i in range(len(kinds))], kinds)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel("accepted / drafts")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=k + 1, fontsize=8, frameon=False)
        ax.set_title(f"MTP acceptance per draft position\n{title}", fontsize=10)
        fig.tight_layout()
        out = directory / "mtp-acceptance.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(out)
    return written
