"""The latency grid of a run: which cells (workload x batch size) are collected, which limits judge each one
and where they come from, and which the KV cache cannot hold.

Used at collection (``--glm-quick`` keeps a few cells; ``--collect-only`` prints the plan, with the KV capacity
estimated from the model's config when no server is up) and by each cell before its first request (with the
server's own capacity). Pure: thresholds, capacity and shapes in, plans and lines out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pytest_glm.catalog.kv_capacity import KVCapacity, beyond, need
from pytest_glm.catalog.profiles import Thresholds


@dataclass(frozen=True)
class CellPlan:
    """One latency cell: its shape, what judges it, and why it cannot run (None: it can)."""

    workload: str
    input_len: int
    output_len: int
    batch: int
    judged_by: str  # "tier interactive", "file glm47.toml", "tier interactive + file glm47.toml", "" (nothing)
    not_runnable: str | None = None

    @property
    def name(self) -> str:
        return f"{self.workload}-b{self.batch}"

    @property
    def need(self) -> int:
        return need(self.batch, self.input_len, self.output_len)


def judged_by(thresholds: Thresholds, workload: str, batch: int, active_params_b: float | None = None,
              baseline: bool = False) -> str:
    """Where a cell's limits come from, each source once, in order of their first figure."""
    sources = dict.fromkeys(src for _, src in thresholds.slo_limit_sources(workload, batch, active_params_b).values())
    if baseline:
        sources["--glm-baseline"] = None
    return " + ".join(sources)


def plan(thresholds: Thresholds, cells: Iterable[tuple[str, int]], capacity: KVCapacity | None,
         active_params_b: float | None = None, baseline: bool = False) -> list[CellPlan]:
    out = []
    for workload, batch in cells:
        input_len, output_len = thresholds.workloads[workload]
        out.append(CellPlan(workload, input_len, output_len, batch,
                            judged_by(thresholds, workload, batch, active_params_b, baseline),
                            beyond(capacity, batch, input_len, output_len)))
    return out


def grid(thresholds: Thresholds) -> list[tuple[str, int]]:
    """Every cell of the profile's thresholds: workloads x batch sizes."""
    return [(w, b) for w in thresholds.workloads for b in thresholds.batch_sizes]


def quick(thresholds: Thresholds, capacity: KVCapacity | None) -> list[tuple[str, int]]:
    """``--glm-quick``: per workload the smallest batch size and the largest one the KV cache holds (the largest
    of the grid when the capacity is unknown); one cell when they coincide."""
    out = []
    for workload, (input_len, output_len) in thresholds.workloads.items():
        sizes = sorted(set(thresholds.batch_sizes))
        runnable = [b for b in sizes if beyond(capacity, b, input_len, output_len) is None] or sizes[:1]
        out += [(workload, b) for b in dict.fromkeys((sizes[0], runnable[-1]))]
    return out


def _tier_text(tier: str | None) -> str:
    from pytest_glm.catalog import tiers

    if tier == tiers.AUTO:
        return f"auto ({tiers.INTERACTIVE} up to batch {tiers.INTERACTIVE_MAX_BATCH}, {tiers.BATCH} above)"
    return tier or "none"


def summary(plans: list[CellPlan], capacity: KVCapacity | None, tier: str | None) -> list[str]:
    """The lines ``--collect-only`` (and the start of a run) prints about the latency cells."""
    if not plans:
        return []
    judged = sum(1 for p in plans if p.judged_by and p.not_runnable is None)
    held = sum(1 for p in plans if p.not_runnable)
    head = (f"pytest-glm: {len(plans)} latency cells: {judged} judged, {held} beyond the KV cache (skipped before "
            f"any request), {len(plans) - judged - held} without limits (recorded, skipped); tier: "
            f"{_tier_text(tier)}")
    cap = ("KV cache: unknown (no server figure yet and no estimate for this model and profile)" if capacity is None
           else f"KV cache: {capacity.describe()}" + ("; the server's own figure replaces it once it is up"
                                                        if capacity.estimated else ""))
    width = max(len(p.name) for p in plans)
    lines = [head, f"  {cap}"]
    for p in plans:
        if p.not_runnable:
            verdict = f"beyond the KV cache: needs {p.need:,} tokens"
        elif p.judged_by:
            verdict = f"judged by {p.judged_by}"
        else:
            verdict = "no limits: recorded, skipped"
        lines.append(f"  {p.name:<{width}}  {p.input_len}/{p.output_len}  {verdict}")
    return lines
