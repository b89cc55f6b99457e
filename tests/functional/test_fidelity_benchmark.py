"""benchmarks/fidelity.py: each client's run is held against the server's histograms of that very run, whichever
client goes first in a round."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from pytest_glm.measuring.histograms import LATENCIES, Histogram
from tests.helpers.stream_stub import StubInThread

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fidelity

BOUNDS = (0.004, 0.006, 0.008, 0.012, math.inf)


class FakeServer:
    """Cumulative histograms: a load-runner run adds ten observations in (4, 6] ms (median 5 ms), a vllm bench
    run ten in (8, 12] ms (median 10 ms)."""

    def __init__(self) -> None:
        self.counts = [0.0] * len(BOUNDS)

    def observe(self, bucket: int) -> None:
        for i in range(bucket, len(BOUNDS)):
            self.counts[i] += 10

    def snapshot(self, url: str) -> dict[str, Histogram]:
        return {figure: Histogram(BOUNDS, tuple(self.counts), 0.0) for figure in LATENCIES}


def test_rounds_pair_each_client_with_the_servers_account_of_its_own_run(monkeypatch: pytest.MonkeyPatch) -> None:
    server = FakeServer()

    class Runner(fidelity.LoadRunner):
        def run(self, workload, prompts, concurrency, deadline=3600.0, extra_body=None):
            result = super().run(workload, prompts, concurrency, deadline, extra_body)
            if workload.name == "fidelity":
                server.observe(1)
            return result

    def vllm_bench(*args, **kwargs) -> dict:
        server.observe(3)
        return {f"{stat}_{m}_ms": 10.0 for stat in ("median", "mean") for m in fidelity.METRICS}

    monkeypatch.setattr(fidelity, "LoadRunner", Runner)
    monkeypatch.setattr(fidelity, "vllm_bench_serve", vllm_bench)
    monkeypatch.setattr(fidelity, "fetch_histograms", server.snapshot)
    with StubInThread(delay=0.001) as url:
        rows, summary = fidelity.measure(url, "stub", Path("."), input_len=8, output_len=4, concurrency=2,
                                         num_prompts=4, rounds=2)
    for row in rows:  # round 0 runs the plugin first, round 1 vllm bench first
        assert row["server_plugin_median_itl_ms"] == pytest.approx(5.0)
        assert row["server_vllm_median_itl_ms"] == pytest.approx(10.0)
        assert row["server_median_itl_bucket_ms"] == pytest.approx(4.0)
    assert summary["itl"]["vllm_bench_over_server"] == pytest.approx(1.0)
    assert summary["ttft"]["server_ms"] == pytest.approx(7.5)  # the median of 5, 10, 5, 10
    assert summary["itl"]["plugin_over_server"] == pytest.approx(summary["itl"]["plugin_ms"] / 5.0)


def test_a_server_without_metrics_leaves_the_servers_column_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_metrics(url: str) -> dict:
        raise OSError("HTTP Error 404: Not Found")

    monkeypatch.setattr(fidelity, "fetch_histograms", no_metrics)
    monkeypatch.setattr(fidelity, "vllm_bench_serve", lambda *a, **k: {"median_itl_ms": 1.0})
    with StubInThread(delay=0.001) as url:
        rows, summary = fidelity.measure(url, "stub", Path("."), input_len=8, output_len=4, concurrency=2,
                                         num_prompts=4, rounds=1)
    assert rows[0]["server_plugin_median_itl_ms"] is None
    assert math.isnan(summary["itl"]["plugin_over_server"]) and summary["itl"]["plugin_ms"] > 0
