"""Example used by pytest-glm's own tests: one chat completion through the glm fixtures."""

import json
import os


def test_chat(glm_client, glm_deployment, glm_endpoint):
    resp = glm_client.chat.completions.create(
        model=glm_endpoint.model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0)
    choice = resp.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens >= 1
    out = os.environ.get("GLM_EXAMPLE_OUT")
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                                 "url": glm_endpoint.base_url, "version": glm_deployment.vllm_version,
                                 "flags": list(glm_deployment.flags)}) + "\n")


def test_endpoint_surface(glm_endpoint):
    assert glm_endpoint.health()
    assert glm_endpoint.version()
