"""The regressions real GLM users hit (docs/regressions.md): each check fails on a deployment with the bug's
symptom, named as the user would meet it.

One glm-tiny server serves the whole module (the run's shared healthy server, tests/integration/conftest.py), with ``--stream-interval 4`` (several tokens per stream chunk,
the heavier chunking of the variants) and MTP on; each test puts a gateway in front of it that reproduces
one reported bug's symptom (HTTP 200, valid JSON, a wrong value or a wrong wire form), points the shipped
suites at the gateway, and checks the run fails saying what went wrong. The healthy deployment passing
is ``pytest suites/`` (CI runs it on all three reference models, and on the variants).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.altering_proxy import altering_proxy
from tests.integration.servers import SUITES, gate

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")


@pytest.fixture(scope="module")
def upstream(healthy_upstream: str) -> str:
    return healthy_upstream


def _calls(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every tool call of a chat response or stream chunk (message or delta)."""
    for choice in body.get("choices") or []:
        for holder in (choice.get("message"), choice.get("delta")):
            yield from (holder or {}).get("tool_calls") or []


def _plain_arguments(edit: Any) -> Any:
    """A rewrite of the non-streamed calls' parsed arguments (a stream's fragments are left alone)."""
    def rewrite(body: dict[str, Any]) -> dict[str, Any]:
        for choice in body.get("choices") or []:
            for call in (choice.get("message") or {}).get("tool_calls") or []:
                fn = call["function"]
                fn["arguments"] = json.dumps(edit(json.loads(fn["arguments"] or "{}")), ensure_ascii=False)
        return body
    return rewrite


def test_client_schemas_nested_objects_stringified_and_falsy_values_dropped(pytester: pytest.Pytester,
                                                                             upstream: str) -> None:
    """Item 1: a server that hands nested objects back as JSON strings, and drops false/0/""/[]/{}: both
    were HTTP 200 with valid JSON; only the exact comparison with the model's tokens names the argument."""
    def damage(args: dict[str, Any]) -> dict[str, Any]:
        return {k: json.dumps(v) if isinstance(v, dict) else v for k, v in args.items() if v or v is None}

    with altering_proxy(upstream, _plain_arguments(damage)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k",
                   "served_faithfully and (schema.nested or schema.falsy) and plain")
    assert "the tool parser returned shipping='{\"address\"" in out
    for key in ("notifications", "retries", "nickname", "tags", "metadata"):
        assert f"the tool parser dropped the argument {key!r}" in out
    assert "2 failed" in out


def test_wire_form_empty_arguments_escaped_text_and_other_id_shapes(pytester: pytest.Pytester, upstream: str) -> None:
    """Item 2: ``""`` for a call without arguments, non-ASCII escaped as \\uXXXX, and a streamed id of
    another shape than the non-streamed one: the values after json.loads are all still right."""
    def per_request(path: str, asked: dict[str, Any]) -> Any:
        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            for call in _calls(body):
                fn = call.get("function") or {}
                if fn.get("arguments") == "{}":
                    fn["arguments"] = ""
                elif isinstance(fn.get("arguments"), str) and not asked.get("stream"):
                    fn["arguments"] = json.dumps(json.loads(fn["arguments"]))  # ensure_ascii
                if asked.get("stream") and call.get("id"):
                    call["id"] = "call_" + call["id"][-4:]
            return body
        return rewrite

    with altering_proxy(upstream, per_request=per_request) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k",
                   "served_faithfully and (types.zero_arguments or types.unicode) and not under_load")
    assert "`arguments` is an empty string; a call without arguments must send \"{}\"" in out
    assert "non-ASCII text arrives escaped (" in out
    assert "tool call ids have one shape non-streamed (<8>-tool-<16>) and another streamed (call_" in out


def test_heavier_chunking_a_parser_that_keeps_one_token_of_a_multi_token_delta(pytester: pytest.Pytester,
                                                                               upstream: str) -> None:
    """Item 3: with several tokens per chunk (--stream-interval 4 here; MTP k=3 does the same), a streaming
    parser that emits only the first token's text of each argument delta loses pieces of every argument."""
    def rewrite(body: dict[str, Any]) -> dict[str, Any]:
        for choice in body.get("choices") or []:
            if len(choice.get("token_ids") or []) > 1:
                for call in (choice.get("delta") or {}).get("tool_calls") or []:
                    fn = call.get("function") or {}
                    if fn.get("arguments"):
                        fn["arguments"] = fn["arguments"][:1]
        return body

    with altering_proxy(upstream, rewrite) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k",
                   "served_faithfully and (single.weather or schema.nested) and stream and not under_load")
    assert "2 failed" in out
    assert "tool parser: call 0 (get_weather)" in out and "tool parser: call 0 (create_order)" in out


def test_prefix_cache_a_repeated_conversation_served_differently(pytester: pytest.Pytester, upstream: str) -> None:
    """Item 5: an answer computed on cached KV blocks that differs from what its tokens say (a cache that
    serves stale or misplaced blocks): the replay of the conversations with history finds it."""
    seen: set[str] = set()

    def per_request(path: str, asked: dict[str, Any]) -> Any:
        key = json.dumps(asked, sort_keys=True)
        again = key in seen and path.startswith("/v1/chat/completions")
        seen.add(key)

        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            for choice in body.get("choices") or [] if again else []:
                holder = choice.get("message") or choice.get("delta") or {}
                if holder.get("content"):
                    holder["content"] = holder["content"].replace("e", "E")
            return body
        return rewrite

    with altering_proxy(upstream, per_request=per_request) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "prefix_cache or multi_turn")
    assert "answer(s) served from the prefix cache not served faithfully" in out
    assert "multi_turn.third_turn_answer (plain): content: the server returned the content 'RomE: rain" in out


def test_prefix_cache_latency_flattered_by_repeated_prompts(pytester: pytest.Pytester, upstream: str) -> None:
    """Item 5: latency measured on prompts the prefix cache already holds (a harness that repeats its
    prompts) is a cache's latency: the cell fails on the hit rate instead of passing on flattering TTFT."""
    pytester.makepyfile(same_prompts="""
import pytest_glm.suites.test_slo as slo

def _same_prompt(count, length, vocab, seed=0, _draw=slo.random_prompts):
    return _draw(1, length, vocab, seed) * count

slo.random_prompts = _same_prompt
""")
    out = gate(pytester, upstream, "-p", "same_prompts", str(SUITES / "test_slo.py"), "-k", "prompt_heavy-b1")
    assert "the prefix cache served" in out and "of the prompt tokens of fresh random prompts" in out


def test_long_output_truncated_by_a_gateway(pytester: pytest.Pytester, upstream: str) -> None:
    """Item 6: a gateway with a size limit that cuts a long answer but keeps finish_reason 'stop'."""
    def rewrite(body: dict[str, Any]) -> dict[str, Any]:
        for choice in body.get("choices") or []:
            message = choice.get("message") or {}
            if len(message.get("content") or "") > 2000:
                message["content"] = message["content"][:2000]
        return body

    with altering_proxy(upstream, rewrite) as url:
        out = gate(pytester, url, str(SUITES / "test_reasoning.py"), "-k", "served_faithfully and long.answer")
    assert "1 failed, 1 passed" in out
    assert "content: the server returned the content '1, 2, 3," in out
