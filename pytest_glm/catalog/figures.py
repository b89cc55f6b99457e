"""The names of the latency figures, shared by the thresholds that limit them and the code that measures
them: ``vllm bench serve``'s JSON keys (``p99_ttft_ms``, ``median_tpot_ms``, ``output_throughput``), so that a
user reads one vocabulary. A name ending in ``_ms`` is a latency (lower is better, a threshold is a
maximum); every other figure is a rate or a share (higher is better, a threshold is a minimum).
"""

from __future__ import annotations

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


def lower_is_better(figure: str) -> bool:
    return figure.endswith("_ms")
