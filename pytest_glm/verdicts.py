"""Judging an answer against a case: the problems a deployment verifier looks for, as readable lines.

Model-independent on purpose: the expected *calls* (names, argument values) are compared, not the
wording of reasoning or content, so the same cases judge a real GLM deployment and the reference one.
Aggregates follow deployment verifiers: schema accuracy (calls whose arguments are valid JSON matching
the tool's schema / all calls) and tool-call trigger F1 (a call expected vs ``finish_reason ==
"tool_calls"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema

from pytest_glm.answers import Answer
from pytest_glm.cases import Case

#: GLM's tool-call markup; none of it may reach ``content`` when the parser works.
TOOL_MARKUP = ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")
THINK_TAGS = ("<think>", "</think>")


def normalise(value: Any) -> Any:
    """Compare strings modulo case and whitespace runs, numbers by value, containers element-wise."""
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def same_value(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) != isinstance(actual, bool):  # True == 1 in Python; not here
        return False
    if isinstance(expected, str) != isinstance(actual, str):
        return False
    return bool(normalise(expected) == normalise(actual))


@dataclass
class Verdict:
    case_id: str
    streamed: bool
    problems: list[str] = field(default_factory=list)
    expected_call: bool = False
    triggered: bool = False
    calls: int = 0
    valid_calls: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_call(case: Case, index: int, call: Any, expected: Any, verdict: Verdict) -> None:
    where = f"call {index} ({call.name})"
    try:
        args = call.parsed()
    except ValueError as exc:
        verdict.problems.append(f"{where}: arguments are not valid JSON ({exc}): {call.arguments[:200]!r}")
        return
    schema = case.tool_schema(call.name)
    if schema is None:
        verdict.problems.append(f"{where}: not one of the request's tools")
        return
    try:
        jsonschema.validate(args, schema)
    except jsonschema.ValidationError as exc:
        verdict.problems.append(f"{where}: arguments break the tool's schema: {exc.message}")
        return
    if not isinstance(args, dict):
        verdict.problems.append(f"{where}: arguments are {type(args).__name__}, not an object")
        return
    verdict.valid_calls += 1
    allowed = set((schema.get("properties") or {}).keys())
    unexpected = sorted(set(args) - allowed)
    if unexpected:
        verdict.problems.append(f"{where}: keys not in the schema: {unexpected}")
    if expected is None:
        return
    for key, want in expected.arguments.items():
        if key not in args:
            verdict.problems.append(f"{where}: missing argument {key!r} (expected {want!r})")
        elif not same_value(want, args[key]):
            verdict.problems.append(f"{where}: {key}={args[key]!r}, expected {want!r}")


def judge(case: Case, answer: Answer, *, require_reasoning: bool = False) -> Verdict:
    """Every problem of ``answer`` as an answer to ``case``."""
    # A forced (named) call ends with finish_reason "stop" in OpenAI's API, "tool_calls" in some servers.
    finishes = ("tool_calls", "stop") if case.named_tool_choice else ("tool_calls",)
    triggered = answer.finish_reason == "tool_calls" or (case.named_tool_choice and bool(answer.calls))
    verdict = Verdict(case.id, answer.streamed, expected_call=case.expects_call and case.tool_choice != "none",
                      triggered=triggered, calls=len(answer.calls))
    problems = verdict.problems
    for tag in TOOL_MARKUP + THINK_TAGS:
        if tag in answer.content:
            problems.append(f"content contains raw {tag!r}: markup leaked past the parser")
            break
    if verdict.expected_call:
        if answer.finish_reason not in finishes:
            problems.append(f"finish_reason {answer.finish_reason!r}, expected {' or '.join(map(repr, finishes))}")
        names = [c.name for c in answer.calls]
        want_names = [c.name for c in case.tool_calls]
        if names != want_names:
            problems.append(f"tool calls {names}, expected {want_names}")
        ids = [c.id for c in answer.calls]
        if any(not i for i in ids):
            problems.append("a tool call has no id")
        elif len(set(ids)) != len(ids):
            problems.append(f"tool call ids are not unique: {ids}")
    else:
        if answer.calls:
            problems.append(f"unexpected tool calls {[c.name for c in answer.calls]}"
                            + (" despite tool_choice='none'" if case.tool_choice == "none" else ""))
        if answer.finish_reason != "stop":
            problems.append(f"finish_reason {answer.finish_reason!r}, expected 'stop'")
        if not answer.content.strip():
            problems.append("no content: a direct answer was expected")
    for i, call in enumerate(answer.calls):
        expected = case.tool_calls[i] if i < len(case.tool_calls) and case.tool_calls[i].name == call.name else None
        _check_call(case, i, call, expected, verdict)

    if case.thinking is False and answer.reasoning.strip():
        problems.append(f"thinking is off but reasoning came back: {answer.reasoning[:120]!r}")
    if require_reasoning and case.thinking is not False and not answer.reasoning.strip():
        problems.append("thinking is on but no reasoning came back (reasoning parser missing or wrong?)")
    for tag in TOOL_MARKUP:
        if verdict.expected_call and tag in answer.reasoning:
            problems.append(f"tool-call markup {tag!r} inside the reasoning: the call was swallowed by it")
            break
    if answer.reasoning_tokens is not None:
        if answer.reasoning.strip() and answer.reasoning_tokens == 0:
            problems.append("usage says 0 reasoning tokens, but reasoning came back")
        if not answer.reasoning.strip() and answer.reasoning_tokens > 0:
            problems.append(f"usage says {answer.reasoning_tokens} reasoning tokens, but no reasoning came back")
        if answer.completion_tokens is not None and answer.reasoning_tokens > answer.completion_tokens:
            problems.append(f"reasoning tokens {answer.reasoning_tokens} > completion tokens {answer.completion_tokens}")
    if answer.streamed and answer.reasoning_after_content:
        problems.append("a reasoning delta arrived after content had started")
    return verdict


def stream_differences(plain: Answer, streamed: Answer) -> list[str]:
    """How the reassembled stream differs from the non-streamed answer to the same greedy request."""
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


def schema_accuracy(verdicts: list[Verdict]) -> float | None:
    calls = sum(v.calls for v in verdicts)
    return sum(v.valid_calls for v in verdicts) / calls if calls else None


def trigger_f1(verdicts: list[Verdict]) -> float | None:
    tp = sum(v.expected_call and v.triggered for v in verdicts)
    fp = sum(not v.expected_call and v.triggered for v in verdicts)
    fn = sum(v.expected_call and not v.triggered for v in verdicts)
    if tp + fp + fn == 0:
        return None
    return 2 * tp / (2 * tp + fp + fn)


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
        lines.append("  expected calls: " + "; ".join(f"{c.name}({c.arguments})" for c in case.tool_calls))
    return "\n".join(lines)


def changes_under_load(endpoint: Any, cases: list[Case], alone: Any, concurrency: int, *,
                       require_reasoning: bool = False) -> list[str]:
    """Replay every case (streamed and not) ``concurrency`` at a time; list each verdict that differs from the
    one-at-a-time verdict (``alone(case, stream)`` gives that answer). Batching and MTP drafting must not
    change what the gate concludes."""
    from pytest_glm.chat import ask_concurrently

    jobs = [(c, s) for c in cases for s in (False, True)]
    changed = []
    for (case, stream), result in zip(jobs, ask_concurrently(endpoint, jobs, concurrency), strict=True):
        mode = "stream" if stream else "plain"
        if isinstance(result, str):
            changed.append(f"{case.id} ({mode}): request failed under load: {result}")
            continue
        before = judge(case, alone(case, stream), require_reasoning=require_reasoning)
        after = judge(case, result, require_reasoning=require_reasoning)
        if before.ok != after.ok:
            changed.append(f"{case.id} ({mode}): {'passes' if before.ok else 'fails'} alone, "
                           f"{'passes' if after.ok else 'fails'} at concurrency {concurrency}: "
                           f"{after.problems or before.problems}")
    return changed
