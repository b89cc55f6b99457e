"""The load runner against a local streaming stub: what it records, and how it treats failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from pytest_glm.measuring import load
from pytest_glm.measuring.load import LoadRunner, Workload, random_prompts
from pytest_glm.measuring.slo import figures
from tests.helpers.stream_stub import StubInThread


def test_records_every_chunk_and_the_servers_token_counts() -> None:
    with StubInThread(delay=0.002) as url:
        result = LoadRunner(url, "stub").run(Workload("w", 32, 20), random_prompts(6, 32, 100), concurrency=3)
    assert result.errors == []
    for record in result.records:
        assert (record.prompt_tokens, record.output_tokens) == (32, 20)
        assert len(record.chunk_times) == 20
        assert record.chunk_times == sorted(record.chunk_times) and len(record.itls) == 19
        # the stub sleeps 2 ms between chunks; a late read can merge a few gaps, not most of them
        assert sorted(record.itls)[9] >= 0.0015
        assert record.ttft <= record.latency
        assert record.tpot == pytest.approx((record.latency - record.ttft) / 19)
    f = figures(result)
    assert f["completed"] == 6 and f["total_output_tokens"] == 120
    assert 1.5 <= f["median_itl_ms"] <= 50


def test_concurrency_is_bounded() -> None:
    with StubInThread(delay=0.01) as url:
        result = LoadRunner(url, "stub").run(Workload("w", 4, 10), random_prompts(4, 4, 100), concurrency=2)
    spans = sorted((r.start, r.end) for r in result.records)
    in_flight = max(sum(s <= start < e for s, e in spans) for start, _ in spans)
    assert in_flight == 2


def test_failed_requests_are_recorded_not_raised() -> None:
    with StubInThread(fail_every=2) as url:
        result = LoadRunner(url, "stub").run(Workload("w", 4, 5), random_prompts(4, 4, 100), concurrency=1)
    assert len(result.completed) == 2
    assert result.errors == ['HTTP 500: {"error": {"message": "stub failure"}}'] * 2


def test_unreachable_server_and_deadline() -> None:
    result = LoadRunner("http://127.0.0.1:9", "stub", read_timeout=2).run(Workload("w", 4, 5), [[1, 2, 3, 4]], 1)
    assert result.errors and "ClientConnectorError" in result.errors[0]
    with StubInThread(delay=0.5) as url:
        result = LoadRunner(url, "stub").run(Workload("w", 4, 50), [[1]], 1, deadline=1.0)
    assert result.errors == ["not finished within the run's deadline of 1 s"]


def test_a_request_dropped_on_a_kept_alive_connection_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's keep-alive timer can close a connection as the next request goes out on it (vLLM's is 5 s,
    and a stalled server overshoots it); that request is sent again on a new connection and counted."""
    with StubInThread(drop="reused") as url:
        result = LoadRunner(url, "stub").run(Workload("w", 4, 5), random_prompts(12, 4, 100), concurrency=3)
        assert result.errors == []
        assert len(result.completed) == 12
        assert all(r.output_tokens == 5 for r in result.records)
        assert result.retried >= 1  # a request after the first wave found a used connection

        monkeypatch.setattr(load, "_STALE_RETRIES", 0)  # the same drops, not sent again: they are failures
        result = LoadRunner(url, "stub").run(Workload("w", 4, 5), random_prompts(12, 4, 100), concurrency=3)
        assert result.retried == 0
        assert result.errors and all("ServerDisconnectedError" in e for e in result.errors)


def test_a_request_dropped_on_a_fresh_connection_fails() -> None:
    with StubInThread(drop="all") as url:
        result = LoadRunner(url, "stub").run(Workload("w", 4, 5), random_prompts(4, 4, 100), concurrency=2)
    assert result.retried == 0
    assert len(result.errors) == 4 and all("ServerDisconnectedError" in e for e in result.errors)


def test_a_held_up_client_loop_is_measured() -> None:
    """A client that cannot run timestamps chunks late; the run says how late its loop woke up."""
    async def hold_up_then_run(url: str):
        async def hog() -> None:
            await asyncio.sleep(0.05)
            time.sleep(0.3)  # blocks the loop, as a starved process would be

        hogging = asyncio.ensure_future(hog())
        result = await LoadRunner(url, "stub").run_async(Workload("w", 4, 40), random_prompts(2, 4, 100), 2)
        await hogging
        return result

    with StubInThread(delay=0.01) as url:
        result = asyncio.run(hold_up_then_run(url))
    assert result.errors == []
    assert result.client_lag >= 0.25
