"""What a run found, for the people who decide a rollout: per-suite tables in the terminal, a JSON report for
dashboards, and the figures on JUnit XML.

Suites record figures with the ``glm_record`` fixture. A figure travels as a test's user property named
``glm`` whose value is one JSON object (so pytest-xdist carries it from a worker to the controller, and
``--junitxml`` carries it as a ``<property>``). The controller collects figures and test outcomes from the
reports, and writes everything once at the end. Nothing here ever sees the API key: every string written
goes through :meth:`RunReport.scrub` first.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_glm.judging.case_answers import KNOWN_DEFECT
from pytest_glm.reporting import exchange

if TYPE_CHECKING:
    from pytest_glm.reporting.compare import Comparison

PROPERTY = "glm"
SCHEMA = "pytest-glm/report/1"
#: What a skip for a gap refused once says (serving.capabilities.Capabilities.refuse).
_REFUSED = " (failed once, in "
_PREFIXES = re.compile(r"^(?:Failed|AssertionError|Skipped|Exit|[A-Za-z]+Error): ")
_CASE = re.compile(r"\bcase [a-z0-9_.]+(?: \([^)]*\))?:? ")


def _cause_text(message: str) -> str:
    """The part of a test's message that states its cause: the first listed problem, else the first line,
    without pytest's prefixes or the refusal's back-reference."""
    parts = [p.strip() for p in message.split(" | ") if p.strip()]
    problem = next((p[2:] for p in parts if p.startswith("- ")), parts[0] if parts else "")
    return _PREFIXES.sub("", problem.split(_REFUSED, 1)[0]).strip()


def _cause_key(message: str) -> str:
    """:func:`_cause_text` with what differs between tests of one cause masked: the case, quoted values,
    numbers, parenthesised details."""
    text = _CASE.sub("", _cause_text(message))
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", text)
    text = re.sub(r"\b\w+=(?='…')", "…=", text)
    text = re.sub(r"\([^)]*\)", "(…)", text)
    return re.sub(r"\d+(?:\.\d+)?", "N", text)


#: The note of a known defect in an excused test's message (judging.case_answers.AnswerCache.known).
_DEFECT_NOTE = re.compile(r"\[known defect of vLLM [^:\]]*: ([^\]]*)\]")

SUITES = ("preflight", "tool_calling", "reasoning", "surfaces", "mtp", "slo", "soak")


@dataclass(frozen=True)
class Figure:
    """One measured figure and its threshold.

    :param suite: the suite marker (``slo``, ``mtp``...).
    :param check: what was measured (``balanced-b8``, ``prose``, ``aggregate``).
    :param figure: the figure's name (``p99_ttft_ms``, ``acceptance_rate``).
    :param op: ``>=`` or ``<=`` against ``limit``; ``''`` for a figure reported without a threshold.
    :param source: where ``limit`` came from (``tier interactive``, ``file glm47.toml``, ``reference
        cpu.reference.toml``, ``--glm-baseline``); ``''`` when the gate itself sets it.
    """

    suite: str
    check: str
    figure: str
    value: float | None
    limit: float | None = None
    op: str = ""
    unit: str = ""
    source: str = ""

    @property
    def passed(self) -> bool | None:
        if not self.op or self.limit is None:
            return None
        if self.value is None:
            return False
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    def as_property(self) -> tuple[str, str]:
        return PROPERTY, json.dumps(asdict(self), sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def recorder(record_property: Callable[[str, object], None]) -> Callable[..., Figure]:
    """A ``record(suite, check, figure, value, limit=None, op='', unit='', source='')`` bound to one test."""

    def record(suite: str, check: str, figure: str, value: float | None, limit: float | None = None,
               op: str = "", unit: str = "", source: str = "") -> Figure:
        fig = Figure(suite, check, figure, None if value is None else float(value),
                     None if limit is None else float(limit), op, unit, source)
        record_property(*fig.as_property())
        return fig

    return record


@dataclass
class Outcome:
    nodeid: str
    suite: str
    outcome: str = "passed"
    duration_s: float = 0.0
    message: str = ""
    exchange: dict[str, Any] | None = None  # what a failed correctness test asked and got (reporting.exchange)


def suite_of(nodeid: str, keywords: Any = ()) -> str:
    """The suite a test belongs to: a shipped suite module's (``.../test_mtp.py::...`` is ``mtp``,
    whatever its parameters are called: ``test_mtp_acceptance[reasoning]`` is not a reasoning test);
    elsewhere, a test of one's own, its suite marker."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
    name = module.removeprefix("test_").removesuffix(".py")
    if name in SUITES:
        return name
    return next((s for s in SUITES if s in keywords), "")


@dataclass
class RunReport:
    """Figures and outcomes of one run, gathered from test reports (also those xdist workers send)."""

    scrub_secret: str | None = None
    figures: list[Figure] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def scrub(self, text: str) -> str:
        return text.replace(self.scrub_secret, "***") if self.scrub_secret and text else text

    def add(self, report: Any) -> None:
        """Take one phase report (setup, call, teardown) of a test."""
        suite = suite_of(report.nodeid, getattr(report, "keywords", {}))
        if not suite:
            return
        outcome = self.outcomes.setdefault(report.nodeid, Outcome(report.nodeid, suite))
        outcome.duration_s += float(getattr(report, "duration", 0.0) or 0.0)
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome.outcome = ("error" if report.when == "setup" and report.failed else
                               ("known_defect" if KNOWN_DEFECT in str(report.wasxfail) else "tolerated")
                               if hasattr(report, "wasxfail") else report.outcome)
            if not report.passed:
                outcome.message = self.scrub(_short(report))
        elif report.when == "teardown" and report.failed and outcome.outcome == "passed":
            outcome.outcome, outcome.message = "error", self.scrub(_short(report))
        for name, value in getattr(report, "user_properties", ()):
            if name == PROPERTY and report.when == "call":
                self.figures.append(Figure(**json.loads(value)))
            elif name == exchange.PROPERTY and report.when == "call":
                outcome.exchange = json.loads(value)

    # -- views ---------------------------------------------------------------------------------------
    def counts(self, suite: str | None = None) -> dict[str, int]:
        c = Counter(o.outcome for o in self.outcomes.values() if suite is None or o.suite == suite)
        return {k: c.get(k, 0) for k in ("passed", "failed", "error", "skipped", "tolerated", "known_defect")}

    def verdict(self, comparison: Comparison | None = None) -> str:
        """``fail`` if a test failed, a figure missed its threshold, or the comparison with a stored run
        (``--glm-compare``) found a new failure or a figure worse than its tolerance."""
        failed = _suite_failed(self.counts(), self.figures) or bool(comparison is not None and comparison.failed)
        return "fail" if failed else "pass"

    def causes(self, limit: int = 5) -> list[dict[str, Any]]:
        """Failures (and the skips a refused gap caused) grouped by what they share: one server error, one
        kind of finding, one missing feature. Largest first, at most ``limit``, each with its count and an
        example, so that one broken thing reads as one line, not as the 126 tests it broke."""
        groups: dict[str, list[Outcome]] = {}
        for o in self.outcomes.values():
            if o.outcome in ("failed", "error") or (o.outcome == "skipped" and _REFUSED in o.message):
                groups.setdefault(_cause_key(o.message), []).append(o)
        out = []
        for members in sorted(groups.values(), key=len, reverse=True)[:limit]:
            first = next((o for o in members if o.outcome != "skipped"), members[0])
            kinds = Counter(o.outcome for o in members)
            out.append({"count": len(members), "outcomes": dict(kinds), "cause": _cause_text(first.message),
                        "example": first.nodeid})
        return out

    def cause_lines(self) -> list[str]:
        """The terminal's view of :meth:`causes`."""
        lines = []
        for c in self.causes():
            tally = ", ".join(f"{n} {k}" for k, n in sorted(c["outcomes"].items()))
            lines.append(f"{c['count']:>4} test{'s' if c['count'] > 1 else ' '} ({tally}): {c['cause'][:400]}")
            lines.append(f"       e.g. {c['example'].split('::', 1)[-1]}")
        return [self.scrub(line) for line in lines]

    def known_defects(self, suite: str | None = None) -> dict[str, int]:
        """Each known vLLM defect the run hit (its note, once) and how many tests it excused."""
        notes: Counter[str] = Counter()
        for o in self.outcomes.values():
            if o.outcome == "known_defect" and (suite is None or o.suite == suite):
                found = _DEFECT_NOTE.search(o.message)
                notes[found.group(1) if found else o.message[:200]] += 1
        return dict(notes)

    def suites_seen(self) -> list[str]:
        seen = {o.suite for o in self.outcomes.values()}
        return [s for s in SUITES if s in seen]

    def to_json(self, deployment: dict[str, Any] | None, comparison: Comparison | None = None) -> dict[str, Any]:
        suites = {}
        for suite in self.suites_seen():
            outcomes = [o for o in self.outcomes.values() if o.suite == suite]
            figures = [f for f in self.figures if f.suite == suite]
            counts = self.counts(suite)
            suites[suite] = {
                "verdict": "fail" if _suite_failed(counts, figures) else "pass",
                "tests": counts,
                "figures": [f.to_json() for f in figures],
                "cases": [{"nodeid": o.nodeid, "outcome": o.outcome, "duration_s": round(o.duration_s, 3),
                           "message": o.message, **({"exchange": o.exchange} if o.exchange else {})}
                          for o in outcomes],
            }
        data = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
                "duration_s": round(time.time() - self.started, 1), "verdict": self.verdict(comparison),
                "tests": self.counts(), "causes": self.causes(), "deployment": deployment, "suites": suites}
        if comparison is not None:
            data["comparison"] = comparison.to_json()
        return json.loads(self.scrub(json.dumps(data)))

    def write_json(self, path: Path, deployment: dict[str, Any] | None, comparison: Comparison | None = None) -> None:
        self.write_data(path, self.to_json(deployment, comparison))

    @staticmethod
    def write_data(path: Path, data: dict[str, Any]) -> None:
        """Write a :meth:`to_json` view (already scrubbed) as the JSON report."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def tables(self) -> list[tuple[str, list[str]]]:
        """(title, lines) per suite: every figure with its threshold and verdict, then the test counts."""
        out = []
        for suite in self.suites_seen():
            figures = [f for f in self.figures if f.suite == suite]
            c = self.counts(suite)
            lines = []
            if _as_matrix(figures):
                lines += _matrix(figures)
            elif figures:
                w_check = max(len("check"), *(len(f.check) for f in figures))
                w_fig = max(len("figure"), *(len(f.figure) for f in figures))
                lines.append(f"{'check':<{w_check}}  {'figure':<{w_fig}}  {'measured':>12}  {'threshold':>14}  result")
                for f in figures:
                    threshold = f"{f.op} {_num(f.limit)}" if f.op and f.limit is not None else ""
                    result = {True: "pass", False: "FAIL", None: "-"}[f.passed]
                    value = "n/a" if f.value is None else _num(f.value)
                    source = f"  ({f.source})" if f.source and threshold else ""
                    lines.append(f"{f.check:<{w_check}}  {f.figure:<{w_fig}}  {value + f.unit:>12}  {threshold:>14}  "
                                 f"{result}{source}")
            tally = ", ".join(f"{n} {k}" for k, n in c.items() if n)
            lines.append(f"tests: {tally or 'none'}")
            for o in self.outcomes.values():
                if o.suite == suite and o.outcome in ("failed", "error"):
                    lines.append(f"  {o.outcome.upper()} {o.nodeid.split('::', 1)[-1]}: {o.message[:160]}")
            lines += [f"  KNOWN DEFECT ({n} test{'s' if n > 1 else ''}): {note}"
                      for note, n in self.known_defects(suite).items()]
            ran = c["passed"] + c["failed"] + c["error"] + c["tolerated"] + c["known_defect"]
            verdict = "FAIL" if _suite_failed(c, figures) else "pass" if ran else "not run (every test skipped)"
            out.append((f"pytest-glm: {suite} — {verdict}",
                        [self.scrub(line) for line in lines]))
        return out


#: Column headers of the matrix layout for figures whose names are long.
_SHORT = {"output_throughput": "out tok/s", "request_throughput": "req/s", "total_token_throughput": "tok/s",
          "request_goodput": "good req/s", "goodput_ratio": "goodput", "client_lag_ms": "client lag",
          "retried_requests": "retried", "prefix_cache_hit_rate": "cache hits"}
_STATS = {"median": "med", "mean": "mean", "p90": "p90", "p99": "p99"}


def _as_matrix(figures: list[Figure]) -> bool:
    """Many checks measuring the same figures (the latency cells): one row per check reads better than one
    row per figure."""
    checks = {f.check for f in figures}
    return len(checks) >= 4 and len(figures) >= 4 * len(checks)


def _header(figure: str) -> str:
    if figure in _SHORT:
        return _SHORT[figure]
    stat, _, rest = figure.partition("_")
    if stat in _STATS and rest.endswith("_ms"):
        return f"{rest.removesuffix('_ms')} {_STATS[stat]}"
    return figure


def _matrix(figures: list[Figure]) -> list[str]:
    """A row of measured values per check, and under it a row of its limits; ``!`` marks a value beyond."""
    columns = list(dict.fromkeys(f.figure for f in figures))
    checks = list(dict.fromkeys(f.check for f in figures))
    cell = {(f.check, f.figure): f for f in figures}

    def measured(f: Figure | None) -> str:
        if f is None:
            return ""
        return ("n/a" if f.value is None else _num(f.value)) + ("!" if f.passed is False else "")

    def limit(f: Figure | None) -> str:
        return f"{f.op}{_num(f.limit)}" if f is not None and f.op and f.limit is not None else ""

    def sources(check: str) -> str:
        found = dict.fromkeys(f.source for f in figures if f.check == check and f.source and f.op)
        return f" ({', '.join(found)})" if found else ""

    rows = [("check", [_header(c) for c in columns])]
    for check in checks:
        rows.append((check, [measured(cell.get((check, c))) for c in columns]))
        rows.append((f"  limit{sources(check)}", [limit(cell.get((check, c))) for c in columns]))
    w_first = max(len(r[0]) for r in rows)
    widths = [max(len(r[1][i]) for r in rows) for i in range(len(columns))]
    lines = [f"{first:<{w_first}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths, strict=True))
             for first, values in rows]
    return [*lines, "latencies (ttft, tpot, itl, e2el, client lag) in ms; ! marks a figure beyond its limit"]


def _suite_failed(counts: dict[str, int], figures: list[Figure]) -> bool:
    return bool(counts["failed"] or counts["error"] or any(f.passed is False for f in figures))


def _num(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _short(report: Any) -> str:
    if getattr(report, "wasxfail", ""):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    text = getattr(report, "longreprtext", "") or ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    errors = [ln[2:].strip() for ln in lines if ln.startswith("E ")]
    return " | ".join(errors[:3]) if errors else (lines[0] if lines else "")
