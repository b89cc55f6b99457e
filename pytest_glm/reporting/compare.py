"""``--glm-compare``: what changed since an earlier run of the gate, test by test and figure by figure.

The check to run when a new vLLM wheel comes out: keep the ``--glm-report`` of the deployment in service,
run the gate on the new wheel with ``--glm-compare OLD.json``. A test that passed and now fails, or a figure
that moved the wrong way by more than its tolerance, fails the run; what was fixed or got better is shown.
Both sides are ``--glm-report`` documents, so this module is pure: reading a stored report and diffing two.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_glm.catalog.figures import beyond, lower_is_better, tolerance
from pytest_glm.exceptions import ConfigError

OPTION = "--glm-compare"
SCHEMA_PREFIX = "pytest-glm/report/"
READABLE_SCHEMAS = ("pytest-glm/report/1",)

#: Figures that say nothing about the deployment: the client's own delay, its retries, counts of work done,
#: and counts of the model's own choices (batch variance, thinking or not, answers cut at max_tokens).
NOT_COMPARED = frozenset({"client_lag_ms", "retried_requests", "drafts", "inconclusive_answers", "behaviour_changes",
                          "answers_without_thinking"})

#: Changes of one kind listed in the terminal (a server that died turns every test into a new failure).
SHOWN_PER_KIND = 25

#: Kinds of change, in the order the terminal shows them; the first two fail the run.
FAILING = ("new failure", "worse")
KINDS = (*FAILING, "fixed", "better", "outcome changed", "new test", "gone")


@dataclass(frozen=True)
class Change:
    """One difference between the stored run and this one.

    :param kind: one of :data:`KINDS`.
    :param what: a test (``test_mtp.py::test_mtp_acceptance[prose]``) or a figure (``slo balanced-b8
        median_ttft_ms``).
    :param before: the old outcome or value (None: absent).
    :param after: the new outcome or value (None: absent).
    :param detail: why it counts (the move and its tolerance, the failure's first line).
    :param known: the known behaviour of the new vLLM version that explains it (pytest_glm.catalog.versions), if any.
    """

    kind: str
    what: str
    before: str | float | None
    after: str | float | None
    detail: str = ""
    known: str = ""

    def line(self, mark: str = "") -> str:
        return (f"{self.what}: {_show(self.before)} -> {_show(self.after)}" + (f"  {mark}" if mark else "")
                + (f"  ({self.detail})" if self.detail else ""))


@dataclass
class Comparison:
    """The differences between a stored report and this run's, and whether they fail the run."""

    path: str
    before: dict[str, Any]  # the stored run: created, model, profile, vllm_version, verdict
    after: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    unchanged_tests: int = 0
    unchanged_figures: int = 0
    still_failing: int = 0
    not_run: list[str] = field(default_factory=list)  # suites the stored run has and this run did not run

    @property
    def failed(self) -> bool:
        return any(c.kind in FAILING for c in self.changes)

    def of(self, kind: str) -> list[Change]:
        return [c for c in self.changes if c.kind == kind]

    def counts(self) -> dict[str, int]:
        return {kind: len(self.of(kind)) for kind in KINDS}

    def title(self) -> str:
        versions = f"vLLM {self.before.get('vllm_version') or '?'} -> {self.after.get('vllm_version') or '?'}"
        return f"pytest-glm: compared with {self.path} ({versions}) — {'FAIL' if self.failed else 'pass'}"

    def lines(self) -> list[str]:
        out = [f"stored run: {self.before.get('created', '?')}, {self.before.get('model')} on "
               f"{self.before.get('profile')}, verdict {self.before.get('verdict')}"]
        known = list(dict.fromkeys(c.known for c in self.changes if c.known))
        for kind in KINDS:
            changes = self.of(kind)
            if changes:
                out.append(f"{kind} ({len(changes)}):")
                out += [f"  {c.line(f'[known: {known.index(c.known) + 1}]' if c.known else '')}"
                        for c in changes[:SHOWN_PER_KIND]]
                if len(changes) > SHOWN_PER_KIND:
                    out.append(f"  ... and {len(changes) - SHOWN_PER_KIND} more (every change is in the JSON report)")
        if known:
            out.append(f"known behaviours of vLLM {self.after.get('vllm_version')} behind the changes marked [known: N]:")
            out += [f"  {i}. {note}" for i, note in enumerate(known, 1)]
        out.append(f"unchanged: {self.unchanged_tests} tests, {self.unchanged_figures} figures; "
                   f"failing in both runs: {self.still_failing}")
        if self.not_run:
            out.append(f"not run this time (not compared): {', '.join(self.not_run)}")
        return out

    def to_json(self) -> dict[str, Any]:
        return {"baseline": {"path": self.path, **self.before}, "verdict": "fail" if self.failed else "pass",
                "counts": self.counts(), "changes": [asdict(c) for c in self.changes],
                "unchanged": {"tests": self.unchanged_tests, "figures": self.unchanged_figures},
                "failing_in_both": self.still_failing, "not_run": self.not_run}


def load(path: Path) -> dict[str, Any]:
    """A stored ``--glm-report``; a ConfigError naming the file for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(OPTION, f"{path} does not exist", "pass a report written by --glm-report FILE") from exc
    except OSError as exc:
        raise ConfigError(OPTION, f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(OPTION, f"{path} is not JSON ({exc})", "pass a report written by --glm-report FILE") from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        hint = ("that is a pytest-benchmark file: it goes to --glm-baseline" if isinstance(data, dict) and "benchmarks" in data
                else "pass a report written by --glm-report FILE")
        raise ConfigError(OPTION, f"{path} is not a pytest-glm report (no 'schema': '{READABLE_SCHEMAS[-1]}')", hint)
    if schema not in READABLE_SCHEMAS:
        raise ConfigError(OPTION, f"{path} has report schema {schema!r}, which this pytest-glm cannot read "
                                  f"(it reads {', '.join(READABLE_SCHEMAS)})", "upgrade pytest-glm")
    if not isinstance(data.get("deployment"), dict) or not isinstance(data.get("suites"), dict):
        raise ConfigError(OPTION, f"{path} is a report without a deployment or suites (a run that tested nothing)")
    return data


def refuse_other_target(stored: Mapping[str, Any], path: Path, model: str | None, profile: str | None) -> None:
    """A run of another model or profile is no baseline: its figures and failures would all be noise."""
    dep = stored["deployment"]
    mine = {"model": model, "profile": profile}
    for key in ("model", "profile"):
        if mine[key] is not None and dep.get(key) != mine[key]:
            raise ConfigError(OPTION, f"{path} is a run of {dep.get('model')} on {dep.get('profile')}; this run tests "
                                      f"{model or dep.get('model')} on {profile or dep.get('profile')}",
                              f"compare runs of the same model and profile (its {key} differs)")


def compare(stored: Mapping[str, Any], current: Mapping[str, Any], path: str,
            tolerance: Mapping[str, float] | None = None,
            explain: Callable[[str], str | None] | None = None) -> Comparison:
    """Every difference between two reports of the same model and profile.

    :param tolerance: how much a figure may move the wrong way (a share of the old value), by figure name
        or ``default`` (the profile's ``[baseline_tolerance]`` table); a negative value leaves it out.
    :param explain: the known cause of a change that fails the run, from the test id or figure key.
    """
    tolerance = tolerance or {"default": 0.10}
    result = Comparison(path=path, before=_summary(stored), after=_summary(current))
    old_suites, new_suites = stored.get("suites", {}), current.get("suites", {})
    result.not_run = [s for s in old_suites if s not in new_suites]
    both = [s for s in new_suites if s in old_suites]
    old_cases = {_test_key(c["nodeid"]): c for s in both for c in old_suites[s].get("cases", [])}
    new_cases = {_test_key(c["nodeid"]): c for s in both for c in new_suites[s].get("cases", [])}
    for key in [*new_cases, *(k for k in old_cases if k not in new_cases)]:
        change = _test_change(key, old_cases.get(key), new_cases.get(key))
        if change is not None:
            result.changes.append(change)
        elif _failing(new_cases[key]["outcome"]):
            result.still_failing += 1
        else:
            result.unchanged_tests += 1
    old_figs = {_figure_key(f): f for s in both for f in old_suites[s].get("figures", [])}
    for fig in (f for s in both for f in new_suites[s].get("figures", [])):
        key = _figure_key(fig)
        if fig["figure"] in NOT_COMPARED or key not in old_figs:
            continue
        change = figure_change(key, old_figs[key], fig, tolerance)
        if change is None:
            result.unchanged_figures += 1
        else:
            result.changes.append(change)
    if explain is not None:
        result.changes = [replace(c, known=explain(c.what) or "") if c.kind in FAILING else c for c in result.changes]
    result.changes.sort(key=lambda c: KINDS.index(c.kind))
    return result


def _summary(report: Mapping[str, Any]) -> dict[str, Any]:
    dep = report.get("deployment") or {}
    return {"created": report.get("created"), "model": dep.get("model"), "profile": dep.get("profile"),
            "vllm_version": dep.get("vllm_version"), "verdict": report.get("verdict")}


def _test_key(nodeid: str) -> str:
    """The node id without its directory, so that runs from another working directory still line up."""
    path, sep, rest = nodeid.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest


def _figure_key(fig: Mapping[str, Any]) -> str:
    return f"{fig['suite']} {fig['check']} {fig['figure']}"


def _failing(outcome: str | None) -> bool:
    return outcome in ("failed", "error")


def _test_change(key: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Change | None:
    before = old["outcome"] if old else None
    after = new["outcome"] if new else None
    message = (new or {}).get("message", "")[:200]
    if new is None:
        return Change("gone", key, before, None, "in the stored run, not in this one")
    if _failing(after) and not _failing(before):
        return Change("new failure", key, before, after, message)
    if old is None:
        return Change("new test", key, None, after, message)
    if _failing(before) and after == "passed":
        return Change("fixed", key, before, after)
    if before != after and not (_failing(before) and _failing(after)):
        return Change("outcome changed", key, before, after, message)
    return None


def figure_change(key: str, old: Mapping[str, Any], new: Mapping[str, Any],
                  table: Mapping[str, float]) -> Change | None:
    """How one figure moved between two runs (records with ``figure``, ``value`` and optionally ``op``,
    ``limit``, ``passed``), or None when within its tolerance: the one judgement behind ``--glm-compare``
    and ``--glm-baseline``."""
    before, after = old.get("value"), new.get("value")
    was, now = old.get("passed"), new.get("passed")
    limit = f"limit {new['op']} {_show(new.get('limit'))}" if new.get("op") and new.get("limit") is not None else ""
    if now is False and was is not False:
        return Change("new failure", key, before, after, limit)
    if was is False and now is True:
        return Change("fixed", key, before, after, limit)
    tol = tolerance(new["figure"], table)
    if before is None or after is None or tol < 0 or before == after:
        return None
    lower = lower_is_better(new["figure"], new.get("op") or "")
    move = (after / before - 1) if before else float("inf")
    if beyond(before, after, tol, lower):
        return Change("worse", key, before, after, f"{_pct(move)}, tolerance {'+' if lower else '-'}{tol:.0%}")
    if beyond(before, after, tol, not lower):
        return Change("better", key, before, after, _pct(move))
    return None


def _pct(move: float) -> str:
    return "new" if move == float("inf") else f"{move:+.0%}"


def _show(value: str | float | None) -> str:
    if value is None:
        return "absent"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)
