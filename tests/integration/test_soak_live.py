"""The soak against the real reference server: a healthy deployment passes a short soak; a gateway that
drops requests under load, or one behind which the server goes away, fails it, saying which and why.

One glm-tiny server serves the module (the run's shared healthy server, tests/integration/conftest.py); each test points the shipped soak suite at it (directly or through
tests/helpers/busy_gateway.py) with --glm-base-url, in a pytest subprocess.
"""

from __future__ import annotations

import pytest

from tests.helpers.busy_gateway import GONE, MESSAGE, busy_gateway
from tests.integration.servers import SUITES, gate

pytestmark = [pytest.mark.slow]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

SOAK = str(SUITES / "test_soak.py")


@pytest.fixture(scope="module")
def upstream(healthy_upstream: str) -> str:
    return healthy_upstream


def test_a_short_soak_of_the_reference_deployment_passes(pytester: pytest.Pytester, upstream: str) -> None:
    out = gate(pytester, upstream, SOAK, "--glm-soak=10s", expect=pytest.ExitCode.OK)
    assert "[glm] soak: 0:10 of " in out and "at concurrency 8, 1 answer in 4 checked exactly" in out
    progress = [line for line in out.splitlines() if line.startswith("[glm] soak 0:")]
    assert len(progress) == 10 and progress[-1].startswith("[glm] soak 0:10/0:10: ")
    assert "0 failed" in progress[-1] and "0 findings" in progress[-1]
    assert "pytest-glm: soak — pass" in out
    for figure in ("failed_requests", "faithfulness_findings", "behaviour_changes", "latency_p50_last_over_first"):
        assert figure in out


def test_requests_dropped_under_load_fail_the_soak(pytester: pytest.Pytester, upstream: str) -> None:
    with busy_gateway(upstream, every=10) as gateway:
        out = gate(pytester, gateway.url, SOAK, "--glm-soak=10s")
    assert gateway.dropped > 0
    assert f"{gateway.dropped} of " in out and " requests failed; first errors: " in out
    assert MESSAGE in out and "Error code: 502" in out
    assert "the server died" not in out


def test_a_server_that_goes_away_stops_the_soak_early(pytester: pytest.Pytester, upstream: str) -> None:
    with busy_gateway(upstream, every=10**9, down_after=40) as gateway:
        out = gate(pytester, gateway.url, SOAK, "--glm-soak=60s")
    assert gateway.down
    assert "[glm] soak: stopped after 0:" in out
    assert "into the soak: GET /health stopped answering (2 checks in a row failed)" in out
    assert GONE in out  # the requests that failed meanwhile, with the gateway's word
