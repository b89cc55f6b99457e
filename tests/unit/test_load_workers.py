"""Splitting a load run over worker processes and merging it back: the split, the merge, the shared clock."""

from __future__ import annotations

import pytest

from pytest_glm.measuring.load import LoadResult, RequestRecord, Workload, peak_in_flight
from pytest_glm.measuring.load_workers import Share, WorkerRun, merge, process_count, split

WORKLOAD = Workload("w", 4, 3)


def test_processes_follow_the_ceiling_within_the_limit() -> None:
    assert process_count(512, 1024, 256, limit=16) == 2
    assert process_count(1000, 4000, 256, limit=16) == 4
    assert process_count(1000, 4000, 256, limit=2) == 2  # no more processes than usable cores
    assert process_count(256, 1024, 256, limit=16) == 1  # at the ceiling, one process
    assert process_count(8, 3, 1, limit=16) == 3  # never more workers than prompts


def test_the_split_shares_streams_evenly_and_prompts_in_proportion() -> None:
    shares = split(prompts=10, concurrency=5, processes=2)
    assert [s.concurrency for s in shares] == [3, 2]
    assert sorted(p for s in shares for p in s.positions) == list(range(10))
    assert [len(s.positions) for s in shares] == [6, 4]
    # dealt in turn, not in blocks: each worker's prompts spread over the whole list
    assert shares[1].positions[0] == 1 and shares[0].positions[-1] == 9


def _worker(times: list[float], wall_offset: float, began: float, lag: float) -> WorkerRun:
    records = [RequestRecord(start=t, end=t + 1.0, chunk_times=[t + 0.1, t + 0.5, t + 1.0], output_tokens=3)
               for t in times]
    return WorkerRun(LoadResult(WORKLOAD, len(times), records, 2.0, lag, began=began), wall_offset)


def test_the_merge_puts_records_in_order_on_the_callers_clock() -> None:
    """Two workers with unrelated perf_counter clocks, both started at wall time 1000.0: worker A's clock read
    10.0 then (offset 990), worker B's 500.0 (offset 500). The caller's clock read 50.0 at that instant."""
    shares = [Share((0, 2), 1), Share((1,), 1)]
    runs = [_worker([10.0, 11.5], wall_offset=990.0, began=10.0, lag=0.002),
            _worker([500.25], wall_offset=500.0, began=500.0, lag=0.007)]
    result = merge(WORKLOAD, 2, shares, runs, prompts=3, start_at=1000.0, origin=50.0)
    assert [r.start for r in result.records] == pytest.approx([50.0, 50.25, 51.5])
    assert result.records[1].chunk_times == pytest.approx([50.35, 50.75, 51.25])
    assert result.records[0].ttft == pytest.approx(0.1) and result.records[2].latency == pytest.approx(1.0)
    assert result.began == pytest.approx(50.0)
    assert result.duration == pytest.approx(2.0)
    assert (result.processes, result.concurrency, result.client_lag) == (2, 2, 0.007)
    assert runs[0].result.records[0].start == 10.0  # the workers' own records are left as they were


def test_a_worker_that_returns_too_few_records_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no record for prompts"):
        merge(WORKLOAD, 1, [Share((0,), 1)], [_worker([], 0.0, 0.0, 0.0)], prompts=1, start_at=0.0, origin=0.0)


def test_peak_in_flight_counts_overlaps_at_one_instant() -> None:
    assert peak_in_flight([(0, 2), (1, 3), (2, 4)]) == 2  # one ends as the next begins
    assert peak_in_flight([(0, 10), (1, 2), (3, 4), (5, 6)]) == 2
    assert peak_in_flight([]) == 0
