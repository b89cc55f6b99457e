"""The names of the figures and the rules every comparison of them follows, shared by the thresholds that
limit them, the code that measures them, and both comparisons with a stored run (``--glm-baseline``,
``--glm-compare``): one tolerance lookup, one direction rule, one "moved beyond its tolerance" test.

Latency names are ``vllm bench serve``'s JSON keys (``p99_ttft_ms``, ``median_tpot_ms``, ``output_throughput``), so that a
user reads one vocabulary. A name ending in ``_ms`` is a latency (lower is better, a threshold is a
maximum); every other figure is a rate or a share (higher is better, a threshold is a minimum).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "median", "p90", "p99")
LATENCY_FIGURES = tuple(f"{stat}_{metric}_ms" for metric in METRICS for stat in STATS)
RATE_FIGURES = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput",
                "goodput_ratio")
FIGURES = LATENCY_FIGURES + RATE_FIGURES
#: What a goodput SLO may name, per request (as vLLM's ``--goodput ttft:MS tpot:MS e2el:MS``).
GOODPUT_KEYS = ("ttft", "tpot", "e2el")

DESCRIPTIONS = {
    "ttft": "time to first token", "tpot": "time per output token (after the first)",
    "itl": "inter-token latency", "e2el": "end-to-end latency",
    "request_throughput": "completed requests per second", "output_throughput": "output tokens per second",
    "total_token_throughput": "prompt + output tokens per second",
    "request_goodput": "requests per second within the per-request SLO",
    "goodput_ratio": "share of requests within the per-request SLO",
}


#: How far a figure may move when no ``[baseline_tolerance]`` entry names it: a share of the stored value.
DEFAULT_TOLERANCE = 0.10

#: Tolerances of figures that are shares or acceptance lengths, where a 10 % latency-style allowance would
#: hide a real loss. A ``[baseline_tolerance]`` entry of the figure wins.
SHARE_TOLERANCE = {"acceptance_rate": 0.02, "mean_acceptance_length": 0.02, "tool_schema_accuracy": 0.0,
                   "tool_trigger_f1": 0.0, "goodput_ratio": 0.05, "behaviour_match_rate": 0.05,
                   "token_id_coverage": 0.0,
                   "prefix_cache_hit_rate": -1}  # judged by its own limit; a stored 0 makes shares meaningless
_POSITION = re.compile(r"^acceptance_pos\d+$")


def lower_is_better(figure: str, op: str = "") -> bool:
    """Whether a smaller value is better: what its threshold's operator says (``<=``), else its name (a
    ``_ms`` latency)."""
    return op == "<=" if op else figure.endswith("_ms")


def tolerance(figure: str, table: Mapping[str, float]) -> float:
    """How far ``figure`` may move from a stored value (a share of it; negative: not compared): the table's
    entry (a profile's or a threshold file's ``[baseline_tolerance]``), the share figures' own, else the
    table's ``default``. A figure measured at the load concurrency (``*_batched``) follows its one-at-a-time
    twin."""
    if figure in table:
        return table[figure]
    figure = figure.removesuffix("_batched")
    if figure in table:
        return table[figure]
    if figure in SHARE_TOLERANCE:
        return SHARE_TOLERANCE[figure]
    if _POSITION.match(figure):
        return SHARE_TOLERANCE["acceptance_rate"]
    return table.get("default", DEFAULT_TOLERANCE)


def beyond(base: float, value: float, tolerance: float, lower_better: bool) -> bool:
    """``value`` is worse than ``base`` by more than ``tolerance`` (a share of ``base``): above it for a figure
    where lower is better, below it for one where higher is better. Flip ``lower_better`` to ask "better"."""
    return value > base * (1 + tolerance) if lower_better else value < base * (1 - tolerance)
