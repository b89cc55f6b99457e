"""Tool calling: does the deployment turn GLM's tool-call markup into exactly the OpenAI tool calls the
model generated, and does the model call the right tools with sensible arguments?

Every case runs non-streamed and streamed, and each answer gets two verdicts:

- ``test_served_faithfully`` (exact): the calls, content and reasoning equal this project's own parse of
  the model's token ids; streamed, the stream is that parse too, and incremental.
- ``test_behaves`` (tolerant): the expected calls, names and argument values by the case's matchers, valid
  against the tool's schema. A miss is the model's; it is counted, and ``test_aggregate_gates`` fails the
  run when the rates fall below the profile's thresholds (docs/thresholds.md).

Then the same cases under concurrent load, where every answer must still be served faithfully, and the
conversations with history once more from the prefix cache.
"""

from __future__ import annotations

import warnings

import pytest

from pytest_glm.judging.case_answers import assert_behaves, assert_served_faithfully, per_answer, replay_under_load
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.verdicts import match_rate, schema_accuracy, trigger_f1
from pytest_glm.measuring.metrics import parse
from pytest_glm.reporting import exchange

pytestmark = pytest.mark.tool_calling

CASES = [c for c in load_cases() if c.suite == "tool_calling"]
#: Conversations with history (earlier turns, tool results, a long log): what a prefix cache serves from.
WITH_HISTORY = [c for c in load_cases() if len(c.messages) >= 3]


@per_answer(CASES)
def test_served_faithfully(case, stream, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case, stream):
        assert_served_faithfully(glm_answers, case, stream)


@per_answer(CASES)
def test_behaves(case, stream, glm_answers, request):
    with exchange.on_failure(request, glm_answers, case, stream):
        assert_behaves(glm_answers, case, stream)


def test_aggregate_gates(glm_answers, glm_deployment, glm_record):
    everything = [(c, s) for c in glm_answers.askable(CASES) or _none_askable() for s in (False, True)]
    answers = [(c, s) for c, s in everything if not glm_answers.fully_excused(c, s)]  # known vLLM defects
    verdicts = [glm_answers.verdict(c, s) for c, s in answers]
    unfaithful = sum(bool(glm_answers.findings(c, s)) for c, s in answers)
    limits = glm_deployment.profile.thresholds
    accuracy, f1, rate = schema_accuracy(verdicts), trigger_f1(verdicts), match_rate(verdicts)
    coverage = glm_answers.coverage()
    inconclusive = sum(v.inconclusive is not None for v in verdicts)
    glm_record("tool_calling", "aggregate", "unfaithful_answers", unfaithful, 0, "<=")
    glm_record("tool_calling", "aggregate", "tool_schema_accuracy", accuracy, limits.tool_schema_accuracy, ">=")
    glm_record("tool_calling", "aggregate", "tool_trigger_f1", f1, limits.tool_trigger_f1, ">=")
    glm_record("tool_calling", "aggregate", "behaviour_match_rate", rate, limits.behaviour_match_rate, ">=")
    glm_record("tool_calling", "aggregate", "inconclusive_answers", inconclusive)
    glm_record("tool_calling", "aggregate", "known_defect_answers", len(everything) - len(answers))
    glm_record("tool_calling", "aggregate", "token_id_coverage", coverage)
    if coverage is not None and coverage < 1:
        warnings.warn(f"the endpoint returned no token ids for {1 - coverage:.0%} of the answers (an older vLLM, or a "
                      f"gateway that drops return_token_ids): those answers were checked without the exact "
                      f"faithfulness checks (no stream/non-stream oracle)", stacklevel=1)
    print(f"schema accuracy {accuracy}, trigger F1 {f1}, behaviour match rate {rate} over {len(verdicts)} answers "
          f"({inconclusive} inconclusive); {unfaithful} served unfaithfully")
    missed = [f"{v.case_id} ({'stream' if v.streamed else 'plain'}): {'; '.join(v.problems)}"
              for v in verdicts if v.problems]
    failures = []
    if accuracy is not None and accuracy < limits.tool_schema_accuracy:
        failures.append(f"schema accuracy {accuracy:.3f} < {limits.tool_schema_accuracy}")
    if f1 is None or f1 < limits.tool_trigger_f1:
        failures.append(f"tool-call trigger F1 {f1 if f1 is None else round(f1, 3)} < {limits.tool_trigger_f1}")
    if rate is None or rate < limits.behaviour_match_rate:
        failures.append(f"behaviour match rate {rate if rate is None else round(rate, 3)} < {limits.behaviour_match_rate}")
    assert not failures, (f"{'; '.join(failures)} ({glm_deployment.profile.name}); the answers that missed:\n  "
                          + "\n  ".join(missed))


def test_served_faithfully_under_load(glm_answers, glm_deployment, glm_record):
    """Batched (and, with MTP, drafted) requests must be served as faithfully as one-at-a-time ones."""
    glm_answers.askable(CASES) or _none_askable()
    concurrency = glm_deployment.profile.thresholds.load_concurrency
    broken, changed = replay_under_load(glm_answers, CASES, concurrency)
    glm_record("tool_calling", "under_load", "behaviour_changes", len(changed))
    if changed:
        print(f"{len(changed)} behaviour verdict(s) changed under load (the model's choice in a batch):\n"
              + "\n".join(changed))
    assert not broken, f"{len(broken)} answer(s) at concurrency {concurrency} not served faithfully:\n" + "\n".join(broken)


def test_served_faithfully_from_the_prefix_cache(glm_answers, glm_deployment, glm_record):
    """Each conversation with history, sent again once its prefix is cached: the answer is computed on cached
    KV blocks and must still be exactly what its token ids say, and /metrics must show the hits."""
    if "--no-enable-prefix-caching" in glm_deployment.flags:
        pytest.skip("the server was launched with --no-enable-prefix-caching: no prefix cache to judge")
    history = glm_answers.askable(WITH_HISTORY) or _none_askable()
    for case in history:  # asked (and cached by the server) by the per-case tests; here if run alone
        glm_answers.get(case, False)
    endpoint = glm_deployment.endpoint
    before = parse(endpoint.metrics_text())
    broken, changed = replay_under_load(glm_answers, history, 1)
    hit_rate = (parse(endpoint.metrics_text()) - before).prefix_hit_rate
    glm_record("tool_calling", "prefix_cache", "hit_rate", hit_rate)
    glm_record("tool_calling", "prefix_cache", "behaviour_changes", len(changed))
    if changed:
        print(f"{len(changed)} behaviour verdict(s) changed when served from the prefix cache:\n" + "\n".join(changed))
    assert not broken, (f"{len(broken)} answer(s) served from the prefix cache not served faithfully:\n"
                        + "\n".join(broken))
    if not hit_rate:
        if not glm_deployment.launched:
            pytest.skip(f"the endpoint's prefix cache served none of {len(history)} repeated conversations "
                        f"({'no prefix-cache counters' if hit_rate is None else 'hit rate 0'}): prefix caching is "
                        f"off there, or a router spreads the requests over replicas")
        pytest.fail(f"{len(history)} conversations sent twice, yet /metrics shows "
                    f"{'no prefix-cache counters' if hit_rate is None else 'no prefix-cache hits'}: the server was "
                    f"launched with prefix caching on ({' '.join(glm_deployment.flags)})", pytrace=False)


def _none_askable() -> list:
    pytest.skip("no case can be asked of this deployment: preflight says what it lacks")
