"""Soak (opt-in, ``--glm-soak DURATION``): does the deployment keep serving correctly under sustained load?

The tool-calling, reasoning and thinking-off prose cases, streamed and not, are sent as mixed traffic at the
profile's load concurrency for the whole duration (MTP as deployed), one progress line per interval
(:mod:`pytest_glm.measuring.soak`). The run fails on:

- any failed request, and a server that died (its process exited, or ``/health`` stopped answering);
- any faithfulness finding (exact) in the checked sample, one answer in four: what the server returned
  differs from what the model's own token ids say;
- any behaviour verdict (tolerant) of the sample that differs from the one-at-a-time verdict of the same
  case and mode: an answer that goes wrong only after minutes of load (a full KV cache, evicted blocks).

Latency drift (median and p90 of the last tenth over the first, end to end and TTFT) is recorded, not judged.
Without ``--glm-soak`` the test is skipped before it asks for the server, so no server starts for it.
"""

from __future__ import annotations

import pytest

from pytest_glm.judging.cases import load_cases
from pytest_glm.measuring.soak import Soak

pytestmark = pytest.mark.soak

#: The mix: every tool-calling case, the reasoning cases with thinking on, and the thinking-off prose ones.
CASES = [c for c in load_cases() if c.suite in ("tool_calling", "reasoning")]


def test_soak(glm_config, glm_say, request):
    if glm_config.soak_s is None:
        pytest.skip("the soak runs with --glm-soak DURATION (e.g. --glm-soak 30m before a production rollout)")
    # Asked for only now, so that a run without --glm-soak starts no server for this test.
    deployment = request.getfixturevalue("glm_deployment")
    answers = request.getfixturevalue("glm_answers")
    record = request.getfixturevalue("glm_record")
    deployment.check_alive()
    concurrency = deployment.profile.thresholds.load_concurrency
    result = Soak(answers, deployment, answers.askable(CASES), glm_config.soak_s, concurrency, say=glm_say).run()

    done = result.done
    record("soak", "load", "duration", result.run_s, unit=" s")
    record("soak", "load", "requests", len(done))
    record("soak", "load", "requests_per_s", len(done) / result.total_s if result.total_s else None)
    record("soak", "load", "failed_requests", len(result.failed), 0, "<=")
    record("soak", "load", "server_died", int(result.death is not None), 0, "<=")
    record("soak", "sample", "checked_answers", len(result.samples))
    record("soak", "sample", "without_token_ids", result.unchecked)
    record("soak", "sample", "faithfulness_findings", len(result.findings), 0, "<=")
    record("soak", "sample", "behaviour_changes", len(result.changes), 0, "<=")
    for name, moved in (("latency", result.latency_drift()), ("ttft", result.ttft_drift())):
        record("soak", "drift", f"{name}_p50_last_over_first", moved.p50_ratio)
        record("soak", "drift", f"{name}_p90_last_over_first", moved.p90_ratio)
    print("\n".join(result.progress))

    problems = result.problems()
    assert not problems, (f"soak of {glm_config.soak_s:g} s at concurrency {concurrency} on "
                          f"{deployment.profile.name}:\n  " + "\n  ".join(problems))
