"""Did the model act as a healthy GLM does? The behaviour verdict of one answer, and its rates.

Tolerant on purpose: a real GLM words things its own way, so the expected calls are matched with
:mod:`pytest_glm.judging.matchers` (any of several spellings, a date-time with or without seconds, an optional
argument left out, parallel calls in any order, code that runs and prints the right thing), and wording is
never compared. What the *deployment* did to the model's output is not judged here but exactly, by
:mod:`pytest_glm.judging.faithfulness`.

An answer cut at ``max_tokens`` proves nothing either way: it is *inconclusive*, with the reason, and
stays out of the rates. GLM-4.5/4.6 think dynamically, so an answer of theirs without reasoning is noted,
not failed; GLM-4.7 thinks whenever thinking is on.

Aggregates follow deployment verifiers: schema accuracy (calls whose arguments are valid JSON matching
the tool's schema / all calls), tool-call trigger F1 (a call expected vs the answer calling a tool), and
the share of conclusive answers that match their case.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from pytest_glm.judging.answers import Answer
from pytest_glm.judging.cases import Case, ExpectedCall
from pytest_glm.judging.matchers import ABSENT, mismatch

#: GLM's tool-call markup and think tags: none of it belongs in ``content``.
TOOL_MARKUP = ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
THINK_TAGS = ("<think>", "</think>")

#: Families whose models may answer without thinking although thinking is on (hybrid thinking).
DYNAMIC_THINKING = ("glm45",)


def leaked_markup(text: str) -> list[str]:
    """The GLM tags (tool-call markup first, then think tags) found in ``text``."""
    return [t for t in TOOL_MARKUP + THINK_TAGS if t in text]


@dataclass
class Verdict:
    """The behaviour verdict of one answer.

    :param problems: how the answer falls short of its case (a model miss, tolerated as a rate).
    :param inconclusive: why the answer cannot be judged (cut at ``max_tokens``), or None.
    :param notes: facts recorded but not failed (e.g. a GLM-4.5 answer that chose not to think).
    """

    case_id: str
    streamed: bool
    problems: list[str] = field(default_factory=list)
    inconclusive: str | None = None
    notes: list[str] = field(default_factory=list)
    expected_call: bool = False
    triggered: bool = False
    calls: int = 0
    valid_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.inconclusive is None


def _valid_arguments(case: Case, index: int, call: Any, verdict: Verdict) -> dict[str, Any] | None:
    """The call's arguments when they are a JSON object valid against its tool's schema (counted), else
    None with the problem noted."""
    where = f"call {index} ({call.name})"
    try:
        args = call.parsed()
    except ValueError as exc:
        verdict.problems.append(f"{where}: arguments are not valid JSON ({exc}): {call.arguments[:200]!r}")
        return None
    schema = case.tool_schema(call.name)
    if schema is None:
        verdict.problems.append(f"{where}: not one of the request's tools")
        return None
    try:
        jsonschema.validate(args, schema)
    except jsonschema.ValidationError as exc:
        verdict.problems.append(f"{where}: arguments break the tool's schema: {exc.message}")
        return None
    if not isinstance(args, dict):
        verdict.problems.append(f"{where}: arguments are {type(args).__name__}, not an object")
        return None
    verdict.valid_calls += 1
    unexpected = sorted(set(args) - set((schema.get("properties") or {}).keys()))
    if unexpected:
        verdict.problems.append(f"{where}: keys not in the schema: {unexpected}")
    return args


def argument_misses(expected: ExpectedCall, args: dict[str, Any]) -> list[str]:
    """Each expected argument the call does not satisfy, with the reason."""
    out = []
    for key, want in expected.arguments.items():
        why = mismatch(want, args.get(key, ABSENT))
        if why == "missing":
            out.append(f"missing argument {key!r} (expected {want!r})")
        elif why:
            out.append(f"{key}: {why}")
    return out


def _match_calls(case: Case, actual: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """Problems matching the answer's calls with the case's: by position, or, for ``unordered`` cases, in
    whichever order fits best."""
    want = list(case.tool_calls)
    names = [n for n, _ in actual]
    if sorted(names) != sorted(c.name for c in want) or (not case.unordered and names != [c.name for c in want]):
        order = "" if not case.unordered else " (any order)"
        return [f"tool calls {names}, expected {[c.name for c in want]}{order}"]

    def misses(order: tuple[int, ...]) -> list[str] | None:
        """The argument misses when the answer's call ``order[i]`` stands for expected call i (None when
        the names do not line up)."""
        out = []
        for i, j in enumerate(order):
            name, args = actual[j]
            if want[i].name != name:
                return None
            if args is not None:
                out += [f"call {j} ({name}): {m}" for m in argument_misses(want[i], args)]
        return out

    orders = itertools.permutations(range(len(actual))) if case.unordered else [tuple(range(len(actual)))]
    return min((m for o in orders if (m := misses(o)) is not None), key=len)


def judge(case: Case, answer: Answer, *, family: str | None = None, require_reasoning: bool = False,
          served_faithfully: bool | None = None) -> Verdict:
    """The behaviour verdict of ``answer`` to ``case``.

    :param family: the model's family, for its thinking rule (None: unknown, judged as GLM-4.7).
    :param require_reasoning: thinking-on cases must come with reasoning (GLM-4.5/4.6 excepted).
    :param served_faithfully: what the faithfulness checks found (None: no token ids to check with); when
        True, markup in the content is the model's own text, not a parser's leak.
    """
    finishes = case.call_finishes
    triggered = answer.finish_reason == "tool_calls" or bool(answer.calls)
    verdict = Verdict(case.id, answer.streamed, expected_call=case.expects_call and case.tool_choice != "none",
                      triggered=triggered, calls=len(answer.calls))
    problems = verdict.problems
    if answer.finish_reason == "length":
        verdict.inconclusive = (f"the answer was cut at max_tokens={case.request_max_tokens} "
                                f"({answer.completion_tokens or '?'} tokens) before it ended")
    leaked = next(iter(leaked_markup(answer.content)), None)
    if leaked:
        problems.append(f"content contains raw {leaked!r}: " + (
            "the model wrote the markup as text" if served_faithfully else "markup leaked past the parser"))
    if verdict.expected_call:
        if answer.finish_reason not in finishes and verdict.inconclusive is None:
            problems.append(f"finish_reason {answer.finish_reason!r}, expected {' or '.join(map(repr, finishes))}")
        checked = [(c.name, _valid_arguments(case, i, c, verdict)) for i, c in enumerate(answer.calls)]
        problems += _match_calls(case, checked)
    else:
        if answer.calls:
            problems.append(f"unexpected tool calls {[c.name for c in answer.calls]}"
                            + (" despite tool_choice='none'" if case.tool_choice == "none" else ""))
            for i, c in enumerate(answer.calls):
                _valid_arguments(case, i, c, verdict)
        if verdict.inconclusive is None:
            if answer.finish_reason != "stop":
                problems.append(f"finish_reason {answer.finish_reason!r}, expected 'stop'")
            if not answer.content.strip():
                problems.append("no content: a direct answer was expected")
            elif case.content_matches is not None and (why := mismatch(case.content_matches, answer.content)):
                problems.append(f"the answer misses what was asked: {why}")

    if case.thinking is False and answer.reasoning.strip():
        problems.append(f"thinking is off but reasoning came back: {answer.reasoning[:120]!r}")
    if require_reasoning and case.thinking is not False and not answer.reasoning.strip() \
            and verdict.inconclusive is None:
        if family in DYNAMIC_THINKING:
            verdict.notes.append("thinking is on and the model chose not to think (GLM-4.5/4.6 hybrid thinking)")
        else:
            problems.append("thinking is on but no reasoning came back" + (
                "" if served_faithfully else " (reasoning parser missing or wrong?)"))
    for tag in TOOL_MARKUP:
        if verdict.expected_call and tag in answer.reasoning:
            problems.append(f"tool-call markup {tag!r} inside the reasoning: the call was swallowed by it")
            break
    if case.min_tokens and not problems and verdict.inconclusive is None and answer.completion_tokens is not None \
            and answer.completion_tokens < case.min_tokens:
        verdict.inconclusive = (f"a long-output case: the answer ran to {answer.completion_tokens} tokens, under the "
                                f"{case.min_tokens} it needs to test long outputs")
    return verdict


def unchecked_serving(answer: Answer) -> list[str]:
    """What can still be said about the serving when the endpoint returns no token ids: the usage counts
    against the reasoning, and the order of streamed deltas (the faithfulness checks cover these exactly
    when ids are there)."""
    out = []
    if answer.reasoning_tokens is not None:
        if answer.reasoning.strip() and answer.reasoning_tokens == 0:
            out.append("usage says 0 reasoning tokens, but reasoning came back")
        if not answer.reasoning.strip() and answer.reasoning_tokens > 0:
            out.append(f"usage says {answer.reasoning_tokens} reasoning tokens, but no reasoning came back")
        if answer.completion_tokens is not None and answer.reasoning_tokens > answer.completion_tokens:
            out.append(f"reasoning tokens {answer.reasoning_tokens} > completion tokens {answer.completion_tokens}")
    if answer.streamed and answer.reasoning_after_content:
        out.append("a reasoning delta arrived after content had started")
    return out


def stream_differences(plain: Answer, streamed: Answer) -> list[str]:
    """How the reassembled stream differs from the non-streamed answer to the same greedy request: the
    fallback when there are no token ids (two requests can differ on a real deployment: prefix caching,
    batching, replicas)."""
    out = []
    if plain.finish_reason != streamed.finish_reason:
        out.append(f"finish_reason {streamed.finish_reason!r} streamed vs {plain.finish_reason!r}")
    if [c.name for c in plain.calls] != [c.name for c in streamed.calls]:
        out.append(f"tool calls {[c.name for c in streamed.calls]} streamed vs {[c.name for c in plain.calls]}")
    else:
        for i, (a, b) in enumerate(zip(plain.calls, streamed.calls, strict=True)):
            try:
                same = a.parsed() == b.parsed()
            except ValueError:
                same = False
            if not same:
                out.append(f"call {i} ({a.name}) arguments {b.arguments!r} streamed vs {a.arguments!r}")
    if plain.content.strip() != streamed.content.strip():
        out.append(f"content {streamed.content.strip()[:200]!r} streamed vs {plain.content.strip()[:200]!r}")
    if plain.reasoning.strip() != streamed.reasoning.strip():
        out.append(f"reasoning {streamed.reasoning.strip()[:120]!r} streamed vs {plain.reasoning.strip()[:120]!r}")
    return out


def conclusive(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.inconclusive is None]


def schema_accuracy(verdicts: list[Verdict]) -> float | None:
    judged = conclusive(verdicts)
    calls = sum(v.calls for v in judged)
    return sum(v.valid_calls for v in judged) / calls if calls else None


def trigger_f1(verdicts: list[Verdict]) -> float | None:
    judged = conclusive(verdicts)
    tp = sum(v.expected_call and v.triggered for v in judged)
    fp = sum(not v.expected_call and v.triggered for v in judged)
    fn = sum(v.expected_call and not v.triggered for v in judged)
    if tp + fp + fn == 0:
        return None
    return 2 * tp / (2 * tp + fp + fn)


def match_rate(verdicts: list[Verdict]) -> float | None:
    judged = conclusive(verdicts)
    return sum(v.ok for v in judged) / len(judged) if judged else None


def explain(case: Case, answer: Answer, problems: list[str]) -> str:
    """A failure in a few lines: what was asked, what came back, what is wrong."""
    last_user = next((m.get("content") for m in reversed(case.messages) if m["role"] == "user"), "")
    tools = [t["function"]["name"] for t in case.tools]
    mode = "streamed" if answer.streamed else "non-streamed"
    lines = [f"case {case.id} ({case.category}, {mode}): {len(problems)} problem(s)",
             *(f"  - {p}" for p in problems),
             f"  request: last user message {last_user!r}, tools {tools}, tool_choice {case.tool_choice!r}, "
             f"thinking {'off' if case.thinking is False else 'on'}",
             f"  response: {answer.brief()}"]
    if case.tool_calls:
        order = " (any order)" if case.unordered else ""
        lines.append(f"  expected calls{order}: " + "; ".join(f"{c.name}({c.arguments})" for c in case.tool_calls))
    return "\n".join(lines)
