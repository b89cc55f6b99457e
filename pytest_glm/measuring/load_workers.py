"""Load beyond one client process: the load runner's requests split over worker processes that start together.

One asyncio process timestamps every chunk it reads; past a certain rate it is busy parsing when a chunk
arrives, and reports its own delay as the server's latency. Above :data:`STREAMS_PER_PROCESS` streams (measured
against the server's own histograms, benchmarks/README.md), :class:`~pytest_glm.measuring.load.LoadRunner`
hands its run to several workers, each with its own event loop, a share of the concurrency and of the prompts.

Every worker first gets ready (interpreter, imports, HTTP session), then all start at one wall-clock instant
chosen once every worker is ready, so the concurrency is reached at once, as in one process. Their records are
put back in the prompts' order and onto the caller's ``perf_counter`` clock, so the caller gets the same
:class:`~pytest_glm.measuring.load.LoadResult` it would from one process.

Workers are local processes (``spawn``: no inherited threads or sockets; as with any ``spawn``, a worker
imports the caller's main script, so a script that runs load at its top level needs the
``if __name__ == "__main__":`` guard, and ``python -`` cannot spread load), or, when a Ray cluster is given
(``RAY_ADDRESS`` set and ``ray`` importable), Ray actors spread over its nodes; the nodes need pytest-glm
installed, and their clocks in step (NTP: a few ms), since the start instant and the merge use wall time.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pytest_glm.exceptions import DeploymentError

if TYPE_CHECKING:
    from pytest_glm.measuring.load import LoadResult, LoadRunner, RequestRecord, Workload

#: Streams one client process carries while its figures stay within 5 % of the server's histograms
#: (benchmarks/README.md, "Client ceiling"). Above it the run is split.
STREAMS_PER_PROCESS = 384

#: Seconds a worker may take to get ready (a spawned interpreter importing aiohttp; a Ray actor being placed).
READY_TIMEOUT = 120.0
#: Between the last worker saying ready and the start: long enough for the start instant to reach them all.
START_MARGIN = 0.25


@dataclass(frozen=True)
class Share:
    """One worker's part of a run: the positions of its prompts in the caller's list, and its concurrency."""

    positions: tuple[int, ...]
    concurrency: int


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def process_count(concurrency: int, prompts: int, streams_per_process: int, limit: int) -> int:
    """How many workers carry ``concurrency`` streams: enough that none holds more than ``streams_per_process``,
    at most ``limit`` (more processes than cores add no capacity), never more than there are streams or prompts."""
    wanted = math.ceil(max(concurrency, 1) / max(streams_per_process, 1))
    return max(1, min(wanted, limit, concurrency, prompts))


def split(prompts: int, concurrency: int, processes: int) -> list[Share]:
    """Concurrency divided as evenly as it goes; each prompt dealt in turn to the worker with the least work per
    stream, so every worker's prompts are spread over the whole list and in proportion to its streams."""
    base, extra = divmod(concurrency, processes)
    streams = [base + (i < extra) for i in range(processes)]
    dealt: list[list[int]] = [[] for _ in range(processes)]
    for position in range(prompts):
        worker = min(range(processes), key=lambda w: (len(dealt[w]) / streams[w], w))
        dealt[worker].append(position)
    return [Share(tuple(d), s) for d, s in zip(dealt, streams, strict=True) if d]


@dataclass
class WorkerRun:
    """What a worker sends back: its records and run on its own ``perf_counter`` clock, and that clock's offset
    to wall time (``time.time() - perf_counter()``)."""

    result: LoadResult
    wall_offset: float


def merge(workload: Workload, concurrency: int, shares: Sequence[Share], runs: Sequence[WorkerRun], prompts: int,
          start_at: float, origin: float) -> LoadResult:
    """One :class:`LoadResult` from the workers' runs: records in the prompts' order, every time moved onto the
    caller's clock (``origin`` is the caller's ``perf_counter`` at wall instant ``start_at``)."""
    from pytest_glm.measuring.load import LoadResult

    records: list[RequestRecord | None] = [None] * prompts
    ends = []
    for share, run in zip(shares, runs, strict=True):
        shift = origin - start_at + run.wall_offset  # worker perf_counter -> wall -> the caller's perf_counter
        for position, record in zip(share.positions, run.result.records, strict=False):
            records[position] = replace(record, start=record.start + shift, end=record.end + shift,
                                        chunk_times=[t + shift for t in record.chunk_times])
        ends.append(run.result.began + shift + run.result.duration)
    missing = [i for i, r in enumerate(records) if r is None]
    if missing:
        raise RuntimeError(f"the load workers returned no record for prompts {missing[:5]}")
    began = min(run.result.began + origin - start_at + run.wall_offset for run in runs)
    return LoadResult(workload, concurrency, [r for r in records if r is not None], max(ends) - began,
                      max(run.result.client_lag for run in runs), began=began, processes=len(runs))


def ray_cluster_given() -> bool:
    return bool(os.environ.get("RAY_ADDRESS")) and importlib.util.find_spec("ray") is not None


def run_spread(runner: LoadRunner, workload: Workload, prompts: Sequence[list[int] | str], concurrency: int,
               processes: int, deadline: float, extra_body: dict | None) -> LoadResult:
    """The run on ``processes`` workers (Ray actors when a cluster is given, else local processes), merged."""
    shares = split(len(prompts), concurrency, processes)
    jobs = [_Job(runner.settings(), workload, [prompts[i] for i in s.positions], s.concurrency, deadline, extra_body)
            for s in shares]
    runs, start_at, origin = (_on_ray(jobs) if ray_cluster_given() else _on_processes(jobs))
    return merge(workload, concurrency, shares, runs, len(prompts), start_at, origin)


@dataclass
class _Job:
    settings: dict[str, Any]
    workload: Workload
    prompts: list[list[int] | str]
    concurrency: int
    deadline: float
    extra_body: dict | None


def _start_instant() -> tuple[float, float]:
    """A wall-clock start a little ahead, and the caller's ``perf_counter`` at that instant."""
    start_at = time.time() + START_MARGIN
    return start_at, time.perf_counter() + (start_at - time.time())


def _work(job: _Job, start_at: float) -> WorkerRun:
    from pytest_glm.measuring.load import LoadRunner

    runner = LoadRunner(**job.settings, processes=1)
    result = asyncio.run(runner.run_async(job.workload, job.prompts, job.concurrency, job.deadline, job.extra_body,
                                          start_at=start_at))
    return WorkerRun(result, time.time() - time.perf_counter())


# --- local processes -------------------------------------------------------------------------------------------

def _on_processes(jobs: list[_Job]) -> tuple[list[WorkerRun], float, float]:
    context = multiprocessing.get_context("spawn")
    pipes, workers = [], []
    finished = False
    try:
        for job in jobs:
            ours, theirs = context.Pipe()
            worker = context.Process(target=_process_main, args=(theirs, job, os.getpid()), daemon=True,
                                     name="glm-load-worker")
            worker.start()
            theirs.close()
            pipes.append(ours)
            workers.append(worker)
        for i, pipe in enumerate(pipes):
            _expect(pipe, "ready", READY_TIMEOUT, i, " (a spawned worker imports the main script first: its top "
                    "level must be guarded by if __name__ == '__main__', and it cannot be stdin)")
        start_at, origin = _start_instant()
        for pipe in pipes:
            pipe.send(start_at)
        wait = max(job.deadline for job in jobs) + READY_TIMEOUT
        runs = [_expect(pipe, "result", wait, i) for i, pipe in enumerate(pipes)]
        finished = True
        return runs, start_at, origin
    finally:  # after their result the workers exit by themselves; on any other way out they are stopped now
        for worker in workers:
            worker.join(5 if finished else 0)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
            if worker.is_alive():
                worker.kill()
                worker.join(5)
        for pipe in pipes:
            pipe.close()


def _expect(pipe: Any, what: str, timeout: float, index: int, hint: str = "") -> Any:
    if not pipe.poll(timeout):
        raise DeploymentError(f"load worker {index} sent no {what} within {timeout:.0f} s")
    try:
        kind, value = pipe.recv()
    except EOFError:
        raise DeploymentError(f"load worker {index} died before its {what}{hint}") from None
    if kind == "error":
        raise DeploymentError(f"load worker {index} failed: {value}")
    return value


def _process_main(pipe: Any, job: _Job, parent: int) -> None:
    """A worker process: ready, wait for the start instant, run, send the records back."""
    _exit_with(parent)
    try:
        pipe.send(("ready", None))
        start_at = pipe.recv()
        pipe.send(("result", _work(job, start_at)))
    except (EOFError, BrokenPipeError):
        return  # the caller is gone
    except Exception as exc:  # sent back as one line; the caller raises it
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _exit_with(parent: int) -> None:
    """End this worker if the process that started it dies (a killed pytest-xdist worker cannot clean up)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="glm-parent-watch").start()


# --- Ray actors -------------------------------------------------------------------------------------------------

class _RayWorker:
    """The worker as a Ray actor: constructed (imports done) means ready."""

    def ready(self) -> bool:
        return True

    def run(self, job: _Job, start_at: float) -> WorkerRun:
        return _work(job, start_at)


def _on_ray(jobs: list[_Job]) -> tuple[list[WorkerRun], float, float]:
    from pytest_glm.cluster import cluster_address, connect

    ray: Any = importlib.import_module("ray")  # optional; untyped here so that checks pass without it
    # Probed first: an in-process ray.init on an address that does not answer hangs or ends the process.
    started_here = connect(cluster_address())
    actor_class = ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_RayWorker)
    actors = [actor_class.remote() for _ in jobs]
    try:
        try:
            ray.get([a.ready.remote() for a in actors], timeout=READY_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise DeploymentError(f"the Ray cluster at RAY_ADDRESS placed no {len(jobs)} load workers of one CPU "
                                  f"each within {READY_TIMEOUT:.0f} s") from None
        start_at, origin = _start_instant()
        wait = max(job.deadline for job in jobs) + READY_TIMEOUT
        runs = ray.get([a.run.remote(job, start_at) for a, job in zip(actors, jobs, strict=True)], timeout=wait)
        return list(runs), start_at, origin
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()
