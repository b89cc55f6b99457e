"""MTP speculative decoding: is the drafter running, and are its drafts accepted often enough?

Each workload kind (prose answers, tool-call arguments, reasoning) is sent on its own, greedy, one
request at a time and again at the profile's load concurrency (``*_batched``, side by side), between two reads of the server's spec-decode counters at ``/metrics`` (summed over
engines); the difference is what this workload drafted and had accepted. With one draft token the
acceptance rate must reach the profile's ``mtp_acceptance_rate`` (0.80: below the recipe's *typical* 0.90,
above every broken MTP layer measured; docs/thresholds.md); with more, each draft position must reach its
``mtp_position_acceptance`` minimum. A drop against a stored healthy run is caught by --glm-compare.

With --glm-mtp-equivalence, the MTP-off twin answers every case too, and the answers must be identical:
speculative decoding must never change a greedy output.
"""

from __future__ import annotations

import openai
import pytest

from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.chat import ask, ask_concurrently, rejection
from pytest_glm.measuring.metrics import SpecDecodeStats, parse
from pytest_glm.plugin import glm_config_of

pytestmark = pytest.mark.mtp

ALL = load_cases()
#: The long-output and long-context cases add minutes of decoding and nothing a drafter's rate needs.
SHORT = [c for c in ALL if c.category not in ("long_output", "long_context")]
KINDS = {
    "tool_arguments": [c for c in SHORT if c.expects_call],
    "reasoning": [c for c in SHORT if c.suite == "reasoning" and c.thinking is not False],
    "prose": [c for c in SHORT if not c.expects_call and not (c.suite == "reasoning" and c.thinking is not False)],
}


#: A shape run's answers are random and greedy random weights rarely stop: each request is cut at this many
#: tokens, plenty for the drafter to run and its counters to move.
SHAPE_MAX_TOKENS = 48


def _cap(glm_deployment) -> dict:
    return {"max_tokens": SHAPE_MAX_TOKENS} if glm_deployment.shape_run else {}


@pytest.fixture(scope="module")
def mtp_client(glm_endpoint):
    client = glm_endpoint.client()
    yield client
    client.close()


@pytest.mark.parametrize("kind", list(KINDS))
def test_mtp_acceptance(kind, glm_deployment, mtp_client, glm_record, glm_answers):
    """One request at a time: the drafter's acceptance with nothing else in the batch."""

    cases = glm_answers.askable(KINDS[kind]) or pytest.skip(f"no {kind} case can be asked of this deployment")

    def send() -> None:
        for case in cases:
            try:
                ask(mtp_client, case, glm_deployment.endpoint.model, stream=False, **_cap(glm_deployment))
            except (openai.APIStatusError, openai.APIError) as exc:
                pytest.fail(f"case {case.id}: {rejection(exc, glm_deployment)}", pytrace=False)

    _judge_acceptance(kind, "", glm_deployment, send, glm_record, glm_answers.capabilities)


@pytest.mark.parametrize("kind", list(KINDS))
def test_mtp_acceptance_batched(kind, glm_deployment, glm_record, glm_answers):
    """The same requests at the profile's load concurrency (``acceptance_rate_batched`` beside
    ``acceptance_rate``): drafting for a batch must be accepted as often as for one request."""
    concurrency = glm_deployment.profile.thresholds.load_concurrency
    cases = glm_answers.askable(KINDS[kind]) or pytest.skip(f"no {kind} case can be asked of this deployment")
    jobs = [(c, False) for c in cases] * max(1, -(-concurrency // len(cases)))

    def send() -> None:
        if glm_deployment.shape_run:
            results = _capped_concurrently(glm_deployment, [c for c, _ in jobs], concurrency)
        else:
            results = ask_concurrently(glm_deployment.endpoint, jobs, concurrency)
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            pytest.fail(f"{len(failed)} of {len(jobs)} requests at concurrency {concurrency} failed: {failed[0]}",
                        pytrace=False)

    _judge_acceptance(kind, "_batched", glm_deployment, send, glm_record, glm_answers.capabilities,
                      f" at concurrency {concurrency}")


def _capped_concurrently(glm_deployment, cases, concurrency: int) -> list:
    """A shape run's batched requests, each cut at SHAPE_MAX_TOKENS; a failed one as its error text."""
    from concurrent.futures import ThreadPoolExecutor

    client = glm_deployment.endpoint.client()

    def one(case):
        try:
            return ask(client, case, glm_deployment.endpoint.model, stream=False, **_cap(glm_deployment))
        except Exception as exc:  # reported as this request's result
            return f"{type(exc).__name__}: {exc}"

    try:
        with ThreadPoolExecutor(max(concurrency, 1)) as pool:
            return list(pool.map(one, cases))
    finally:
        client.close()


def _judge_acceptance(kind: str, suffix: str, glm_deployment, send, glm_record, capabilities,
                      where: str = "") -> None:
    """Read the spec-decode counters around ``send()`` and judge what it drafted and had accepted."""
    endpoint = glm_deployment.endpoint
    expected, why = glm_deployment.mtp_expectation()
    before = parse(endpoint.metrics_text())
    if not before.has_spec_decode:
        if expected:
            capabilities.refuse("mtp", capabilities.mtp_problem() or f"MTP is expected ({why}), but /metrics has "
                                "no speculative-decoding counters")
        pytest.skip(f"MTP is not expected ({why}) and the server reports no speculative decoding")
    send()
    stats = SpecDecodeStats.from_delta(parse(endpoint.metrics_text()) - before)
    thresholds = glm_deployment.profile.thresholds
    k = max(stats.per_position, default=-1) + 1 or glm_deployment.num_speculative_tokens() or 1
    judged = not glm_deployment.shape_run  # random weights accept (almost) nothing: recorded, not judged
    glm_record("mtp", kind, "drafts" + suffix, stats.drafts, 1, ">=")
    glm_record("mtp", kind, "acceptance_rate" + suffix, stats.acceptance_rate,
               thresholds.mtp_acceptance_rate if k == 1 and judged else None, ">=" if k == 1 and judged else "")
    glm_record("mtp", kind, "mean_acceptance_length" + suffix, stats.mean_acceptance_length)
    for pos, rate in stats.position_rates().items():
        glm_record("mtp", kind, f"acceptance_pos{pos}{suffix}", rate,
                   thresholds.position_minimum(pos) if k > 1 and judged else None, ">=" if k > 1 and judged else "")

    if not stats.drafts:
        pytest.fail(f"{kind}{where}: the spec-decode counters did not move: no drafts, so the MTP drafter did "
                    f"not run", pytrace=False)
    if not judged:
        return  # a shape run: the drafter ran; its acceptance with random weights says nothing about the model's
    if k == 1:
        minimum = thresholds.mtp_acceptance_rate
        assert stats.acceptance_rate >= minimum, (
            f"{kind}{where}: MTP acceptance rate {stats.acceptance_rate:.3f} is below {minimum:.2f} "
            f"({stats.summary()}); a damaged or mismatched MTP layer drafts tokens the model rejects")
    else:
        rates = stats.position_rates()
        low = [f"position {p}: {rates.get(p, 0.0):.3f} < {thresholds.position_minimum(p):.2f}"
               for p in range(k) if rates.get(p, 0.0) < thresholds.position_minimum(p)]
        assert not low, f"{kind}{where}: MTP acceptance too low at {'; '.join(low)} ({stats.summary()})"


@pytest.fixture(scope="module")
def twin_client(glm_mtp_twin):
    client = glm_mtp_twin.endpoint.client()
    yield client
    client.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "equivalence_case" in metafunc.fixturenames:
        if glm_config_of(metafunc.config).mtp_equivalence:
            metafunc.parametrize("equivalence_case", ALL, ids=[c.id for c in ALL])
        else:
            metafunc.parametrize("equivalence_case", [None], ids=["off"])


def test_mtp_equivalence(equivalence_case, glm_deployment, glm_answers, request):
    if equivalence_case is None:
        pytest.skip("MTP equivalence runs with --glm-mtp-equivalence (it launches a second, MTP-off server)")
    case = equivalence_case
    glm_mtp_twin = request.getfixturevalue("glm_mtp_twin")
    twin_client = request.getfixturevalue("twin_client")
    if not glm_deployment.mtp:
        pytest.skip("the deployment runs without MTP: nothing to compare with its MTP-off twin")
    with_mtp = glm_answers.get(case, False)
    without = ask(twin_client, case, glm_mtp_twin.endpoint.model, stream=False)
    differences = [f"{name}: with MTP {getattr(with_mtp, name)!r} | without {getattr(without, name)!r}"
                   for name in ("content", "reasoning", "finish_reason", "completion_tokens")
                   if getattr(with_mtp, name) != getattr(without, name)]
    calls_on = [(c.name, c.parsed()) for c in with_mtp.calls]
    calls_off = [(c.name, c.parsed()) for c in without.calls]
    if calls_on != calls_off:
        differences.append(f"tool calls: with MTP {calls_on} | without {calls_off}")
    assert not differences, f"{case.id}: greedy output changes with MTP on:\n  " + "\n  ".join(differences)
