"""SLO tiers: latency limits for a real GLM model that has no measured ones, taken from published serving SLOs.

A tier is a function of the cell (its prompt and output lengths, its batch size) and of the model's active
parameters, because the sources state their figures that way: Tencent's TokenHub-Vendor-Verifier gives TTFT
by input size and per-request output speed by active parameters; GuideLLM's SLO guide gives inter-token
latency per use case. docs/thresholds.md ("SLO tiers") names the source of every number below.

Precedence (catalog/profiles.py): a tier's limits are the lowest layer; a reference model's measured file and
``--glm-thresholds`` replace them figure by figure. Pure data and arithmetic, no pytest.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

INTERACTIVE = "interactive"
BATCH = "batch"
#: Each cell by its batch size: ``interactive`` up to :data:`INTERACTIVE_MAX_BATCH` concurrent requests,
#: ``batch`` above. A deployment is not healthy or broken by whether 512 simultaneous 8000-token prompts
#: each see their first token within 5 s (no serving stack does that): at that load the question a
#: published SLO answers is throughput, so judging every cell as interactive would fail healthy deployments.
AUTO = "auto"
#: ``--glm-slo-tier none``: no tier; a cell without limits is recorded and skipped, as before tiers.
NO_TIER = "none"
TIERS: Mapping[str, str] = MappingProxyType({
    INTERACTIVE: "a person reads the stream: TTFT by prompt size, decode speed by active parameters, "
                 "p99 inter-token gaps, goodput",
    BATCH: "throughput: a slower per-request decode floor and an aggregate output-token rate; no TTFT",
})
#: The largest batch ``auto`` judges as interactive: the concurrency of TokenHub-Vendor-Verifier's and the
#: seed guide's published latency runs (16 prompts) is inside it, GuideLLM's chat examples too.
INTERACTIVE_MAX_BATCH = 16
#: The tier a real (non-reference) model is judged by when --glm-slo-tier does not say.
DEFAULT_TIER = AUTO


def for_cell(tier: str, batch: int) -> str:
    """The tier that judges a cell of ``batch`` concurrent requests under ``tier`` (``auto`` resolved)."""
    if tier == AUTO:
        return INTERACTIVE if batch <= INTERACTIVE_MAX_BATCH else BATCH
    return tier

#: TokenHub-Vendor-Verifier README, "TTFT / Request Success Rate" (published acceptance table): P90 TTFT in ms
#: by prompt tokens, upper bound exclusive. <6K and 6-16K are both 5 s.
TTFT_P90_MS: tuple[tuple[int, float], ...] = (
    (6_000, 5_000.0), (16_000, 5_000.0), (32_000, 8_000.0), (64_000, 15_000.0), (128_000, 35_000.0),
    (256_000, 70_000.0))
#: TokenHub-Vendor-Verifier thvv/perf/scripts/sla_eval.py ``TIERS``: P50 TTFT in ms by prompt tokens
#: (``lo <= x < hi``, so an 8000-token prompt falls in its 8K-32K bucket).
TTFT_P50_MS: tuple[tuple[int, float], ...] = (
    (4_000, 2_000.0), (8_000, 2_500.0), (32_000, 4_000.0), (64_000, 8_000.0), (128_000, 15_000.0),
    (256_000, 30_000.0))
#: TokenHub-Vendor-Verifier README, "OTPS": output tokens/s per request. Models above 10B active: L1 >= 30,
#: L2 >= 10; at or below 10B: >= 100 (one level only).
SMALL_MODEL_ACTIVE_B = 10.0
OTPS_L1_LARGE, OTPS_L2_LARGE, OTPS_SMALL = 30.0, 10.0, 100.0
#: No L2 is published for models at or below 10B: the large models' L1/L2 ratio (3) applied to their 100.
OTPS_L2_SMALL = OTPS_SMALL * OTPS_L2_LARGE / OTPS_L1_LARGE
#: GuideLLM docs/guides/service_level_objectives.md, "Code Generation": ITL <= 150 ms for 99 % of requests
#: (GLM-4.x is served for coding and agents; its chat example's 50 ms is below the gap one chunked prefill
#: of an 8000-token prompt opens in the decode of every running request).
P99_ITL_MS = 150.0
#: Goodput counts a request within the tier's TTFT and TPOT; at least 90 % must be, as "P90" says.
GOODPUT_RATIO = 0.90


def _bucket(table: tuple[tuple[int, float], ...], prompt_tokens: int) -> float:
    for upper, value in table:
        if prompt_tokens < upper:
            return value
    return table[-1][1]


def is_small(active_params_b: float | None) -> bool:
    """At or below 10B active (TokenHub's line); an unknown model counts as a large one."""
    return active_params_b is not None and active_params_b <= SMALL_MODEL_ACTIVE_B


def otps_floor(tier: str, active_params_b: float | None) -> float:
    """The per-request output tokens/s the tier asks for."""
    if tier == INTERACTIVE:
        return OTPS_SMALL if is_small(active_params_b) else OTPS_L1_LARGE
    return OTPS_L2_SMALL if is_small(active_params_b) else OTPS_L2_LARGE


def limits(tier: str, prompt_tokens: int, output_tokens: int, batch: int,
           active_params_b: float | None) -> dict[str, float]:
    """The figures (``vllm bench serve`` names) a cell must meet under ``tier``; {} for no tier."""
    tier = for_cell(tier, batch)
    tpot = round(1000.0 / otps_floor(tier, active_params_b), 1) if tier in TIERS else 0.0
    if tier == INTERACTIVE:
        return {"median_ttft_ms": _bucket(TTFT_P50_MS, prompt_tokens),
                "p90_ttft_ms": _bucket(TTFT_P90_MS, prompt_tokens),
                "median_tpot_ms": tpot, "p99_itl_ms": P99_ITL_MS, "goodput_ratio": GOODPUT_RATIO}
    if tier == BATCH:
        # Every one of `batch` concurrent streams at the per-request floor: at least batch x floor tokens/s.
        return {"median_tpot_ms": tpot, "output_throughput": batch * otps_floor(tier, active_params_b)}
    return {}


def goodput_slo_ms(tier: str, prompt_tokens: int, active_params_b: float | None,
                   batch: int = 1) -> dict[str, float]:
    """The per-request SLO goodput counts against under ``tier`` (keys ttft, tpot); {} without one."""
    if for_cell(tier, batch) != INTERACTIVE:
        return {}
    return {"ttft": _bucket(TTFT_P90_MS, prompt_tokens), "tpot": round(1000.0 / otps_floor(tier, active_params_b), 1)}


def check_tier(name: str) -> str | None:
    """Why ``name`` is not a tier (None when it is one, or ``none``)."""
    if name in TIERS or name in (AUTO, NO_TIER):
        return None
    return f"unknown SLO tier {name!r}"


def known() -> str:
    return ", ".join([AUTO, *TIERS, NO_TIER])
