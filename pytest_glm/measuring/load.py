"""The load runner: random-token prompts of exact length, streamed at a fixed concurrency, timed per chunk.

It measures the way ``vllm bench serve`` does, so that its figures can be compared with it: prompts are token
ids (exact length, no re-tokenisation drift), ``ignore_eos`` makes every request generate exactly
``output_len`` tokens, each streamed chunk that carries a choice is timestamped on arrival (the first one is
the TTFT, the gaps between the others are the ITLs), and token counts come from the server's ``usage``.

Transport is aiohttp with kept-alive connections, as ``vllm bench serve`` uses, a read timeout on every
request and a deadline on the whole run. Reuse races the server's keep-alive timer (vLLM: 5 s): a server whose
event loop stalls past it closes an idle connection just as the next request goes out on it. Such a request,
dropped on a *reused* connection before any response came back, is sent once more on a new one, as HTTP
clients do; its time counts from the first attempt and the retry is counted (``LoadResult.retried``). A drop
on a fresh connection is a failure. Figures are computed elsewhere (:mod:`pytest_glm.measuring.slo`); this module only
records.

Above :data:`~pytest_glm.measuring.load_workers.STREAMS_PER_PROCESS` streams, one process would measure itself
rather than the server; the run is then carried by several worker processes that start together and whose
records are merged (:mod:`pytest_glm.measuring.load_workers`), with the same :class:`LoadResult` coming back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from pytest_glm.measuring import load_workers

#: Tries on kept-alive connections the server had already closed: each one is dropped from the pool as it fails,
#: so a stall can cost at most one per idle connection; past this bound the request fails.
_STALE_RETRIES = 8


@dataclass(frozen=True)
class Workload:
    """One shape of traffic: ``input_len`` prompt tokens, ``output_len`` generated tokens per request."""

    name: str
    input_len: int
    output_len: int

    def __str__(self) -> str:
        return f"{self.name} ({self.input_len} in / {self.output_len} out)"


@dataclass
class RequestRecord:
    """What one request did. Times are ``time.perf_counter`` seconds; ``chunk_times`` holds the arrival of
    every chunk that carried a choice, the first one being the first token."""

    start: float = 0.0
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""
    retried: bool = False

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.chunk_times)

    @property
    def ttft(self) -> float:
        return self.chunk_times[0] - self.start

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def itls(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (None for a one-token answer), as vLLM's benchmark defines it."""
        if self.output_tokens <= 1:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


@dataclass
class LoadResult:
    """Every request of one run, and the wall time of the run."""

    workload: Workload
    concurrency: int
    records: list[RequestRecord]
    duration: float
    client_lag: float = 0.0  # the most this client's event loop woke up late during the run, seconds
    began: float = 0.0  # perf_counter when the first request could go out
    processes: int = 1  # client processes that carried the run

    @property
    def peak_concurrency(self) -> int:
        """The most requests that were in flight at one instant."""
        return peak_in_flight([(r.start, r.end) for r in self.records])

    @property
    def completed(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]

    @property
    def errors(self) -> list[str]:
        return [r.error or "no token came back" for r in self.records if not r.ok]

    @property
    def retried(self) -> int:
        """Requests sent a second time because the server had closed their kept-alive connection."""
        return sum(r.retried for r in self.records)


def peak_in_flight(spans: Sequence[tuple[float, float]]) -> int:
    """The most intervals ``(start, end)`` open at one instant (an end before a start at the same time)."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans], key=lambda e: (e[0], e[1]))
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def random_prompts(count: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    """``count`` prompts of exactly ``length`` token ids drawn uniformly from ``range(vocab)``."""
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(length)] for _ in range(count)]


class LoadRunner:
    """Sends completions requests to one endpoint and records them.

    :param base_url: ``http://host:port`` of the server.
    :param model: served model name.
    :param api_key: bearer token or None (sent as a header, never logged).
    :param read_timeout: seconds a request may wait for its next chunk before it counts as failed.
    :param streams_per_process: streams one process carries before the run is split (default: the measured
        ceiling, :data:`~pytest_glm.measuring.load_workers.STREAMS_PER_PROCESS`).
    :param processes: client processes to use at most, overriding the automatic limit (one per usable core).
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, read_timeout: float = 120.0,
                 streams_per_process: int | None = None, processes: int | None = None) -> None:
        self.base_url = base_url
        self.url = f"{base_url.rstrip('/')}/v1/completions"
        self.model = model
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.read_timeout = read_timeout
        self.streams_per_process = streams_per_process
        self.processes = processes

    def settings(self) -> dict:
        """What a worker process needs to build the same runner (the key stays out of every repr and log)."""
        return {"base_url": self.base_url, "model": self.model, "api_key": self.api_key,
                "read_timeout": self.read_timeout}

    def processes_for(self, concurrency: int, prompts: int) -> int:
        """Client processes for a run of ``concurrency`` streams over ``prompts`` requests."""
        if self.processes is not None:
            limit = self.processes
        else:
            limit = 1 << 16 if load_workers.ray_cluster_given() else load_workers.usable_cpus()
        return load_workers.process_count(concurrency, prompts,
                                          self.streams_per_process or load_workers.STREAMS_PER_PROCESS, limit)

    def run(self, workload: Workload, prompts: Sequence[list[int] | str], concurrency: int,
            deadline: float = 3600.0, extra_body: dict | None = None) -> LoadResult:
        """Send every prompt (token ids, or text) with at most ``concurrency`` in flight (all released at once, as
        ``--request-rate inf --max-concurrency N`` does); give up after ``deadline`` seconds. Above the streams
        one process carries, worker processes share the run (see :mod:`pytest_glm.measuring.load_workers`)."""
        processes = self.processes_for(concurrency, len(prompts))
        if processes > 1:
            return load_workers.run_spread(self, workload, prompts, concurrency, processes, deadline, extra_body)
        return asyncio.run(self.run_async(workload, prompts, concurrency, deadline, extra_body))

    async def run_async(self, workload: Workload, prompts: Sequence[list[int] | str], concurrency: int,
                        deadline: float = 3600.0, extra_body: dict | None = None,
                        start_at: float | None = None) -> LoadResult:
        """One process's run; ``start_at`` (wall-clock ``time.time()``): hold the first request until then, once
        the session is up, so that workers in several processes start together."""
        records = [RequestRecord() for _ in prompts]
        gate = asyncio.Semaphore(max(concurrency, 1))
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.read_timeout)
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        trace = aiohttp.TraceConfig()
        trace.on_connection_reuseconn.append(_mark_reused)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=self.headers,
                                         trace_configs=[trace]) as session:

            async def one(prompt: list[int] | str, record: RequestRecord) -> None:
                async with gate:
                    await self._request(session, prompt, workload.output_len, record, extra_body)

            if start_at is not None:
                await asyncio.sleep(max(0.0, start_at - time.time()))
            began = time.perf_counter()
            lag = _LoopLag()
            watcher = asyncio.ensure_future(lag.watch())
            tasks = [asyncio.ensure_future(one(p, r)) for p, r in zip(prompts, records, strict=True)]
            _, pending = await asyncio.wait(tasks, timeout=deadline)
            watcher.cancel()
            for task, record in zip(tasks, records, strict=True):
                if task in pending:
                    task.cancel()
                    record.error = f"not finished within the run's deadline of {deadline:.0f} s"
            await asyncio.gather(*pending, watcher, return_exceptions=True)
            duration = time.perf_counter() - began
        return LoadResult(workload, concurrency, records, duration, lag.worst, began=began)

    async def _request(self, session: aiohttp.ClientSession, prompt: list[int] | str, output_len: int,
                       record: RequestRecord, extra_body: dict | None) -> None:
        payload = {
            "model": self.model, "prompt": prompt, "max_tokens": output_len, "temperature": 0.0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, **(extra_body or {}),
        }
        record.prompt_tokens = len(prompt) if isinstance(prompt, list) else 0  # the server's usage says
        record.start = time.perf_counter()
        try:
            for attempt in range(1, _STALE_RETRIES + 2):
                connection = _Attempt()
                try:
                    await self._send(session, payload, record, connection)
                    return
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    if attempt > _STALE_RETRIES or not connection.reused or connection.answered:
                        raise
                    record.retried = True  # the dead connection is discarded; the next try gets another
        except (TimeoutError, aiohttp.ClientError) as exc:
            record.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        finally:
            record.end = time.perf_counter()

    async def _send(self, session: aiohttp.ClientSession, payload: dict, record: RequestRecord,
                    connection: _Attempt) -> None:
        times = record.chunk_times
        async with session.post(self.url, json=payload, trace_request_ctx=connection) as resp:
            connection.answered = True
            if resp.status != 200:
                body = (await resp.text())[:300]
                record.error = f"HTTP {resp.status}: {body}"
                return
            buffer = b""
            async for data in resp.content.iter_any():
                now = time.perf_counter()
                buffer += data
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    self._event(event, now, record, times)
            if buffer.strip():
                self._event(buffer, time.perf_counter(), record, times)

    @staticmethod
    def _event(event: bytes, now: float, record: RequestRecord, times: list[float]) -> None:
        event = event.strip()
        if not event.startswith(b"data:"):
            return  # blank keep-alive or an SSE comment
        payload = event[5:].strip()
        if payload == b"[DONE]":
            return
        data = json.loads(payload)
        if data.get("choices"):
            times.append(now)
        usage = data.get("usage")
        if usage:
            record.output_tokens = int(usage.get("completion_tokens") or 0)
            record.prompt_tokens = int(usage.get("prompt_tokens") or record.prompt_tokens)
        if "error" in data and not data.get("choices"):
            record.error = str(data["error"].get("message", data["error"]) if isinstance(data["error"], dict)
                                else data["error"])[:300]


@dataclass
class _Attempt:
    """One try of a request: whether aiohttp gave it a kept-alive connection, and whether a response began."""

    reused: bool = False
    answered: bool = False


async def _mark_reused(session: aiohttp.ClientSession, context, params) -> None:
    if isinstance(context.trace_request_ctx, _Attempt):
        context.trace_request_ctx.reused = True


class _LoopLag:
    """How late the client's event loop wakes up. Every chunk is timestamped when the loop gets to it, so a
    client that is starved of CPU (or swamped) reports its own delays as the server's latency."""

    PERIOD = 0.01

    def __init__(self) -> None:
        self.worst = 0.0

    async def watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.PERIOD)
            self.worst = max(self.worst, time.perf_counter() - before - self.PERIOD)
