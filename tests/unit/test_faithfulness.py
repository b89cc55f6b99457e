"""Faithfulness (``pytest_glm.judging.faithfulness``): hand-built server answers against what the model generated.

Each test takes a real case, the text a model could have generated for it (special tokens kept) and an
``Answer`` as a server might return it, and checks that a faithful answer gives no finding while each way
of changing what the model wrote is found, with the layer at fault named.
"""

from __future__ import annotations

import json

import pytest

from pytest_glm.judging.answers import Answer, Call, CallEvents
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.faithfulness import INCREMENTAL_CHUNKS, LONG_ARGUMENT, Finding, compare, incremental, judge
from pytest_glm.judging.glm_output import parse_output

CASES = {c.id: c for c in load_cases()}
TAGS = {"<think>": 266, "</think>": 267, "<tool_call>": 268, "</tool_call>": 269}
OBSERVATION_ID = 151338

WEATHER_45 = ("\n<think>The user wants Paris.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
              "<arg_key>unit</arg_key>\n<arg_value>celsius</arg_value>\n<arg_key>days</arg_key>\n<arg_value>2</arg_value>\n</tool_call><|observation|>")
WEATHER_47 = ("The user wants Paris.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
              "<arg_key>unit</arg_key><arg_value>celsius</arg_value><arg_key>days</arg_key><arg_value>2</arg_value></tool_call><|observation|>")
WEATHER_ARGS = {"city": "Paris", "unit": "celsius", "days": 2}
REASONING = "The user wants Paris."

FIB = ("numbers = []\na, b = 0, 1\nfor _ in range(10):\n    numbers.append(a)\n    a, b = b, a + b\n"
       "print(numbers)\nprint(sum(numbers))")
LONG_CODE_47 = ("Write the program.</think><tool_call>run_code<arg_key>language</arg_key><arg_value>python</arg_value>"
                f"<arg_key>code</arg_key><arg_value>{FIB}</arg_value></tool_call><|observation|>")


def served(calls=(), *, content: str = "", reasoning: str = REASONING, finish: str | None = "tool_calls",
           n_ids: int = 24, ids: list[int] | None = None, **extra) -> Answer:
    """An answer as the server returned it: calls as (name, arguments JSON text) pairs, ids call_0, call_1..."""
    token_ids = ids if ids is not None else list(range(1000, 1000 + n_ids))
    return Answer(content=content, reasoning=reasoning, finish_reason=finish, completion_tokens=len(token_ids),
                  token_ids=token_ids, calls=[Call(f"call_{i}", name, args) for i, (name, args) in enumerate(calls)],
                  **extra)


def weather(**change) -> list[tuple[str, str]]:
    args = {**WEATHER_ARGS, **change}
    return [("get_weather", json.dumps({k: v for k, v in args.items() if v is not DROP}))]


DROP = object()


def texts(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings]


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, texts(findings)
    return findings[0]


# ---- faithful answers -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "text"), [("glm45", WEATHER_45), ("glm47", WEATHER_47)])
def test_faithful_call_has_no_finding(family: str, text: str):
    assert judge(CASES["single.weather"], served(weather()), text, family, TAGS) == []


def test_faithful_up_to_edge_whitespace():
    # vLLM keeps GLM-4.5's newline before <think> in the reasoning; streamed content keeps edge newlines.
    answer = served(weather(), reasoning="\nThe user wants Paris.\n", content="\n")
    assert judge(CASES["single.weather"], answer, WEATHER_45, "glm45") == []


def test_compare_takes_a_parsed_output():
    case = CASES["single.weather"]
    generated = parse_output(WEATHER_47, "glm47", thinking=True, tools=case.tools)
    assert compare(case, served(weather()), generated) == []
    assert compare(case, served(weather(city="Lyon")), generated) != []


def test_faithful_answer_without_calls():
    case = CASES["reasoning.arithmetic"]
    text = "17 plus 25: 17 + 25 = 42.</think>17 plus 25 is 42.<|user|>"
    answer = served(content="17 plus 25 is 42.", reasoning="17 plus 25: 17 + 25 = 42.", finish="stop")
    assert judge(case, answer, text, "glm47", TAGS) == []


def test_faithful_thinking_off():
    case = CASES["reasoning.off"]
    text = "17 plus 25 is 42.<|user|>"
    assert judge(case, served(content="17 plus 25 is 42.", reasoning="", finish="stop"), text, "glm47") == []


def test_faithful_number_of_either_json_number_kind():
    case = CASES["types.number_enum"]
    text = ("Heat it.</think><tool_call>set_thermostat<arg_key>temperature</arg_key><arg_value>21</arg_value>"
            "<arg_key>mode</arg_key><arg_value>heat</arg_value></tool_call><|observation|>")
    answer = served([("set_thermostat", '{"temperature": 21.0, "mode": "heat"}')], reasoning="Heat it.")
    assert judge(case, answer, text, "glm47") == []


# ---- the tool parser changed the call -------------------------------------------------------------------

def test_changed_value_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(city="paris")), WEATHER_45, "glm45"))
    assert finding.layer == "tool parser"
    assert "the tool parser returned city='paris' where the model generated 'Paris'" in finding.text
    assert str(finding).startswith("tool parser: call 0 (get_weather): ")


def test_dropped_argument_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(unit=DROP)), WEATHER_47, "glm47"))
    assert finding.layer == "tool parser"
    assert finding.text == "call 0 (get_weather): the tool parser dropped the argument 'unit' the model generated as 'celsius'"


def test_added_argument_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(country="FR")), WEATHER_47, "glm47"))
    assert finding.layer == "tool parser"
    assert finding.text == "call 0 (get_weather): the tool parser added the argument country='FR', which the model did not generate"


def test_number_turned_into_a_string_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(days="2")), WEATHER_45, "glm45"))
    assert finding.layer == "tool parser"
    assert "the tool parser returned days='2' where the model generated 2 (text '2')" in finding.text


@pytest.mark.parametrize(("case_id", "key", "raw", "server_value", "text"), [
    ("types.numeric_string", "user_id", "001", 1, "the tool parser returned user_id=1 where the model generated '001'"),
    ("types.boolean_string", "value", "true", True, "the tool parser returned value=True where the model generated 'true'"),
])
def test_string_turned_into_another_type_is_found(case_id: str, key: str, raw: str, server_value, text: str):
    case = CASES[case_id]
    name = case.tool_calls[0].name
    other = {"types.numeric_string": {}, "types.boolean_string": {"key": "debug"}}[case_id]
    pairs = "".join(f"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>" for k, v in {**other, key: raw}.items())
    generated = f"Call it.</think><tool_call>{name}{pairs}</tool_call><|observation|>"
    faithful = served([(name, json.dumps({**other, key: raw}))], reasoning="Call it.")
    assert judge(case, faithful, generated, "glm47") == []
    changed = served([(name, json.dumps({**other, key: server_value}))], reasoning="Call it.")
    finding = only(judge(case, changed, generated, "glm47"))
    assert finding.layer == "tool parser" and text in finding.text


def test_arguments_that_are_not_json_are_found():
    answer = served([("get_weather", '{"city": "Paris", "unit": "celsius", "days": 2')])
    finding = only(judge(CASES["single.weather"], answer, WEATHER_47, "glm47"))
    assert finding.layer == "tool parser"
    assert finding.text.startswith("call 0 (get_weather): the arguments are not JSON (")


def test_arguments_that_are_not_an_object_are_found():
    finding = only(judge(CASES["single.weather"], served([("get_weather", '["Paris"]')]), WEATHER_47, "glm47"))
    assert finding.text == "call 0 (get_weather): the arguments are a JSON list, not an object: '[\"Paris\"]'"


def test_changed_name_is_found():
    findings = judge(CASES["single.weather"], served([("get_time", json.dumps(WEATHER_ARGS))]), WEATHER_47, "glm47")
    assert "tool parser: call 0: the tool parser returned the name 'get_time' where the model generated 'get_weather'" in texts(findings)


def test_missing_call_is_found():
    findings = judge(CASES["single.weather"], served(finish="tool_calls"), WEATHER_45, "glm45")
    finding = only(findings)
    assert finding.layer == "tool parser"
    assert finding.text == "the tool parser returned 0 call(s) [] where the model generated 1: ['get_weather']"


def test_calls_out_of_order_are_found():
    case = CASES["parallel.weather"]
    generated = ("Two cities.</think>"
                 "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
                 "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Tokyo</arg_value></tool_call><|observation|>")
    in_order = served([("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Tokyo"}')], reasoning="Two cities.")
    assert judge(case, in_order, generated, "glm47") == []
    swapped = served([("get_weather", '{"city": "Tokyo"}'), ("get_weather", '{"city": "Paris"}')], reasoning="Two cities.")
    assert [f.layer for f in judge(case, swapped, generated, "glm47")] == ["tool parser", "tool parser"]


# ---- ambiguous values and undeclared tools -------------------------------------------------------------------

def test_undeclared_type_accepts_both_readings():
    case = CASES["types.zero_arguments"]  # list_devices declares no properties: every value's type is open
    generated = ("List them.</think><tool_call>list_devices<arg_key>room</arg_key><arg_value>2</arg_value>"
                 "</tool_call><|observation|>")
    for arguments in ('{"room": 2}', '{"room": "2"}'):
        assert judge(case, served([("list_devices", arguments)], reasoning="List them."), generated, "glm47") == []
    finding = only(judge(case, served([("list_devices", '{"room": 3}')], reasoning="List them."), generated, "glm47"))
    assert "the tool parser returned room=3 where the model generated 2 (text '2')" in finding.text


def test_declared_type_accepts_one_reading():
    assert judge(CASES["single.weather"], served(weather(days=2)), WEATHER_47, "glm47") == []
    assert judge(CASES["single.weather"], served(weather(days="2")), WEATHER_47, "glm47") != []


def test_undeclared_json_string_accepts_the_raw_text():
    case = CASES["types.zero_arguments"]
    generated = ('List them.</think><tool_call>list_devices<arg_key>room</arg_key><arg_value>"kitchen"</arg_value>'
                 "</tool_call><|observation|>")
    raw = served([("list_devices", json.dumps({"room": '"kitchen"'}))], reasoning="List them.")
    assert judge(case, raw, generated, "glm47") == []


def test_calls_to_tools_not_in_the_request_are_ignored():
    generated = WEATHER_47.replace(
        "</tool_call><|observation|>",
        "</tool_call><tool_call>get_stock<arg_key>symbol</arg_key><arg_value>ZAI</arg_value></tool_call><|observation|>")
    assert judge(CASES["single.weather"], served(weather()), generated, "glm47") == []


# ---- reasoning and content ---------------------------------------------------------------------------------

def test_dropped_reasoning_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(), reasoning=""), WEATHER_45, "glm45"))
    assert finding.layer == "reasoning parser"
    assert finding.text == ("the server returned no reasoning where the model generated 21 characters of it: "
                            "'The user wants Paris.'")


def test_changed_reasoning_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(), reasoning="The user wants Lyon."), WEATHER_47, "glm47"))
    assert finding.layer == "reasoning parser"
    assert finding.text == "the server returned the reasoning 'The user wants Lyon.' where the model generated 'The user wants Paris.'"


def test_reasoning_left_in_content_is_found():
    case = CASES["reasoning.arithmetic"]
    text = "17 + 25 = 42.</think>It is 42.<|user|>"
    answer = served(content="17 + 25 = 42.</think>It is 42.", reasoning="", finish="stop")
    findings = judge(case, answer, text, "glm47")
    assert [f.layer for f in findings] == ["reasoning parser", "reasoning parser"]
    assert findings[0].text.startswith("the server returned no reasoning where the model generated 13 characters")
    assert findings[1].text == "the server returned the content '17 + 25 = 42.</think>It is 42.' where the model generated 'It is 42.'"


def test_reasoning_served_when_thinking_was_off_is_found():
    case = CASES["reasoning.off"]
    findings = judge(case, served(content="", reasoning="It is 42.", finish="stop"), "It is 42.<|user|>", "glm47")
    assert [f.layer for f in findings] == ["reasoning parser", "content"]
    assert findings[0].text == "the server returned the reasoning 'It is 42.' where the model generated ''"


def test_markup_leaked_into_content_is_found():
    markup = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
    generated = f"The user wants Paris.</think>{markup}<|observation|>"
    findings = judge(CASES["single.weather"], served(content=markup, finish="stop"), generated, "glm47")
    by_layer = {f.layer: f.text for f in findings}
    assert set(by_layer) == {"tool parser", "finish_reason"}, texts(findings)
    assert [f.text for f in findings if f.layer == "tool parser"] == [
        "the tool parser returned 0 call(s) [] where the model generated 1: ['get_weather']",
        f"the server returned the content {markup!r} where the model generated ''",
    ]


def test_changed_content_is_found():
    case = CASES["reasoning.off"]
    finding = only(judge(case, served(content="It is 43.", reasoning="", finish="stop"), "It is 42.<|user|>", "glm47"))
    assert finding.layer == "content"
    assert finding.text == "the server returned the content 'It is 43.' where the model generated 'It is 42.'"


def test_call_cut_by_max_tokens_served_as_content_is_faithful():
    partial = "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Par"
    generated = f"The user wants Paris.</think>{partial}"
    assert judge(CASES["single.weather"], served(content=partial, finish="length"), generated, "glm47") == []


def test_tool_choice_none_markup_stays_content():
    case = CASES["choice.none"]
    markup = ("<tool_call>set_thermostat<arg_key>temperature</arg_key><arg_value>21</arg_value>"
              "<arg_key>mode</arg_key><arg_value>heat</arg_value></tool_call>")
    generated = f"Explain only.</think>{markup}<|user|>"
    assert judge(case, served(content=markup, reasoning="Explain only.", finish="stop"), generated, "glm47") == []
    made_a_call = served([("set_thermostat", '{"temperature": 21, "mode": "heat"}')], reasoning="Explain only.", finish="stop")
    findings = judge(case, made_a_call, generated, "glm47")
    assert "tool parser: the tool parser returned 1 call(s) ['set_thermostat'] where the model generated 0: []" in texts(findings)


# ---- finish_reason, usage, ids ---------------------------------------------------------------------------------

def test_stop_after_observation_with_calls_is_found():
    finding = only(judge(CASES["single.weather"], served(weather(), finish="stop"), WEATHER_47, "glm47"))
    assert finding.layer == "finish_reason"
    assert finding.text == "finish_reason 'stop', but the model's output ended with <|observation|>: expected 'tool_calls'"


def test_named_tool_choice_may_finish_with_stop():
    case = CASES["choice.named"]
    generated = ("Sydney.</think><tool_call>get_time<arg_key>timezone</arg_key><arg_value>Australia/Sydney</arg_value>"
                 "</tool_call><|observation|>")
    for finish in ("stop", "tool_calls"):
        answer = served([("get_time", '{"timezone": "Australia/Sydney"}')], reasoning="Sydney.", finish=finish)
        assert judge(case, answer, generated, "glm47") == []
    wrong = served([("get_time", '{"timezone": "Australia/Sydney"}')], reasoning="Sydney.", finish="length")
    assert only(judge(case, wrong, generated, "glm47")).text.endswith("expected 'tool_calls' or 'stop'")


def test_cut_output_must_finish_with_length():
    case = CASES["reasoning.long"]
    cut = "Sunlight is scattered by"
    assert judge(case, served(reasoning=cut, finish="length"), cut, "glm47") == []
    finding = only(judge(case, served(reasoning=cut, finish="stop"), cut, "glm47"))
    assert finding.layer == "finish_reason"
    assert finding.text == "finish_reason 'stop', but the model's output was cut before a stop token: expected 'length'"


def test_answer_without_calls_must_finish_with_stop():
    case = CASES["reasoning.off"]
    finding = only(judge(case, served(content="It is 42.", reasoning="", finish="tool_calls"), "It is 42.<|user|>", "glm47"))
    assert finding.text == "finish_reason 'tool_calls', but the model's output ended with <|user|>: expected 'stop'"


def test_completion_tokens_must_count_the_ids():
    answer = served(weather(), n_ids=12)
    answer.completion_tokens = 11
    finding = only(judge(CASES["single.weather"], answer, WEATHER_47, "glm47"))
    assert finding.layer == "usage"
    assert finding.text == "usage says 11 completion tokens, the server returned 12 token ids"


def test_usage_unchecked_without_ids_or_count():
    no_ids = served(weather())
    no_ids.token_ids = None
    no_count = served(weather())
    no_count.completion_tokens = None
    for answer in (no_ids, no_count):
        assert judge(CASES["single.weather"], answer, WEATHER_47, "glm47") == []


@pytest.mark.parametrize(("family", "text", "ids", "think"), [
    ("glm45", WEATHER_45, [5, 266, 1, 2, 3, 4, 5, 267, 5, 268, 6, 7, 269, OBSERVATION_ID], 5),
    ("glm47", WEATHER_47, [1, 2, 3, 267, 268, 6, 7, 269, OBSERVATION_ID], 3),
])
def test_reasoning_tokens_must_match_the_think_block(family: str, text: str, ids: list[int], think: int):
    case = CASES["single.weather"]
    for near in (think, think + 2, think - 2):
        answer = served(weather(), ids=ids, reasoning_tokens=near)
        assert judge(case, answer, text, family, TAGS) == []
    finding = only(judge(case, served(weather(), ids=ids, reasoning_tokens=think + 4), text, family, TAGS))
    assert finding.layer == "usage"
    assert finding.text == f"usage says {think + 4} reasoning tokens, the think block holds {think} of the generated ids"


def test_call_without_id_is_found():
    answer = served(weather())
    answer.calls = [Call(None, c.name, c.arguments) for c in answer.calls]
    finding = only(judge(CASES["single.weather"], answer, WEATHER_47, "glm47"))
    assert (finding.layer, finding.text) == ("API", "a tool call has no id")


def test_repeated_call_ids_are_found():
    case = CASES["parallel.weather"]
    generated = ("Two.</think><tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value></tool_call>"
                 "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Tokyo</arg_value></tool_call><|observation|>")
    answer = served(reasoning="Two.")
    answer.calls = [Call("call_a", "get_weather", '{"city": "Paris"}'), Call("call_a", "get_weather", '{"city": "Tokyo"}')]
    finding = only(judge(case, answer, generated, "glm47"))
    assert (finding.layer, finding.text) == ("API", "tool call ids are not unique: ['call_a', 'call_a']")


# ---- streaming ----------------------------------------------------------------------------------------------

def stream(calls, chunk_ids: list[list[int]], events: dict[int, CallEvents], *, reasoning: str = REASONING,
           **extra) -> Answer:
    ids = [t for chunk in chunk_ids for t in chunk]
    answer = served(calls, ids=ids, reasoning=reasoning, streamed=True, chunks=len(chunk_ids), **extra)
    answer.chunk_token_ids = chunk_ids
    answer.call_events = events
    return answer


# single.weather, GLM-4.7: reasoning in chunks 0-1, the call's tokens from chunk 2 (<tool_call>) to chunk 7 (</tool_call>)
WEATHER_CHUNKS = [[1, 2], [3, 267], [268, 10], [11, 12], [13, 14], [15, 16], [17, 18], [19, 269], [OBSERVATION_ID]]


def test_incremental_stream_has_no_finding():
    events = {0: CallEvents(name_chunk=2, arguments_chunks=[3, 4, 5, 6, 7])}
    answer = stream(weather(), WEATHER_CHUNKS, events)
    assert judge(CASES["single.weather"], answer, WEATHER_47, "glm47", TAGS) == []


def test_name_arriving_with_the_last_argument_fragment_is_found():
    events = {0: CallEvents(name_chunk=7, arguments_chunks=[7])}
    finding = only(judge(CASES["single.weather"], stream(weather(), WEATHER_CHUNKS, events), WEATHER_47, "glm47", TAGS))
    assert finding.layer == "streaming"
    assert finding.text == ("call 0 (get_weather): the name arrived only with the end of the arguments, though the "
                            "model's tokens for the call came over 6 chunks")


def test_buffering_a_call_over_few_chunks_is_tolerated():
    chunks = [[1, 2, 3, 267], [268, 10, 11, 12, 13], [14, 15, 16, 17, 18, 19, 269], [OBSERVATION_ID]]
    assert INCREMENTAL_CHUNKS > 2
    events = {0: CallEvents(name_chunk=2, arguments_chunks=[2])}
    assert judge(CASES["single.weather"], stream(weather(), chunks, events), WEATHER_47, "glm47", TAGS) == []


def test_streaming_unchecked_without_tag_ids():
    events = {0: CallEvents(name_chunk=7, arguments_chunks=[7])}
    assert judge(CASES["single.weather"], stream(weather(), WEATHER_CHUNKS, events), WEATHER_47, "glm47") == []


LONG_CODE_CHUNKS = [[1, 2, 267], [268, 20], [21, 22], [23, 24], [25, 26], [27, 28], [29, 30], [31, 32], [33, 34],
                    [35, 269], [OBSERVATION_ID]]
LONG_CODE_CALL = [("run_code", json.dumps({"language": "python", "code": FIB}))]


def test_long_argument_in_one_delta_is_found():
    assert len(FIB) >= LONG_ARGUMENT
    events = {0: CallEvents(name_chunk=1, arguments_chunks=[9])}
    answer = stream(LONG_CODE_CALL, LONG_CODE_CHUNKS, events, reasoning="Write the program.")
    finding = only(judge(CASES["types.long_code"], answer, LONG_CODE_47, "glm47", TAGS))
    assert finding.layer == "streaming"
    assert finding.text == (f"call 0 (run_code): a {len(FIB)}-character argument arrived in one delta, though the model's "
                            "tokens for the call came over 9 chunks: the stream is not incremental")


def test_long_argument_in_many_deltas_has_no_finding():
    events = {0: CallEvents(name_chunk=1, arguments_chunks=[2, 3, 4, 5, 6, 7, 8, 9])}
    answer = stream(LONG_CODE_CALL, LONG_CODE_CHUNKS, events, reasoning="Write the program.")
    assert judge(CASES["types.long_code"], answer, LONG_CODE_47, "glm47", TAGS) == []


def test_incremental_directly():
    generated = parse_output(LONG_CODE_47, "glm47", thinking=True, tools=CASES["types.long_code"].tools)
    both = stream(LONG_CODE_CALL, LONG_CODE_CHUNKS, {0: CallEvents(name_chunk=9, arguments_chunks=[9])})
    findings = incremental(both, generated, TAGS)
    assert [f.layer for f in findings] == ["streaming", "streaming"]
    assert "the name arrived only with the end of the arguments" in findings[0].text
    assert f"a {len(FIB)}-character argument arrived in one delta" in findings[1].text
    assert incremental(both, generated, {"<think>": 266}) == []  # the call tags unknown: nothing to locate


def test_reasoning_after_content_is_found():
    events = {0: CallEvents(name_chunk=2, arguments_chunks=[3, 4, 5, 6, 7])}
    answer = stream(weather(), WEATHER_CHUNKS, events, reasoning_after_content=True)
    finding = only(judge(CASES["single.weather"], answer, WEATHER_47, "glm47", TAGS))
    assert (finding.layer, finding.text) == ("streaming", "a reasoning delta arrived after content had started")
