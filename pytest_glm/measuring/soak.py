"""The soak: the correctness cases as sustained mixed traffic for a set duration, a sample of the answers
checked exactly, the server watched throughout.

A deployment can pass every short check and still break under hours of traffic: the server dies after
minutes (a leak, a crashed engine core), answers go wrong once the KV cache is full and blocks are evicted
and reused, latency drifts upward. The soak sends the tool-calling, reasoning and thinking-off prose cases,
streamed and not, in one fixed shuffled rotation, ``concurrency`` requests in flight at all times, and:

- counts every failed request and keeps the first error texts;
- watches the server: a launched process that exits, or ``/health`` that stops answering twice in a row,
  ends the soak early with the server's logged cause;
- checks one answer in :data:`SAMPLE_EVERY` exactly (faithfulness: the served answer against the model's
  own token ids), and judges its behaviour, to be compared afterwards with the one-at-a-time verdict of the
  same (case, stream); the sample shifts by one position per pass of the rotation, so that every job of
  the rotation is checked once every :data:`SAMPLE_EVERY` passes;
- prints one progress line per interval (:func:`interval_for`);
- measures drift: median and p90 of the end-to-end latency (and of the TTFT of streamed requests) of the
  requests started in the first tenth of the run against those started in the last tenth, as a ratio.
  Each tenth holds the same mix of cases once it spans a whole pass of the rotation or more.

The figures are computed here; the suite (``suites/test_soak.py``) decides what fails.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_glm.judging.answers import Answer, StreamAssembler, from_response
from pytest_glm.judging.cases import Case

#: One answer in this many gets the exact faithfulness check and a behaviour verdict.
SAMPLE_EVERY = 4
#: Progress is printed every this many seconds, or ten times in a soak shorter than ten of these.
PROGRESS_EVERY_S = 30.0
#: The most seconds between two looks at the server (its process, ``/health``).
WATCH_EVERY_S = 5.0
#: ``/health`` failures in a row that count as a dead server (one may be a blip under load).
HEALTH_FAILURES = 2
#: Seconds a worker waits after a failed request: a server that fails everything at once is not hammered.
FAILURE_PAUSE_S = 0.5
#: How many distinct error texts of failed requests are kept.
FIRST_ERRORS = 5
#: The share of the run at each end that the drift figures compare.
DRIFT_SHARE = 0.1

Say = Callable[[str], None]


def interval_for(duration_s: float) -> float:
    """Seconds between progress lines: :data:`PROGRESS_EVERY_S`, or a tenth of a shorter soak."""
    return min(PROGRESS_EVERY_S, duration_s / 10)


def rotation(cases: Sequence[Case], seed: int = 0) -> list[tuple[Case, bool]]:
    """Every (case, streamed) job once, in a fixed shuffled order (the same for every run)."""
    jobs = [(c, s) for c in cases for s in (False, True)]
    random.Random(seed).shuffle(jobs)
    return jobs


def is_sampled(seq: int, length: int, every: int = SAMPLE_EVERY) -> bool:
    """Whether the ``seq``-th request (0-based) of a rotation of ``length`` jobs gets checked: one in
    ``every``, shifted by one per pass (the ``j``-th job of the ``k``-th pass when ``j + k`` is a multiple
    of ``every``), so that every job is checked once in ``every`` passes, whatever the rotation's length."""
    length = max(length, 1)
    return (seq % length + seq // length) % every == 0


def quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation between order statistics (numpy's default);
    None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Drift:
    """How one latency moved over the run: its median and p90 in the first and the last tenth."""

    first_p50: float | None
    last_p50: float | None
    first_p90: float | None
    last_p90: float | None
    first_n: int = 0
    last_n: int = 0

    @staticmethod
    def _ratio(last: float | None, first: float | None) -> float | None:
        return None if last is None or not first else last / first

    @property
    def p50_ratio(self) -> float | None:
        """Median of the last tenth / median of the first (1.0: no drift; > 1: slower by the end)."""
        return self._ratio(self.last_p50, self.first_p50)

    @property
    def p90_ratio(self) -> float | None:
        return self._ratio(self.last_p90, self.first_p90)


def drift(points: Sequence[tuple[float, float]], run_s: float, share: float = DRIFT_SHARE) -> Drift:
    """Drift of ``points`` ((start offset in the run, value) pairs) over a run of ``run_s`` seconds: the
    values of the points started in the first ``share`` of it against those started in the last."""
    first = [v for t, v in points if t < run_s * share]
    last = [v for t, v in points if t >= run_s * (1 - share)]
    return Drift(quantile(first, 0.5), quantile(last, 0.5), quantile(first, 0.9), quantile(last, 0.9),
                 len(first), len(last))


@dataclass
class Request:
    """One request of the soak: when it started and ended (seconds into the run), its first output
    (streamed only) and its error ('' when it succeeded)."""

    case_id: str
    stream: bool
    start: float
    end: float = 0.0
    ttft: float | None = None
    error: str = ""

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Sample:
    """A checked answer: its faithfulness findings (None: no token ids came back) and behaviour verdict."""

    case: Case
    stream: bool
    at: float  # seconds into the run
    findings: list[str] | None
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    """What a soak did and found; :meth:`problems` is what the suite fails on."""

    planned_s: float
    concurrency: int
    jobs: int
    sample_every: int = SAMPLE_EVERY
    run_s: float = 0.0  # until the last request was sent (the duration, or less if the server died)
    total_s: float = 0.0  # the in-flight requests included
    requests: list[Request] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    death: str | None = None
    changes: list[str] = field(default_factory=list)
    progress: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Request]:
        """The requests that ended (a request cut in flight by the server's death did not)."""
        return [r for r in self.requests if r.end]

    @property
    def failed(self) -> list[Request]:
        return [r for r in self.requests if r.error]

    @property
    def findings(self) -> list[str]:
        return [f"{s.case.id} ({_mode(s.stream)}) at {_clock(s.at)}: {f}" for s in self.samples for f in s.findings or []]

    @property
    def unchecked(self) -> int:
        """Sampled answers that came without token ids (judged on behaviour only)."""
        return sum(s.findings is None for s in self.samples)

    def latency_drift(self) -> Drift:
        return drift([(r.start, r.latency) for r in self.requests if not r.error], self.run_s)

    def ttft_drift(self) -> Drift:
        return drift([(r.start, r.ttft) for r in self.requests if not r.error and r.ttft is not None], self.run_s)

    def problems(self) -> list[str]:
        """Everything the soak fails on, one line each (the first few of each kind)."""
        out = []
        if self.death:
            out.append(f"the server died {_clock(self.run_s)} into the soak: {self.death}")
        if self.failed:
            out.append(f"{len(self.failed)} of {len(self.requests)} requests failed; first errors: "
                       + " | ".join(self.first_errors))
        if self.findings:
            out.append(f"{len(self.findings)} faithfulness finding(s) in {len(self.samples)} checked answers: "
                       + "; ".join(self.findings[:FIRST_ERRORS]))
        if self.changes:
            out.append(f"{len(self.changes)} behaviour verdict(s) differ from the one-at-a-time verdict: "
                       + "; ".join(self.changes[:FIRST_ERRORS]))
        return out


def _mode(stream: bool) -> str:
    return "stream" if stream else "plain"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _drift_text(name: str, moved: Drift) -> str:
    if moved.p50_ratio is None:
        return f"{name} n/a ({moved.first_n} and {moved.last_n} requests started in the first and last tenth)"
    return (f"{name} p50 {moved.p50_ratio:.2f}x, p90 {moved.p90_ratio or 0:.2f}x "
            f"({moved.first_n} and {moved.last_n} requests)")


def _has_output(chunk: Any) -> bool:
    """The chunk carries generated tokens (their ids, content, reasoning or a tool-call fragment), not only
    the role: a first token that the parser holds back (``<think>``) still comes with its id."""
    for choice in chunk.choices or []:
        if (getattr(choice, "model_extra", None) or {}).get("token_ids"):
            return True
        delta = choice.delta
        extra = (getattr(delta, "model_extra", None) or {}) if delta is not None else {}
        if delta is not None and (delta.content or delta.tool_calls or extra.get("reasoning")
                                  or extra.get("reasoning_content")):
            return True
    return False


async def _ask(client: Any, case: Case, model: str, stream: bool, record: Request, began: float) -> Answer:
    """One request for ``case``, timed into ``record`` (its timeout as judging.chat gives it)."""
    request = case.request(model)
    if isinstance(client.timeout, (int, float)):
        request["timeout"] = case.request_timeout(float(client.timeout))
    if not stream:
        return from_response(await client.chat.completions.create(**request))
    assembler = StreamAssembler()
    chunks = await client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    async for chunk in chunks:
        if record.ttft is None and _has_output(chunk):
            record.ttft = time.perf_counter() - began - record.start
        assembler.add(chunk)
    return assembler.answer()


class Soak:
    """One soak of a deployment.

    :param answers: the run's :class:`~pytest_glm.judging.case_answers.AnswerCache` (exact findings,
        behaviour verdicts, the one-at-a-time answers to compare with).
    :param deployment: the deployment under test (``check_alive()``, ``server_error()``, ``endpoint``).
    :param say: prints one progress line.
    """

    def __init__(self, answers: Any, deployment: Any, cases: Sequence[Case], duration_s: float, concurrency: int,
                 say: Say = print, sample_every: int = SAMPLE_EVERY, interval_s: float | None = None) -> None:
        self.answers = answers
        self.deployment = deployment
        self.endpoint = deployment.endpoint
        self.jobs = rotation(cases)
        self.duration_s = duration_s
        self.concurrency = max(concurrency, 1)
        self.say = say
        self.sample_every = sample_every
        self.interval_s = interval_s or interval_for(duration_s)
        self.result = SoakResult(duration_s, self.concurrency, len(self.jobs), sample_every)
        self._health_failures = 0

    def run(self) -> SoakResult:
        """Soak, then compare the sampled verdicts with the one-at-a-time ones (not after a death: there
        is no server left to ask)."""
        result = self.result
        if not self.jobs:
            return result
        self.answers.tag_ids()  # once, before the checks run in threads
        self.say(f"soak: {_clock(self.duration_s)} of {len(self.jobs)} jobs in rotation at concurrency "
                 f"{self.concurrency}, 1 answer in {self.sample_every} checked exactly")
        asyncio.run(self._soak())
        self.say(f"soak: {'stopped' if result.death else 'done'} after {_clock(result.total_s)}: "
                 f"{len(result.requests)} requests, {len(result.failed)} failed, {len(result.samples)} checked, "
                 f"{len(result.findings)} findings")
        self.say(f"soak: drift, last tenth over first: {_drift_text('latency', result.latency_drift())}; "
                 f"{_drift_text('TTFT (streamed)', result.ttft_drift())}")
        if result.death is None:
            result.changes = self._changes()
        return result

    # -- the load ----------------------------------------------------------------------------------
    async def _soak(self) -> None:
        result = self.result
        began = time.perf_counter()
        client = self.endpoint.async_client()
        seq = itertools.count()
        checks: list[asyncio.Task[None]] = []
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set() and time.perf_counter() - began < self.duration_s:
                i = next(seq)
                case, stream = self.jobs[i % len(self.jobs)]
                record = Request(case.id, stream, time.perf_counter() - began)
                result.requests.append(record)
                try:
                    answer = await _ask(client, case, self.endpoint.model, stream, record, began)
                except Exception as exc:  # counted and reported; the soak goes on
                    record.end = time.perf_counter() - began
                    record.error = f"{case.id} ({_mode(stream)}): {type(exc).__name__}: {exc}"
                    if len(result.first_errors) < FIRST_ERRORS and record.error not in result.first_errors:
                        result.first_errors.append(record.error)
                    await asyncio.sleep(FAILURE_PAUSE_S)
                    continue
                record.end = time.perf_counter() - began  # left 0 when cancelled in flight (a death)
                if is_sampled(i, len(self.jobs), self.sample_every):
                    checks.append(asyncio.create_task(asyncio.to_thread(self._check, case, stream, answer, record.end)))

        workers = {asyncio.create_task(worker()) for _ in range(self.concurrency)}
        next_line, reported = self.interval_s, 0
        try:
            pending = workers
            while pending:
                _, pending = await asyncio.wait(pending, timeout=min(WATCH_EVERY_S, self.interval_s))
                now = time.perf_counter() - began
                if pending and result.death is None:
                    result.death = await self._death()
                if result.death is not None:
                    stop.set()
                    for task in pending:
                        task.cancel()
                    await asyncio.gather(*pending, return_exceptions=True)
                    result.requests = result.done  # those cut in flight are not counted
                    result.run_s = min(now, self.duration_s)
                    break
                while now >= next_line and next_line <= self.duration_s + 0.5:
                    reported = self._progress(next_line, reported)
                    next_line += self.interval_s
            if result.death is None:
                result.run_s = min(time.perf_counter() - began, self.duration_s)
            for outcome in await asyncio.gather(*checks, return_exceptions=True):
                if isinstance(outcome, BaseException) and result.death is None:  # the check itself could not run (e.g. /detokenize)
                    text = f"an exact check could not run: {type(outcome).__name__}: {outcome}"
                    result.requests.append(Request("(check)", False, result.run_s, result.run_s, error=text))
                    if len(result.first_errors) < FIRST_ERRORS:
                        result.first_errors.append(text)
        finally:
            result.total_s = time.perf_counter() - began
            await client.close()

    def _progress(self, at: float, since: int) -> int:
        """Print the progress line at ``at`` seconds; returns the requests done so far."""
        result = self.result
        done = [r for r in result.requests if r.end]
        interval = [r.latency for r in done if at - self.interval_s <= r.end < at and not r.error]
        p50 = quantile(interval, 0.5)
        line = (f"soak {_clock(at)}/{_clock(self.duration_s)}: {len(done)} requests done (+{len(done) - since}), "
                f"{len(result.failed)} failed, {len(result.samples)} checked, {len(result.findings)} findings, "
                f"p50 latency {'-' if p50 is None else f'{p50:.2f} s'} over the last {self.interval_s:g} s")
        result.progress.append(line)
        self.say(line)
        return len(done)

    async def _death(self) -> str | None:
        """Why the server is gone (its exit, or ``/health`` failing :data:`HEALTH_FAILURES` times in a
        row), with the cause its log gives; None while it serves."""
        try:
            self.deployment.check_alive()
        except Exception as exc:
            return self._cause(str(getattr(exc, "summary", None) or str(exc).splitlines()[0]))
        healthy = await asyncio.to_thread(self.endpoint.health)
        self._health_failures = 0 if healthy else self._health_failures + 1
        if self._health_failures >= HEALTH_FAILURES:
            return self._cause(f"GET /health stopped answering ({HEALTH_FAILURES} checks in a row failed)")
        return None

    def _cause(self, what: str) -> str:
        logged = self.deployment.server_error() if hasattr(self.deployment, "server_error") else ""
        log = getattr(self.deployment, "log_path", None)
        return what + (f"; the server log says: {logged}" if logged else "") + (f" (full log: {log})" if log else "")

    # -- the checks --------------------------------------------------------------------------------
    @staticmethod
    def require_reasoning(case: Case) -> bool:
        """As the reasoning suite judges its cases: thinking on must come with reasoning."""
        return case.suite == "reasoning"

    def _check(self, case: Case, stream: bool, answer: Answer, at: float) -> None:
        """The exact findings and the behaviour verdict of a sampled answer (in a thread: it asks the
        server to detokenize, and a matcher may run a program)."""
        findings = self.answers.unexcused(case, self.answers.findings_of(case, answer))
        verdict = self.answers.judge(case, answer, findings, require_reasoning=self.require_reasoning(case))
        self.result.samples.append(Sample(case, stream, at, None if findings is None else [str(f) for f in findings],
                                          verdict.ok, list(verdict.problems) or ([verdict.inconclusive]
                                                                                 if verdict.inconclusive else [])))

    def _changes(self) -> list[str]:
        """Sampled verdicts that differ from the one-at-a-time verdict of the same (case, stream), one line
        per (case, stream) with how often and from when."""
        by_job: dict[tuple[str, bool], list[Sample]] = {}
        for sample in sorted(self.result.samples, key=lambda s: s.at):
            by_job.setdefault((sample.case.id, sample.stream), []).append(sample)
        out = []
        for (_, stream), samples in by_job.items():
            case = samples[0].case
            alone = self.answers.verdict(case, stream, require_reasoning=self.require_reasoning(case))
            differ = [s for s in samples if s.ok != alone.ok]
            if differ:
                first = differ[0]
                out.append(f"{case.id} ({_mode(stream)}): {'matches' if alone.ok else 'misses'} alone, "
                           f"{'matches' if first.ok else 'misses'} in {len(differ)} of {len(samples)} checked "
                           f"soak answers (first at {_clock(first.at)}): "
                           f"{first.problems or alone.problems or alone.inconclusive}")
        return out
