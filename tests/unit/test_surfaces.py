"""The responses and messages surfaces (``pytest_glm.judging.surfaces``): request conversion, and the
reduction of answers and streams, judged against the chat answer.

The recorded answers (``data/surface_streams.json``) are what vLLM 0.32.0 served for glm-tiny: the chat
answer, and per surface the non-streamed object and the stream's events (the ``response`` echo trimmed to
what is read). A healthy recording gives no finding; each broken variant of it (a stream that stops after
its first output item, a named call that emits nothing, ...) is found, its layer named.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_glm.judging.answers import Answer, Call
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.surfaces import (
    SurfaceAnswers,
    SurfaceError,
    from_messages,
    from_responses,
    messages_request,
    reduce_stream,
    responses_request,
    sse_events,
    surface_findings,
)
from pytest_glm.serving.endpoint import Endpoint

CASES = {c.id: c for c in load_cases()}
RECORDED = json.loads((Path(__file__).parent / "data" / "surface_streams.json").read_text(encoding="utf-8"))


def chat_answer(case_id: str) -> Answer:
    rec = RECORDED[case_id]["chat"]
    return Answer(content=rec["content"], reasoning=rec["reasoning"], finish_reason=rec["finish_reason"],
                  completion_tokens=rec["completion_tokens"], calls=[Call(*c) for c in rec["calls"]])


def events(case_id: str, surface: str) -> list[list[Any]]:
    return copy.deepcopy(RECORDED[case_id][f"{surface}_stream"])


def findings(case_id: str, surface: str, recorded: list[list[Any]] | None = None) -> list[str]:
    answer = reduce_stream(surface, [tuple(e) for e in (recorded if recorded is not None else events(case_id, surface))])
    return [str(f) for f in surface_findings(CASES[case_id], chat_answer(case_id), answer)]


# -- requests ----------------------------------------------------------------------------------------------


def test_responses_request_carries_the_history_as_items():
    body = responses_request(CASES["multi_turn.two_results"], "glm")
    kinds = [(i.get("type"), i.get("role")) for i in body["input"]]
    assert kinds == [("message", "user"), ("reasoning", None), ("function_call", None), ("function_call", None),
                     ("function_call_output", None), ("function_call_output", None)]
    calls, results = body["input"][2:4], body["input"][4:]
    assert [c["call_id"] for c in calls] == ["call_oslo", "call_lis"] == [r["call_id"] for r in results]
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert body["input"][1]["content"] == [{"type": "reasoning_text", "text": "Two cities, so two get_weather calls."}]
    assert (body["temperature"], body["top_p"], body["max_output_tokens"], body["store"]) == (0, 1, 8192, False)
    assert "reasoning" not in body and "instructions" not in body and "tool_choice" not in body


def test_responses_tools_have_exactly_the_chat_tools_keys():
    """vLLM renders every key of a tool into the prompt: an added ``strict: false`` is another prompt."""
    for case_id in ("single.weather", "schema.strict"):
        case = CASES[case_id]
        body = responses_request(case, "glm")
        assert body["tools"] == [{"type": "function", **t["function"]} for t in case.tools]
    assert "strict" not in responses_request(CASES["single.weather"], "glm")["tools"][0]
    assert responses_request(CASES["schema.strict"], "glm")["tools"][0]["strict"] is True


@pytest.mark.parametrize(("case_id", "responses", "messages"), [
    ("choice.named", {"type": "function", "name": "get_time"}, {"type": "tool", "name": "get_time"}),
    ("choice.required", "required", {"type": "any"}),
    ("choice.none", "none", {"type": "none"}),
])
def test_tool_choice(case_id, responses, messages):
    assert responses_request(CASES[case_id], "glm")["tool_choice"] == responses
    assert messages_request(CASES[case_id], "glm")["tool_choice"] == messages


def test_system_prompt_and_thinking_off():
    case = CASES["reasoning.off_system"]
    body = responses_request(case, "glm")
    assert body["instructions"] == "You are a terse assistant."
    assert body["reasoning"] == {"effort": "none"}
    assert [i["role"] for i in body["input"]] == ["user"] and "tools" not in body
    body = messages_request(case, "glm")
    assert body["system"] == "You are a terse assistant."
    assert body["thinking"] == {"type": "disabled"}
    assert body["max_tokens"] == 1024 and [m["role"] for m in body["messages"]] == ["user"]


def test_messages_request_carries_the_history_as_blocks():
    body = messages_request(CASES["multi_turn.two_results"], "glm")
    user, assistant, results = body["messages"]
    assert user == {"role": "user", "content": CASES["multi_turn.two_results"].messages[0]["content"]}
    assert [b["type"] for b in assistant["content"]] == ["thinking", "tool_use", "tool_use"]
    assert assistant["content"][1] == {"type": "tool_use", "id": "call_oslo", "name": "get_weather",
                                       "input": {"city": "Oslo"}}
    assert results["role"] == "user"
    assert [(b["type"], b["tool_use_id"]) for b in results["content"]] == [("tool_result", "call_oslo"),
                                                                          ("tool_result", "call_lis")]
    tool = body["tools"][0]
    assert set(tool) == {"name", "description", "input_schema"} and tool["input_schema"]["required"] == ["city"]
    assert "tool_choice" not in body and "thinking" not in body and "system" not in body


def test_messages_request_puts_the_user_text_after_tool_results_in_their_message():
    case = CASES["multi_turn.third_turn_call"]  # user, assistant+call, tool, assistant, user
    body = messages_request(case, "glm")
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
    assert body["messages"][3]["content"] == [{"type": "text", "text": "It is 21 °C and sunny in Paris."}]
    assert body["messages"][4]["content"] == case.messages[4]["content"]


# -- the recorded answers: healthy ------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", sorted(RECORDED))
@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_recorded_answers_say_what_chat_says(case_id, surface):
    reduce = from_responses if surface == "responses" else from_messages
    plain = reduce(RECORDED[case_id][surface])
    assert surface_findings(CASES[case_id], chat_answer(case_id), plain) == []
    assert findings(case_id, surface) == []


def test_a_stream_reduces_to_its_items():
    answer = reduce_stream("responses", [tuple(e) for e in events("single.weather", "responses")])
    assert answer.stream is not None and answer.stream.completed and answer.status == "completed"
    assert answer.answer.calls[0].name == "get_weather" and json.loads(answer.answer.calls[0].arguments) == {"city": "Paris"}
    assert answer.answer.finish_reason == "tool_calls" and answer.answer.completion_tokens == 95
    assert answer.stream.announced == answer.stream.done and len(answer.stream.done) == 2
    answer = reduce_stream("messages", [tuple(e) for e in events("choice.named", "messages")])
    assert answer.status == "tool_use" and answer.answer.finish_reason == "tool_calls"
    assert answer.answer.reasoning.strip().startswith("The caller asked for get_time")


def test_a_named_call_ends_with_stop_in_chat_and_with_a_call_on_the_surfaces():
    assert chat_answer("choice.named").finish_reason == "stop"
    assert findings("choice.named", "responses") == [] and findings("choice.named", "messages") == []


# -- the recorded answers, broken --------------------------------------------------------------------------


def test_a_responses_stream_that_stops_after_its_first_output_item():
    recorded = events("single.weather", "responses")
    first_done = next(i for i, (name, _) in enumerate(recorded) if name == "response.output_item.done")
    found = findings("single.weather", "responses", recorded[: first_done + 1])
    assert any("responses API (stream): the stream ended without response.completed or response.incomplete" in f
               and "items announced 1, completed 1" in f for f in found), found
    assert "responses API (stream): 0 call(s) [] where chat returned 1: ['get_weather']" in found


def _without_function_call(recorded: list[list[Any]]) -> list[list[Any]]:
    """The stream with its function-call item taken out, from the events and from the final response."""
    call_ids = {d["item"]["id"] for n, d in recorded if n == "response.output_item.added"
                and d["item"]["type"] == "function_call"}
    out = []
    for name, data in recorded:
        if data.get("item_id") in call_ids or (data.get("item") or {}).get("id") in call_ids:
            continue
        if name == "response.completed":
            data["response"]["output"] = [i for i in data["response"]["output"] if i["type"] != "function_call"]
        out.append([name, data])
    return out


def test_a_named_tool_choice_that_emits_nothing_on_responses():
    found = findings("choice.named", "responses", _without_function_call(events("choice.named", "responses")))
    assert "responses API (stream): tool_choice get_time forces a call, and the responses API returned none" in found
    assert "responses API (stream): 0 call(s) [] where chat returned 1: ['get_time']" in found
    plain = copy.deepcopy(RECORDED["choice.named"]["responses"])
    plain["output"] = [i for i in plain["output"] if i["type"] != "function_call"]
    found = [str(f) for f in surface_findings(CASES["choice.named"], chat_answer("choice.named"), from_responses(plain))]
    assert "responses API: tool_choice get_time forces a call, and the responses API returned none" in found
    assert "responses API: ends as 'stop' (status 'completed') where chat ended as 'tool_calls' (finish_reason 'stop')" in found


def test_a_named_tool_choice_that_emits_nothing_on_messages():
    recorded = events("choice.named", "messages")
    tool_block = next(d["index"] for n, d in recorded if n == "content_block_start"
                      and d["content_block"]["type"] == "tool_use")
    kept = [[n, d] for n, d in recorded if d.get("index") != tool_block]
    for _, data in kept:
        if data.get("type") == "message_delta":
            data["delta"]["stop_reason"] = "end_turn"
    found = findings("choice.named", "messages", kept)
    assert "messages API (stream): tool_choice get_time forces a call, and the messages API returned none" in found
    assert ("messages API (stream): ends as 'stop' (stop_reason 'end_turn') where chat ended as 'tool_calls' "
            "(finish_reason 'stop')") in found


def test_a_call_announced_and_never_completed():
    recorded = [e for e in events("single.weather", "responses")
                if not (e[0] == "response.output_item.done" and e[1]["item"]["type"] == "function_call")]
    found = findings("single.weather", "responses", recorded)
    assert any(f.startswith("responses API (stream): output item(s) 1 (fc_") and "never completed" in f for f in found)
    recorded = events("single.weather", "messages")
    last_stop = max(i for i, (n, _) in enumerate(recorded) if n == "content_block_stop")
    found = findings("single.weather", "messages", recorded[:last_stop] + recorded[last_stop + 1:])
    assert "messages API (stream): content block(s) 1 (tool_use) announced and never completed" in found


def test_events_after_the_completion_event():
    recorded = events("single.weather", "responses")
    recorded.append(["response.output_text.delta", {"type": "response.output_text.delta", "output_index": 2,
                                                     "item_id": "msg_late", "delta": "late"}])
    found = findings("single.weather", "responses", recorded)
    assert "responses API (stream): 1 event(s) after the completion event: response.output_text.delta" in found
    recorded = events("single.weather", "messages")
    found = findings("single.weather", "messages", recorded[:-1])  # no message_stop
    assert any(f.startswith("messages API (stream): the stream ended without message_stop") for f in found)


def test_deltas_that_do_not_reassemble_to_the_done_item():
    recorded = events("single.weather", "responses")
    delta = next(d for n, d in recorded if n == "response.function_call_arguments.delta")
    delta["delta"] = delta["delta"].replace("P", "B")
    found = findings("single.weather", "responses", recorded)
    assert any("the deltas of output item 1" in f and "response.function_call_arguments.done says" in f for f in found)
    assert any("call 0 (get_weather): the arguments {'city': 'Baris'} where chat returned {'city': 'Paris'}" in f
               for f in found)
    assert any("the deltas say call 0 (get_weather): the arguments {'city': 'Baris'} where the completed response "
               "returned {'city': 'Paris'}" in f for f in found)


def test_messages_arguments_compare_by_value_and_the_usage_by_count():
    plain = copy.deepcopy(RECORDED["single.weather"]["messages"])
    tool_use = next(b for b in plain["content"] if b["type"] == "tool_use")
    tool_use["input"] = {"city": "paris"}
    plain["usage"]["output_tokens"] += 1
    found = [str(f) for f in surface_findings(CASES["single.weather"], chat_answer("single.weather"), from_messages(plain))]
    assert found == ["messages API: call 0 (get_weather): the arguments {'city': 'paris'} where chat returned "
                     "{'city': 'Paris'}",
                     "messages API: usage says 96 output tokens where chat generated 95 for the same greedy request"]


def test_reasoning_and_content_compare_up_to_edge_whitespace():
    plain = copy.deepcopy(RECORDED["reasoning.arithmetic"]["responses"])
    for item in plain["output"]:
        for part in item.get("content") or []:
            part["text"] = part["text"].strip() + "\n"
    assert surface_findings(CASES["reasoning.arithmetic"], chat_answer("reasoning.arithmetic"), from_responses(plain)) == []
    message = next(i for i in plain["output"] if i["type"] == "message")
    message["content"][0]["text"] = "17 + 25 = 43."
    found = [str(f) for f in surface_findings(CASES["reasoning.arithmetic"], chat_answer("reasoning.arithmetic"),
                                              from_responses(plain))]
    assert found == ["responses API: the content '17 + 25 = 43.' where chat returned '17 + 25 = 42.'"]


# -- the wire ----------------------------------------------------------------------------------------------


def test_sse_events():
    lines = ["event: message_start", 'data: {"type": "message_start"}', "", ": a comment", 'data: {"type": "ping"}',
             "", "data: not json", "", "data: [DONE]", "", "event: response.completed", 'data: {"a":', "data: 1}"]
    assert list(sse_events(lines)) == [("message_start", {"type": "message_start"}), ("ping", {"type": "ping"}),
                                       ("", "not json"), ("response.completed", {"a": 1})]


@pytest.mark.parametrize(("status", "body", "unserved"), [
    (404, {"detail": "Not Found"}, True),
    (404, "Not Found", True),
    (405, {"detail": "Method Not Allowed"}, True),
    (501, {"error": {"message": "The model does not support Messages API"}}, True),
    (404, {"error": {"message": "The model `x` does not exist."}}, False),
    (400, {"error": {"message": "bad"}}, False),
])
def test_an_unserved_route_is_told_from_a_refused_request(status, body, unserved):
    assert SurfaceError(status, body).unserved is unserved


def test_an_unserved_surface_is_asked_once_and_skipped():
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.path == "/v1/messages":
            return httpx.Response(404, json={"detail": "Not Found"})
        return httpx.Response(400, json={"error": {"message": "max_output_tokens is too large"}})

    endpoint = Endpoint("http://surface.test", "glm-tiny", None, 5.0)
    cache = SurfaceAnswers(endpoint, http=httpx.Client(transport=httpx.MockTransport(handler)))
    for case_id in ("single.weather", "choice.named"):
        with pytest.raises(pytest.skip.Exception, match=r"does not serve the messages API \(POST /v1/messages: HTTP 404\)"):
            cache.get("messages", CASES[case_id], False)
    assert asked == ["/v1/messages"]
    with pytest.raises(pytest.fail.Exception, match=r"responses API: the server rejected the request \(HTTP 400\): "
                                                    r"max_output_tokens is too large"):
        cache.get("responses", CASES["single.weather"], True)
    cache.close()
