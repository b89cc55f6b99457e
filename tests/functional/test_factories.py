"""factories.glm_deployment: a second deployment for a user's own tests, launched on first use with the
run's options and the overrides, and stopped at the end (a fake `vllm`: no model is loaded)."""

from __future__ import annotations

import json

import pytest

from pytest_glm import factories
from tests.conftest import FAKE_VLLM

pytestmark = pytest.mark.usefixtures("no_leftover_server")

CONFTEST = """
from pytest_glm import factories

glm_other = factories.glm_deployment(model="glm-tiny-47", mtp=False)
"""

TESTS = """
import json, os

def test_two_deployments(glm_deployment, glm_other):
    assert glm_other.endpoint.base_url != glm_deployment.endpoint.base_url
    assert glm_other.endpoint.health() and glm_deployment.endpoint.health()
    with open(os.environ["GLM_EXAMPLE_OUT"], "w") as fh:
        json.dump({"main": glm_deployment.model.model_id, "other": glm_other.model.model_id,
                   "other_mtp": glm_other.mtp, "other_flags": list(glm_other.flags)}, fh)
"""


def test_a_second_deployment_from_the_factory(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_two=TESTS)
    out = pytester.path / "out.json"
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", "serve")
    pytester._monkeypatch.setenv("GLM_EXAMPLE_OUT", str(out))
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "-p", "no:cacheprovider", timeout=120)
    result.assert_outcomes(passed=1)
    data = json.loads(out.read_text())
    assert data["main"] == "glm-tiny" and data["other"] == "glm-tiny-47" and data["other_mtp"] is False
    assert "--speculative-config.method" not in data["other_flags"]


def test_unknown_overrides_are_refused_at_once() -> None:
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['modle'\]"):
        factories.glm_deployment(modle="glm-tiny-47")
    with pytest.raises(TypeError, match="an endpoint that runs needs no factory"):
        factories.glm_deployment(base_url="http://127.0.0.1:9")
