"""The behaviour verdict of answers against cases, and reassembling streams — pure logic, no server."""

from __future__ import annotations

from types import SimpleNamespace as NS

from pytest_glm.judging.answers import Answer, Call, StreamAssembler, from_response
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.verdicts import (
    judge,
    match_rate,
    schema_accuracy,
    stream_differences,
    trigger_f1,
    unchecked_serving,
)

CASES = {c.id: c for c in load_cases()}


def answer(calls=(), content="", reasoning="", finish="tool_calls", streamed=False) -> Answer:
    return Answer(content=content, reasoning=reasoning, finish_reason=finish, streamed=streamed,
                  calls=[Call(f"call_{i}", n, a) for i, (n, a) in enumerate(calls)])


def test_correct_call_passes():
    v = judge(CASES["single.weather"], answer([("get_weather", '{"city": "paris"}')], reasoning="r"))
    assert v.ok and v.valid_calls == 1 and v.triggered


def test_extra_schema_key_allowed_unknown_key_not():
    case = CASES["single.weather"]
    assert judge(case, answer([("get_weather", '{"city": "Paris", "unit": "celsius"}')])).ok
    v = judge(case, answer([("get_weather", '{"city": "Paris", "country": "FR"}')]))
    assert any("keys not in the schema: ['country']" in p for p in v.problems)


def test_wrong_values_and_types():
    case = CASES["types.boolean_number_integer"]
    args = '{"origin": "LHR", "destination": "JFK", "date": "2027-01-15", "passengers": 2, "nonstop": "true", "max_price": 450.5}'
    v = judge(case, answer([("search_flights", args)]))
    assert any("arguments break the tool's schema" in p for p in v.problems) and v.valid_calls == 0
    v = judge(CASES["types.numeric_string"], answer([("lookup_user", '{"user_id": "1"}')]))
    assert any("user_id: '1', expected '001'" in p for p in v.problems)


def test_matchers_accept_what_a_real_model_writes():
    """Tokyo for 東京, seconds on a date-time, an optional null left out, compact JSON in a string, other
    correct code, parallel calls in the other order."""
    assert judge(CASES["types.unicode_city"], answer([("get_weather", '{"city": "Tokyo"}')])).ok
    assert not judge(CASES["types.unicode_city"], answer([("get_weather", '{"city": "Kyoto"}')])).ok
    event = ('{"title": "Design review", "start": "2026-12-03T10:00:00", "attendees": ["Bo", "Ana"], '
             '"location": {"room": "B2", "city": "Lyon"}}')
    assert judge(CASES["types.array_object_null"], answer([("create_event", event)])).ok
    late = judge(CASES["types.array_object_null"], answer([("create_event", event.replace("10:00:00", "11:00"))]))
    assert any("start:" in p and "another moment" in p for p in late.problems)
    assert judge(CASES["types.json_string"], answer([("set_config", '{"key": "policy", "value": "{\\"retries\\":3,\\"backoff\\":[1,2]}"}')])).ok
    code = "a, b = 0, 1\nfor _ in range(10):\n    print(a)\n    a, b = b, a + b\nprint('sum', 88)\n"
    import json
    assert judge(CASES["types.long_code"], answer([("run_code", json.dumps({"language": "python", "code": code}))])).ok
    wrong = judge(CASES["types.long_code"], answer([("run_code", json.dumps({"language": "python", "code": "print(1)"}))]))
    assert any("expected it to show one of" in p for p in wrong.problems)
    reversed_calls = answer([("get_weather", '{"city": "Lisbon"}'), ("get_weather", '{"city": "Oslo"}')])
    assert judge(CASES["parallel.weather"], reversed_calls).ok
    assert not judge(CASES["single.currency"], answer([("convert_currency", '{"amount": 25, "from": "USD", "to": "EUR"}')])).ok


def test_a_cut_answer_is_inconclusive_and_out_of_the_rates():
    cut = judge(CASES["reasoning.long"], answer(reasoning="Sunlight", finish="length"), require_reasoning=True)
    assert cut.inconclusive and "max_tokens=8192" in cut.inconclusive and not cut.ok
    good = judge(CASES["irrelevance.math"], answer(content="144", finish="stop"))
    wrong = judge(CASES["irrelevance.math"], answer(content="It is 124.", finish="stop"))
    assert good.ok and any("does not contain '144'" in p for p in wrong.problems)
    assert match_rate([cut, good, wrong]) == 0.5


def test_a_short_answer_to_a_long_output_case_is_inconclusive():
    numbers = ", ".join(map(str, range(1, 701)))
    long = answer(content=numbers, finish="stop")
    long.completion_tokens = 3400
    assert judge(CASES["long.answer"], long).ok
    short = answer(content="1, 2, ..., 699, 700", finish="stop")
    short.completion_tokens = 20
    verdict = judge(CASES["long.answer"], short)
    assert verdict.inconclusive and "ran to 20 tokens, under the 2500" in verdict.inconclusive
    wrong = answer(content="1, 2, 3", finish="stop")
    wrong.completion_tokens = 5
    assert judge(CASES["long.answer"], wrong).problems  # a wrong answer is a miss, however short


def test_invalid_json_and_missing_call():
    v = judge(CASES["single.weather"], answer([("get_weather", '{"city": "Par')]))
    assert any("not valid JSON" in p for p in v.problems)
    v = judge(CASES["single.weather"], answer(content="<tool_call>get_weather\n<arg_key>city</arg_key>", finish="stop"))
    assert "finish_reason 'stop', expected 'tool_calls'" in v.problems
    assert any("markup leaked past the parser" in p for p in v.problems)


def test_no_call_expected():
    case = CASES["irrelevance.joke"]
    assert judge(case, answer(content="A joke.", finish="stop")).ok
    v = judge(case, answer([("get_time", '{"timezone": "UTC"}')]))
    assert v.triggered and not v.expected_call and not v.ok
    v = judge(CASES["choice.none"], answer([("set_thermostat", '{"temperature": 1, "mode": "off"}')]))
    assert any("despite tool_choice='none'" in p for p in v.problems)


def test_reasoning_rules():
    on, off = CASES["reasoning.arithmetic"], CASES["reasoning.off"]
    assert "thinking is on but no reasoning came back (reasoning parser missing or wrong?)" in judge(
        on, answer(content="42", finish="stop"), require_reasoning=True).problems
    assert "thinking is on but no reasoning came back" in judge(
        on, answer(content="42", finish="stop"), require_reasoning=True, served_faithfully=True).problems
    dynamic = judge(on, answer(content="42", finish="stop"), family="glm45", require_reasoning=True)
    assert dynamic.ok and dynamic.notes  # GLM-4.5/4.6 may choose not to think: noted, not failed
    assert any("thinking is off but reasoning came back" in p for p in judge(
        off, answer(content="42", reasoning="hmm", finish="stop")).problems)
    leaked = judge(on, answer(content="<think>x</think>42", finish="stop"))
    assert any("'<think>'" in p for p in leaked.problems)
    swallowed = judge(CASES["single.weather"], answer(reasoning="<tool_call>get_weather", finish="stop"))
    assert any("swallowed" in p for p in swallowed.problems)


def test_aggregates():
    good = judge(CASES["single.weather"], answer([("get_weather", '{"city": "Paris"}')]))
    missed = judge(CASES["single.weather"], answer(content="sunny", finish="stop"))
    spurious = judge(CASES["irrelevance.joke"], answer([("get_time", '{"bad": 1}')]))
    assert schema_accuracy([good, missed, spurious]) == 0.5
    assert trigger_f1([good, missed, spurious]) == 2 * 1 / (2 * 1 + 1 + 1)
    assert trigger_f1([]) is None and schema_accuracy([missed]) is None


def _chunk(content=None, reasoning=None, tool_calls=None, finish=None, usage=None):
    delta = NS(content=content, reasoning=reasoning, tool_calls=tool_calls)
    return NS(choices=[NS(delta=delta, finish_reason=finish)], usage=usage)


def _tc(index, id=None, name=None, args=None):
    return NS(index=index, id=id, function=NS(name=name, arguments=args))


def test_stream_reassembly_and_comparison():
    asm = StreamAssembler()
    for chunk in [_chunk(reasoning="I will "), _chunk(reasoning="call."),
                  _chunk(tool_calls=[_tc(0, "call_a", "get_weather", "")]),
                  _chunk(tool_calls=[_tc(0, args='{"city": ')]), _chunk(tool_calls=[_tc(0, args='"Oslo"}')]),
                  _chunk(tool_calls=[_tc(1, "call_b", "get_weather", '{"city": "Lisbon"}')]),
                  _chunk(finish="tool_calls"),
                  NS(choices=[], usage=NS(completion_tokens=20, completion_tokens_details=NS(reasoning_tokens=4)))]:
        asm.add(chunk)
    streamed = asm.answer()
    assert [c.parsed() for c in streamed.calls] == [{"city": "Oslo"}, {"city": "Lisbon"}]
    assert streamed.reasoning == "I will call." and streamed.reasoning_tokens == 4
    assert judge(CASES["parallel.weather"], streamed).ok
    plain = answer([("get_weather", '{"city":"Oslo"}'), ("get_weather", '{"city": "Lisbon"}')], reasoning="I will call.")
    assert stream_differences(plain, streamed) == []
    plain.calls[1] = Call("x", "get_weather", "{}")
    assert stream_differences(plain, streamed) == ["call 1 (get_weather) arguments '{\"city\": \"Lisbon\"}' streamed vs '{}'"]


def test_reasoning_after_content_is_flagged():
    asm = StreamAssembler()
    for chunk in [_chunk(content="4"), _chunk(reasoning="late"), _chunk(content="2", finish="stop")]:
        asm.add(chunk)
    a = asm.answer()
    assert a.reasoning_after_content
    assert "a reasoning delta arrived after content had started" in unchecked_serving(a)
    blank_first = StreamAssembler()
    for chunk in [_chunk(content="\n"), _chunk(reasoning="thought"), _chunk(content="42", finish="stop")]:
        blank_first.add(chunk)
    assert not blank_first.answer().reasoning_after_content  # a blank content delta does not count


def test_from_response_reads_either_reasoning_name():
    msg = NS(content="hi", tool_calls=None, reasoning=None, reasoning_content="old name", model_extra={})
    resp = NS(choices=[NS(message=msg, finish_reason="stop")], usage=None)
    assert from_response(resp).reasoning == "old name"


def test_server_side_errors_say_what_the_server_logged(tmp_path) -> None:
    """An HTTP 500 with an empty message (vLLM 0.26 with a structured-output backend missing) is explained
    by the last exception in the launched server's log."""
    import httpx
    import openai

    from pytest_glm.catalog.models import resolve_model
    from pytest_glm.catalog.profiles import PROFILES
    from pytest_glm.judging.chat import rejection
    from pytest_glm.serving.deployment import Deployment
    from pytest_glm.serving.endpoint import Endpoint

    log = tmp_path / "vllm.log"
    log.write_text("(APIServer pid=8) INFO ok\n(APIServer pid=8) ERROR 11-28 [serving.py:830] ModuleNotFoundError: "
                   "No module named 'lmformatenforcer'\n(APIServer pid=8) INFO 127.0.0.1 \"POST /v1/chat\" 500\n")
    deployment = Deployment(model=resolve_model("glm-tiny"), profile=PROFILES["cpu"], endpoint=Endpoint("http://x", "m"),
                            vllm_version="0.26.0", command=None, launched=True, mtp=True, log_path=str(log))
    response = httpx.Response(500, json={"error": {"message": "", "type": "InternalServerError"}},
                              request=httpx.Request("POST", "http://x/v1/chat/completions"))
    error = openai.InternalServerError("Error code: 500", response=response, body={"message": ""})
    text = rejection(error, deployment)
    assert text == ("the server rejected the request (HTTP 500): (empty message); the server log says: "
                    "ModuleNotFoundError: No module named 'lmformatenforcer'")
    assert rejection(error, None).endswith("; a server-side error: its log says why")
    bad = openai.BadRequestError("Error code: 400", response=httpx.Response(400, request=response.request),
                                 body={"message": "tool choice needs --enable-auto-tool-choice"})
    assert rejection(bad, deployment) == ("the server rejected the request (HTTP 400): tool choice needs "
                                          "--enable-auto-tool-choice")
