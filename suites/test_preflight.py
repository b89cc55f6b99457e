"""Preflight: is the endpoint the GLM deployment it claims to be, before any suite measures it?

Cheap checks that catch the deployment mistakes which make every later suite fail for a confusing reason:
a wrong or missing chat template, a tokenizer that splits GLM's tag tokens (so no parser can find them),
the wrong model behind the name, a context too short for the workloads.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.preflight

#: Tokens the GLM tool-call and reasoning parsers look for; each must be one token.
PARSER_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>",
                 "<arg_value>", "</arg_value>", "<|observation|>", "<|user|>", "<|assistant|>")

#: What each family's template renders for one user turn "hi" with the generation prompt (glm-facts §1.5).
GENERATION_PROMPT = {
    "glm45": {None: "<|user|>\nhi<|assistant|>", False: "<|user|>\nhi/nothink<|assistant|>\n<think></think>"},
    "glm47": {None: "<|user|>hi<|assistant|><think>", False: "<|user|>hi<|assistant|></think>"},
}


def test_server_is_healthy_and_says_its_version(glm_endpoint, glm_deployment):
    assert glm_endpoint.health(), f"GET {glm_endpoint.base_url}/health did not answer 200"
    assert glm_deployment.vllm_version, "GET /version returned no vLLM version"


def test_serves_the_model_under_test(glm_endpoint):
    served = glm_endpoint.served_models()
    assert glm_endpoint.model in served, f"{glm_endpoint.model!r} is not served; /v1/models lists {served}"


@pytest.mark.parametrize("token", PARSER_TOKENS)
def test_parser_tokens_are_single_tokens(glm_endpoint, token):
    ids = glm_endpoint.tokenize(token, add_special_tokens=False)
    assert len(ids) == 1, (f"the tokenizer splits {token!r} into {len(ids)} tokens {ids}: the GLM parsers match "
                           f"whole tokens, so tool calls and reasoning will not be parsed (wrong tokenizer?)")


@pytest.mark.parametrize("thinking", [None, False], ids=["thinking-default", "thinking-off"])
def test_chat_template_is_the_models_family(glm_endpoint, glm_deployment, thinking):
    family = glm_deployment.model.family
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    prompt = glm_endpoint.render_chat([{"role": "user", "content": "hi"}], **kwargs)
    expected = GENERATION_PROMPT[family][thinking]
    other = "glm47" if family == "glm45" else "glm45"
    assert prompt.startswith("[gMASK]<sop>"), f"the prompt does not start with [gMASK]<sop>: {prompt!r}"
    if not prompt.endswith(expected):
        hint = (f"this is the {other} family's template" if prompt.endswith(GENERATION_PROMPT[other][thinking])
                else "not a GLM-4.x template")
        pytest.fail(f"chat template mismatch for {glm_deployment.model.model_id} ({family}): the server renders "
                    f"{prompt!r}, expected it to end with {expected!r}; {hint}")


def test_chat_completion_round_trip(glm_client, glm_endpoint):
    resp = glm_client.chat.completions.create(model=glm_endpoint.model, max_tokens=16, temperature=0,
                                              messages=[{"role": "user", "content": "Say hello."}])
    choice = resp.choices[0]
    assert choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason!r}"
    assert resp.usage is not None and resp.usage.completion_tokens >= 1, "no usage reported"


def test_context_length_is_reported(glm_endpoint, glm_deployment):
    served = glm_endpoint.max_model_len()
    assert served > 0, "/v1/models reports no max_model_len"
    assert served <= glm_deployment.model.context_length, (
        f"served context {served} exceeds the model's trained {glm_deployment.model.context_length}")
