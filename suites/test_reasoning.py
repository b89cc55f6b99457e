"""Reasoning: is GLM's thinking separated cleanly from the answer, streamed and not, with thinking on and off?"""

from __future__ import annotations

import pytest

from pytest_glm.cases import load_cases
from pytest_glm.chat import ask
from pytest_glm.verdicts import THINK_TAGS, TOOL_MARKUP, changes_under_load, explain, judge, stream_differences

pytestmark = pytest.mark.reasoning

ALL = load_cases()
CASES = [c for c in ALL if c.suite == "reasoning"]
#: Tool-call turns with thinking on: the call must be parsed, not swallowed by the reasoning.
THINK_AND_CALL = [c for c in ALL if c.suite == "tool_calling" and c.expects_call and c.thinking is not False
                  and c.tool_choice != "none"]
#: Third turn and later of a tool conversation (vLLM #27703: <think> leaked into content there).
LATE_TURNS = [c for c in ALL if sum(m["role"] == "user" for m in c.messages) >= 2 and any(m["role"] == "tool" for m in c.messages)]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, stream, glm_answers):
    answer = glm_answers.get(case, stream)
    problems = judge(case, answer, require_reasoning=True).problems
    if stream:
        problems += [f"stream differs from non-streamed: {d}" for d in stream_differences(glm_answers.get(case, False), answer)]
    assert not problems, explain(case, answer, problems)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", THINK_AND_CALL, ids=[c.id for c in THINK_AND_CALL])
def test_reasoning_and_tool_call_in_one_turn(case, stream, glm_answers):
    answer = glm_answers.get(case, stream)
    problems = judge(case, answer, require_reasoning=True).problems
    assert not problems, explain(case, answer, problems)


@pytest.mark.parametrize("case", LATE_TURNS, ids=[c.id for c in LATE_TURNS])
def test_nothing_leaks_in_late_turns(case, glm_answers):
    for stream in (False, True):
        answer = glm_answers.get(case, stream)
        leaked = [t for t in THINK_TAGS + TOOL_MARKUP if t in answer.content]
        assert not leaked, explain(case, answer, [f"content contains {leaked}"])


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_cut_inside_reasoning(stream, glm_endpoint):
    case = next(c for c in CASES if c.id == "reasoning.long")
    client = glm_endpoint.client()
    try:
        answer = ask(client, case, glm_endpoint.model, stream=stream, max_tokens=8)
    finally:
        client.close()
    problems = []
    if answer.finish_reason != "length":
        problems.append(f"finish_reason {answer.finish_reason!r}, expected 'length' (max_tokens=8)")
    leaked = [t for t in THINK_TAGS + TOOL_MARKUP if t in answer.content]
    if leaked:
        problems.append(f"content contains {leaked} after a cut inside the reasoning")
    if not answer.reasoning.strip():
        problems.append("no reasoning came back from a response cut inside the reasoning")
    assert not problems, explain(case, answer, problems)


def test_verdicts_hold_under_load(glm_answers, glm_endpoint, glm_deployment):
    """The reasoning cases batched (and drafted, with MTP) are judged as the one-at-a-time ones were."""
    concurrency = glm_deployment.profile.thresholds.load_concurrency
    changed = changes_under_load(glm_endpoint, CASES, glm_answers.get, concurrency, require_reasoning=True)
    assert not changed, f"{len(changed)} verdict(s) changed under load:\n" + "\n".join(changed)
