"""The load runner spread over worker processes (and Ray actors) against a local streaming stub: the caller gets
one run, in its order and on its clock, and no worker is left behind."""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from pytest_glm.measuring.load import LoadRunner, Workload
from pytest_glm.measuring.load_workers import split
from pytest_glm.measuring.slo import figures
from tests.helpers.stream_stub import StubInThread

CHUNKS = 30


def prompts(count: int) -> list[list[int]]:
    """Prompt ``i`` has ``i + 1`` tokens: the stub's usage says which record answered which prompt."""
    return [list(range(i + 1)) for i in range(count)]


def check_one_run(result, count: int, concurrency: int, before: float, after: float) -> None:
    assert result.errors == []
    assert [r.prompt_tokens for r in result.records] == [i + 1 for i in range(count)]  # the callers' order
    assert all(r.output_tokens == CHUNKS and len(r.chunk_times) == CHUNKS for r in result.records)
    assert all(before <= r.start <= r.chunk_times[0] <= r.end <= after for r in result.records)  # the callers' clock
    assert result.peak_concurrency == concurrency
    f = figures(result)
    assert f["completed"] == count and f["concurrency"] == concurrency and 5 <= f["median_itl_ms"] <= 60


def first_starts_per_worker(result, count: int, concurrency: int, processes: int) -> list[float]:
    return [result.records[share.positions[0]].start for share in split(count, concurrency, processes)]


def test_above_the_ceiling_worker_processes_carry_the_run_and_start_together() -> None:
    with StubInThread(delay=0.02) as url:
        runner = LoadRunner(url, "stub", streams_per_process=2, processes=2)
        before = time.perf_counter()
        result = runner.run(Workload("w", 4, CHUNKS), prompts(8), concurrency=4)
        after = time.perf_counter()
    assert result.processes == 2
    check_one_run(result, 8, 4, before, after)
    starts = first_starts_per_worker(result, 8, 4, 2)
    assert max(starts) - min(starts) < 0.2  # one start instant (a request lasts ~0.6 s)
    assert multiprocessing.active_children() == []


def test_below_the_ceiling_one_process_runs_as_before() -> None:
    with StubInThread(delay=0.02) as url:
        before = time.perf_counter()
        result = LoadRunner(url, "stub", streams_per_process=4, processes=2).run(Workload("w", 4, CHUNKS),
                                                                                   prompts(8), concurrency=4)
        after = time.perf_counter()
    assert result.processes == 1
    check_one_run(result, 8, 4, before, after)


def test_workers_end_when_their_caller_is_killed() -> None:
    """A caller killed outright (a pytest-xdist worker's death) runs no cleanup; its workers notice and exit."""
    psutil = pytest.importorskip("psutil")
    with StubInThread(delay=0.05) as url:
        script = (f"from pytest_glm.measuring.load import LoadRunner, Workload\n"
                  f"LoadRunner({url!r}, 'stub', streams_per_process=1, processes=2).run(Workload('w', 1, 400), "
                  f"[[1]] * 4, 2)\n")
        caller = subprocess.Popen([sys.executable, "-c", script])
        try:
            workers: list = []
            deadline = time.monotonic() + 60
            while len(workers) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
                workers = [p for p in psutil.Process(caller.pid).children()
                           if "spawn_main" in " ".join(p.cmdline())]
            assert len(workers) == 2, "the caller started no two workers within 60 s"
            time.sleep(1.0)  # under way
        finally:
            caller.kill()
            caller.wait(10)
        _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []


def test_on_a_ray_cluster_the_workers_are_actors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-node Ray cluster of this test's own (its temporary directory short: Ray's sockets live there)."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # or Ray writes a token into ~/.ray for every later client
    temp = tempfile.mkdtemp(prefix="glm-ray-", dir="/tmp")
    try:
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
        except Exception as exc:  # Ray's own start-up (a raylet too slow on a swamped machine) is not under test
            pytest.skip(f"a local Ray cluster did not start: {type(exc).__name__}: {str(exc)[:200]}")
        monkeypatch.setenv("RAY_ADDRESS", ray.get_runtime_context().gcs_address)
        with StubInThread(delay=0.02) as url:
            before = time.perf_counter()
            result = LoadRunner(url, "stub", streams_per_process=2, processes=2).run(Workload("w", 4, CHUNKS),
                                                                                       prompts(8), concurrency=4)
            after = time.perf_counter()
        assert result.processes == 2
        check_one_run(result, 8, 4, before, after)
        starts = first_starts_per_worker(result, 8, 4, 2)
        assert max(starts) - min(starts) < 0.2
        workers = [a for a in ray._private.state.actors().values()  # from the GCS: no dashboard needed
                   if a["ActorClassName"].endswith("_RayWorker")]
        assert len(workers) == 2 and all(a["State"] == "DEAD" for a in workers)  # ran as actors, then killed
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
