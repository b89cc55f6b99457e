"""Tool calling: does the deployment turn GLM's tool-call markup into correct OpenAI tool calls?

Every case runs non-streamed and streamed. Per case: finish_reason, call names and order, ids, arguments
that are JSON and valid against the tool's schema, expected values, no markup left in content, and the
stream reassembling to the same answer. Then the aggregate gates (schema accuracy, trigger F1) and the
same cases under concurrent load, where every verdict must equal the sequential one.
"""

from __future__ import annotations

import pytest

from pytest_glm.cases import load_cases
from pytest_glm.verdicts import changes_under_load, explain, judge, schema_accuracy, stream_differences, trigger_f1

pytestmark = pytest.mark.tool_calling

CASES = [c for c in load_cases() if c.suite == "tool_calling"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, stream, glm_answers):
    answer = glm_answers.get(case, stream)
    problems = judge(case, answer).problems
    if stream:
        problems += [f"stream differs from non-streamed: {d}" for d in stream_differences(glm_answers.get(case, False), answer)]
    assert not problems, explain(case, answer, problems)


def test_aggregate_gates(glm_answers, glm_deployment, glm_record):
    verdicts = [judge(c, glm_answers.get(c, s)) for c in CASES for s in (False, True)]
    limits = glm_deployment.profile.thresholds
    accuracy, f1 = schema_accuracy(verdicts), trigger_f1(verdicts)
    glm_record("tool_calling", "aggregate", "tool_schema_accuracy", accuracy, limits.tool_schema_accuracy, ">=")
    glm_record("tool_calling", "aggregate", "tool_trigger_f1", f1, limits.tool_trigger_f1, ">=")
    print(f"schema accuracy {accuracy}, trigger F1 {f1} over {len(verdicts)} answers")
    assert accuracy is not None and accuracy >= limits.tool_schema_accuracy, (
        f"schema accuracy {accuracy:.3f} < {limits.tool_schema_accuracy} ({glm_deployment.profile.name})")
    assert f1 is not None and f1 >= limits.tool_trigger_f1, (
        f"tool-call trigger F1 {f1:.3f} < {limits.tool_trigger_f1} ({glm_deployment.profile.name})")


def test_verdicts_hold_under_load(glm_answers, glm_endpoint, glm_deployment):
    """Batched (and, with MTP, drafted) requests must be judged as the one-at-a-time ones were."""
    concurrency = glm_deployment.profile.thresholds.load_concurrency
    changed = changes_under_load(glm_endpoint, CASES, glm_answers.get, concurrency)
    assert not changed, f"{len(changed)} verdict(s) changed under load:\n" + "\n".join(changed)
