"""vLLM's own latency histograms (``/metrics``): the server's account of a run, to hold a client's figures against.

The server times every request itself (TTFT from its arrival to the first token, one ITL per engine step that
produced tokens, TPOT as decode time / (tokens - 1), E2E from arrival to finish), so its histograms are the
physical truth a client's figures are judged by: a client that is starved, swamped or slow to parse reports its
own delays as the server's. A run is the difference of two snapshots (``after - before``).

Only the bucket counts survive, so a quantile is an estimate: linear interpolation inside the bucket that holds
it (the first bucket starts at 0). The bucket's width bounds what the estimate can tell; :func:`describe` says
it next to every figure. The mean (``_sum / _count``) is exact. vLLM's default buckets are coarse where a small
model lives (ITL: 0-10 ms, 10-25 ms); ``vllm serve --custom-histogram-buckets`` sets finer ones.
"""

from __future__ import annotations

import math
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

#: The figure each histogram measures, named as :func:`pytest_glm.measuring.slo.figures` names the client's.
LATENCIES = {
    "ttft": "vllm:time_to_first_token_seconds",
    "tpot": "vllm:request_time_per_output_token_seconds",
    "itl": "vllm:inter_token_latency_seconds",
    "e2el": "vllm:e2e_request_latency_seconds",
}
QUANTILES = {"median": 0.5, "p90": 0.9, "p99": 0.99}


@dataclass(frozen=True)
class Histogram:
    """One histogram summed over its label sets (engines): cumulative ``counts`` at each upper bound in
    ``bounds`` (ascending, the last one ``inf``), and the ``total`` of every observation (seconds)."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    total: float = 0.0

    @property
    def count(self) -> float:
        return self.counts[-1] if self.counts else 0.0

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def __sub__(self, earlier: Histogram) -> Histogram:
        if earlier.bounds and earlier.bounds != self.bounds:
            raise ValueError(f"histogram buckets changed between snapshots: {earlier.bounds} -> {self.bounds}")
        old = earlier.counts or (0.0,) * len(self.counts)
        return Histogram(self.bounds, tuple(a - b for a, b in zip(self.counts, old, strict=True)),
                         self.total - earlier.total)

    def bucket(self, q: float) -> tuple[float, float] | None:
        """The bounds ``(lower, upper)`` of the bucket that holds quantile ``q``; None when empty."""
        found = self._find(q)
        return None if found is None else (found[0], found[1])

    def quantile(self, q: float) -> float | None:
        """Quantile ``q`` (0-1) by linear interpolation inside its bucket; in the open last bucket, its lower
        bound (all that is known: at least that). None when nothing was observed."""
        found = self._find(q)
        if found is None:
            return None
        lower, upper, below, inside, rank = found
        if math.isinf(upper):
            return lower
        return lower + (upper - lower) * ((rank - below) / inside if inside else 0.0)

    def _find(self, q: float) -> tuple[float, float, float, float, float] | None:
        if not self.count:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in zip(self.bounds, self.counts, strict=True):
            if cumulative >= rank and cumulative > below:
                return lower, upper, below, cumulative - below, rank
            lower, below = upper, cumulative
        return lower, math.inf, below, 0.0, rank  # unreachable for a well-formed histogram (+Inf holds all)


def parse_histograms(text: str) -> dict[str, Histogram]:
    """Every latency histogram of :data:`LATENCIES` in one ``/metrics`` text, by figure name, summed over
    engines and models (a series per data-parallel rank)."""
    wanted = {name: figure for figure, name in LATENCIES.items()}
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        figure = wanted.get(family.name)
        if figure is None or family.type != "histogram":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets[figure][float(sample.labels["le"])] += sample.value
            elif sample.name.endswith("_sum"):
                totals[figure] += sample.value
    out = {}
    for figure, by_bound in buckets.items():
        bounds = tuple(sorted(by_bound))
        out[figure] = Histogram(bounds, tuple(by_bound[b] for b in bounds), totals[figure])
    return out


def difference(after: dict[str, Histogram], before: dict[str, Histogram]) -> dict[str, Histogram]:
    """What the server observed between two snapshots."""
    return {figure: h - before.get(figure, Histogram((), ())) for figure, h in after.items()}


def server_figures(delta: dict[str, Histogram]) -> dict[str, float]:
    """The server's figures of a run, named as the client's (``median_ttft_ms``, ``p99_itl_ms``, ``mean_tpot_ms``)
    plus ``count_<metric>`` and, for each quantile, its bucket's width (``median_ttft_bucket_ms``)."""
    out: dict[str, float] = {}
    for figure, h in delta.items():
        if not h.count:
            continue
        out[f"count_{figure}"] = h.count
        if (mean := h.mean) is not None:
            out[f"mean_{figure}_ms"] = mean * 1000
        for stat, q in QUANTILES.items():
            value, bucket = h.quantile(q), h.bucket(q)
            if value is None or bucket is None:
                continue
            out[f"{stat}_{figure}_ms"] = value * 1000
            out[f"{stat}_{figure}_bucket_ms"] = round((bucket[1] - bucket[0]) * 1000, 9)  # no float dust
    return out


def describe(delta: dict[str, Histogram], figure: str, stat: str = "median") -> str:
    """``"17.3 ms (bucket 10-20 ms)"``: the estimate with the resolution that bounds it."""
    h = delta.get(figure)
    if h is None or not h.count:
        return "no observations"
    value, bucket = h.quantile(QUANTILES[stat]), h.bucket(QUANTILES[stat])
    assert value is not None and bucket is not None
    upper = "inf" if math.isinf(bucket[1]) else f"{bucket[1] * 1000:g}"
    return f"{value * 1000:.2f} ms (bucket {bucket[0] * 1000:g}-{upper} ms)"


def fetch_histograms(base_url: str, api_key: str | None = None, timeout: float = 10.0) -> dict[str, Histogram]:
    """One snapshot of a server's latency histograms."""
    request = urllib.request.Request(f"{base_url.rstrip('/')}/metrics",
                                     headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return parse_histograms(resp.read().decode("utf-8", errors="replace"))


def fine_buckets_arg(step_ms: float = 0.25, top_ms: float = 50.0) -> str:
    """A ``--custom-histogram-buckets`` value: ``step_ms`` steps up to ``top_ms`` for TTFT and ITL (a small
    model's range) and 10 ms steps up to 2 s for E2E, then vLLM's coarse ones, so that a median is read to
    within a step."""
    import json

    fine = [round(step_ms * i / 1000, 6) for i in range(1, int(top_ms / step_ms) + 1)]
    coarse = [0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
    request = [round(0.01 * i, 6) for i in range(1, 201)] + [2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 240.0, 480.0,
                                                             960.0, 1920.0, 7680.0]
    return json.dumps({"time_to_first_token": fine + coarse, "inter_token_latency": fine + coarse,
                       "request_latency": request})
