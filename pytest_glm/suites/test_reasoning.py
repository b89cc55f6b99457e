"""Reasoning: is GLM's thinking separated from the answer exactly as the model generated it, streamed and
not, with thinking on and off; and does the model think when it should?

Faithfulness (exact) is judged per answer against the model's own token ids; the reasoning cases here
and the tool-calling cases with thinking on. Behaviour: with thinking on, GLM-4.7 must think; GLM-4.5/4.6
think dynamically, so their answers without reasoning are noted and counted, not failed.
"""

from __future__ import annotations

import pytest

from pytest_glm.judging.case_answers import assert_behaves, assert_served_faithfully, per_answer, replay_under_load
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.chat import ask
from pytest_glm.judging.verdicts import explain, leaked_markup, match_rate
from pytest_glm.reporting import exchange

pytestmark = pytest.mark.reasoning

ALL = load_cases()
CASES = [c for c in ALL if c.suite == "reasoning"]
#: Tool-call turns with thinking on: the call must be parsed, not swallowed by the reasoning.
THINK_AND_CALL = [c for c in ALL if c.suite == "tool_calling" and c.expects_call and c.thinking is not False
                  and c.tool_choice != "none"]
#: Third turn and later of a tool conversation (vLLM #27703: <think> leaked into content there).
LATE_TURNS = [c for c in ALL if sum(m["role"] == "user" for m in c.messages) >= 2 and any(m["role"] == "tool" for m in c.messages)]


@per_answer(CASES)
def test_served_faithfully(case, stream, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case, stream):
        assert_served_faithfully(glm_answers, case, stream)


@per_answer(CASES)
def test_behaves(case, stream, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case, stream):
        assert_behaves(glm_answers, case, stream, require_reasoning=True)


@per_answer(THINK_AND_CALL)
def test_reasoning_and_tool_call_in_one_turn(case, stream, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case, stream):
        assert_behaves(glm_answers, case, stream, require_reasoning=True)


@pytest.mark.parametrize("case", LATE_TURNS, ids=[c.id for c in LATE_TURNS])
def test_nothing_leaks_in_late_turns(case, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case):
        for stream in (False, True):
            answer = glm_answers.get(case, stream)
            leaked = leaked_markup(answer.content)
            assert not leaked, explain(case, answer, [f"content contains {leaked}"])


def test_thinking_rates(glm_answers, glm_deployment, glm_record):
    """How often the model thought with thinking on, and how many reasoning answers match their case."""
    askable = glm_answers.askable(CASES + THINK_AND_CALL) or pytest.skip(
        "no case can be asked of this deployment: preflight says what it lacks")
    thinking_on = [(c, s) for c in askable for s in (False, True) if not glm_answers.fully_excused(c, s)]
    verdicts = [glm_answers.verdict(c, s, require_reasoning=True) for c, s in thinking_on]
    skipped = sum(bool(v.notes) for v in verdicts)
    rate = match_rate([v for v in verdicts if v.case_id in {c.id for c in CASES}])
    limit = glm_deployment.profile.thresholds.behaviour_match_rate
    glm_record("reasoning", "aggregate", "answers_without_thinking", skipped)
    glm_record("reasoning", "aggregate", "behaviour_match_rate", rate, limit, ">=")
    assert rate is None or rate >= limit, (
        f"behaviour match rate of the reasoning cases {rate:.3f} < {limit}: "
        + "; ".join(f"{v.case_id}: {v.problems}" for v in verdicts if v.problems))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_max_tokens_cut_inside_reasoning(stream, glm_endpoint, glm_answers, request):
    """A request cut at 8 tokens, inside the reasoning, ends with 'length' and leaks no tag into content."""
    case = next(c for c in CASES if c.id == "reasoning.long")
    client = glm_endpoint.client()
    try:
        answer = ask(client, case, glm_endpoint.model, stream=stream, max_tokens=8)
    finally:
        client.close()
    findings = glm_answers.findings_of(case, answer)
    problems = [str(f) for f in findings or []]
    if answer.finish_reason != "length":
        problems.append(f"finish_reason {answer.finish_reason!r}, expected 'length' (max_tokens=8)")
    leaked = leaked_markup(answer.content)
    if leaked:
        problems.append(f"content contains {leaked} after a cut inside the reasoning")
    if findings is None and not answer.reasoning.strip():
        problems.append("no reasoning came back from a response cut inside the reasoning")
    with exchange.on_failure(request, glm_answers, case, answer=answer, max_tokens=8):
        assert not problems, explain(case, answer, problems)


def test_served_faithfully_under_load(glm_answers, glm_deployment, glm_record):
    """The reasoning cases batched (and drafted, with MTP) are served as faithfully as one at a time."""
    glm_answers.askable(CASES) or pytest.skip("no case can be asked of this deployment: preflight says what it lacks")
    concurrency = glm_deployment.profile.thresholds.load_concurrency
    broken, changed = replay_under_load(glm_answers, CASES, concurrency, require_reasoning=True)
    glm_record("reasoning", "under_load", "behaviour_changes", len(changed))
    if changed:
        print(f"{len(changed)} behaviour verdict(s) changed under load:\n" + "\n".join(changed))
    assert not broken, f"{len(broken)} answer(s) at concurrency {concurrency} not served faithfully:\n" + "\n".join(broken)
