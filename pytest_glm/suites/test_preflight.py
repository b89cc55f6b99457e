"""Preflight: is the endpoint the GLM deployment it claims to be, before any suite measures it?

Cheap checks that catch the deployment mistakes which make every later suite fail for a confusing reason:
a wrong or missing chat template, a tokenizer that splits GLM's tag tokens (so no parser can find them),
the wrong model behind the name, a context too short for what the collected suites send, no tool-call or
reasoning parser, MTP expected but absent. Such a gap fails here, once, naming the flag to change; the
tests that need what is missing are then skipped with this reason (serving.capabilities).
"""

from __future__ import annotations

import copy
import json

import pytest

from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.glm_format import WEATHER, WORKED, next_request_prompt
from pytest_glm.reporting.report import suite_of

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


@pytest.mark.parametrize("thinking", [True, False], ids=["thinking-on", "thinking-off"])
def test_chat_template_renders_the_glm_worked_example(glm_endpoint, glm_deployment, thinking):
    """System prompt, tools block, a tool call with typed arguments and its result: byte for byte as the
    published template of the model's family renders them (glm-facts §1.8)."""
    messages = copy.deepcopy(WORKED[:4])
    call = messages[2]["tool_calls"][0]["function"]
    call["arguments"] = json.dumps(call["arguments"])  # as an OpenAI client sends it
    messages[2]["reasoning"] = messages[2]["reasoning_content"]  # vLLM >= 0.2x reads this name, older the other
    kwargs = {} if thinking else {"enable_thinking": False}
    tokens = glm_endpoint.tokenize(messages=messages, tools=[WEATHER], add_generation_prompt=True,
                                   chat_template_kwargs=kwargs or None)
    rendered = glm_endpoint.detokenize(tokens)
    expected = next_request_prompt(glm_deployment.model.family, thinking)
    if rendered != expected:
        at = next((i for i, (a, b) in enumerate(zip(rendered, expected, strict=False)) if a != b), min(len(rendered), len(expected)))
        pytest.fail(f"the served chat template differs from GLM's {glm_deployment.model.family} format at byte {at}: "
                    f"server {rendered[max(at - 60, 0):at + 60]!r} vs expected {expected[max(at - 60, 0):at + 60]!r}")


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


def test_served_context_covers_the_collected_requests(glm_answers, glm_capabilities, glm_deployment, request):
    """The largest request the collected suites will send (a case's prompt plus its ``max_tokens``, a
    latency workload's input plus output) fits the served context; else this fails once, naming the
    numbers and the flag, and the tests that do not fit are skipped with the reason."""
    served = glm_capabilities.served_context()
    if not served:
        pytest.skip("/v1/models reports no max_model_len: nothing to compare with")
    suites = {suite_of(item.nodeid) for item in request.session.items}
    needs = [(glm_answers.request_tokens(c, at_most=served), f"case {c.id}")
             for c in load_cases() if c.suite in suites or "mtp" in suites]
    if "slo" in suites:
        workloads = glm_deployment.profile.thresholds.workloads
        needs += [(i + o, f"latency workload {name} ({i} in + {o} out)") for name, (i, o) in workloads.items()]
    need, what = max(needs, default=(0, ""))
    if need > served:
        exact = [(glm_answers.request_tokens(c), f"case {c.id}") for c in load_cases() if f"case {c.id}" == what]
        need, what = exact[0] if exact else (need, what)
        short = sum(n > served for n, _ in needs)
        glm_capabilities.refuse("context", (
            f"the server serves max_model_len {served}, but the collected suites send requests of up to {need} "
            f"tokens ({what}); {short} request(s) do not fit: launch it with --max-model-len {need} or more "
            f"(--glm-max-model-len {need}), or run fewer suites"))


def test_tool_calls_can_be_asked_for(glm_capabilities):
    """tool_choice 'auto' is accepted (a server without --enable-auto-tool-choice/--tool-call-parser
    answers every tool case with the same HTTP 400)."""
    if why := glm_capabilities.tool_parser_problem():
        glm_capabilities.refuse("tool parser", why)


def test_reasoning_is_parsed(glm_capabilities):
    if why := glm_capabilities.reasoning_parser_problem():
        glm_capabilities.refuse("reasoning parser", why)


def test_mtp_runs_where_expected(glm_capabilities, glm_deployment):
    expected, why = glm_deployment.mtp_expectation()
    if not expected:
        pytest.skip(f"MTP is not expected: {why}")
    if problem := glm_capabilities.mtp_problem():
        glm_capabilities.refuse("mtp", problem)
