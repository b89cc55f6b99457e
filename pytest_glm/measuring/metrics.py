"""vLLM's Prometheus metrics: snapshots, deltas, and speculative-decoding acceptance.

Counters are summed across engines (tensor/data parallel ranks expose one series each, labelled
``engine``) and only the ``*_total`` samples are used, as ``vllm bench serve`` does. Acceptance rate is
accepted / draft tokens; mean acceptance length is 1 + accepted / drafts; the per-position rate is
accepted at that position / drafts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

DRAFTS = "vllm:spec_decode_num_drafts"
DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens"
ACCEPTED = "vllm:spec_decode_num_accepted_tokens"
ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos"
#: Prefix cache: tokens looked up and tokens found (vLLM v1).
PREFIX_QUERIES = "vllm:prefix_cache_queries"
PREFIX_HITS = "vllm:prefix_cache_hits"


@dataclass(frozen=True)
class Snapshot:
    """Counter totals at one moment: ``counters[name]`` summed over engines, and per-position accepts."""

    counters: dict[str, float] = field(default_factory=dict)
    per_position: dict[int, float] = field(default_factory=dict)

    def __sub__(self, earlier: Snapshot) -> Snapshot:
        names = set(self.counters) | set(earlier.counters)
        positions = set(self.per_position) | set(earlier.per_position)
        return Snapshot({n: self.counters.get(n, 0.0) - earlier.counters.get(n, 0.0) for n in names},
                        {p: self.per_position.get(p, 0.0) - earlier.per_position.get(p, 0.0) for p in positions})

    @property
    def has_spec_decode(self) -> bool:
        return DRAFTS in self.counters

    @property
    def prefix_hit_rate(self) -> float | None:
        """Prefix-cache hits / queries (of a delta: over its interval); None without the counters or queries."""
        queries = self.counters.get(PREFIX_QUERIES)
        return self.counters.get(PREFIX_HITS, 0.0) / queries if queries else None


def parse(text: str) -> Snapshot:
    """Sum every counter's ``_total`` samples over its label sets (engines, models)."""
    counters: dict[str, float] = defaultdict(float)
    per_position: dict[int, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            name = sample.name[: -len("_total")]
            counters[name] += sample.value
            if name == ACCEPTED_PER_POS and "position" in sample.labels:
                per_position[int(sample.labels["position"])] += sample.value
    return Snapshot(dict(counters), dict(per_position))


@dataclass(frozen=True)
class SpecDecodeStats:
    """Speculative decoding over an interval (a delta of two snapshots)."""

    drafts: float
    draft_tokens: float
    accepted: float
    per_position: dict[int, float]

    @classmethod
    def from_delta(cls, delta: Snapshot) -> SpecDecodeStats:
        c = delta.counters
        return cls(c.get(DRAFTS, 0.0), c.get(DRAFT_TOKENS, 0.0), c.get(ACCEPTED, 0.0), dict(delta.per_position))

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.draft_tokens if self.draft_tokens else None

    @property
    def mean_acceptance_length(self) -> float | None:
        return 1.0 + self.accepted / self.drafts if self.drafts else None

    def position_rates(self) -> dict[int, float]:
        if not self.drafts:
            return {}
        return {pos: n / self.drafts for pos, n in sorted(self.per_position.items())}

    def summary(self) -> str:
        if not self.drafts:
            return "no drafts"
        rates = ", ".join(f"pos {p}: {r:.3f}" for p, r in self.position_rates().items())
        return (f"acceptance rate {self.acceptance_rate:.3f} ({self.accepted:.0f}/{self.draft_tokens:.0f} draft tokens), "
                f"mean acceptance length {self.mean_acceptance_length:.3f} over {self.drafts:.0f} drafts; {rates}")
