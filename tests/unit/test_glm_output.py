"""The project's own reading of GLM output (``pytest_glm.judging.glm_output``), against a table of model outputs.

``data/glm_parser_formats.json`` holds one record per output: its family, whether thinking was on, the
request's tools (OpenAI schemas, inline), the text the model generated (special tokens kept), and what the
parser must make of it: the reasoning (null when there is no think block), the content, the calls with
their arguments typed by the schema, and the stop token (null when the output was cut). Optional fields:
``parse_tools: false`` (tool_choice none), ``expect.thinking_closed: false``, ``expect.malformed: true``,
per call ``ambiguous`` (keys whose type the schema leaves open) and ``xfail`` (a known parser bug, the
record stating the correct reading).

The records come from the worked examples of glm-facts §1.8/§1.9, from the output strings that vLLM's
GLM tool-parser and reasoning-parser tests exercise (re-expressed as data; ``source`` names the test), and
from the suites' typed cases. Reasoning and content are compared exactly, edge whitespace included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.judging.glm_output import STOP_TOKENS, GeneratedOutput, parse_call, parse_output, read_value

DATA = Path(__file__).parent / "data" / "glm_parser_formats.json"
RECORDS: list[dict[str, Any]] = json.loads(DATA.read_text(encoding="utf-8"))

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}


def _typed(value: Any) -> Any:
    """``value`` with every scalar tagged by its JSON type, so 1, 1.0, True and "1" all compare unequal."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def _records() -> list[Any]:
    out = []
    for record in RECORDS:
        marks = [pytest.mark.xfail(reason=record["xfail"], strict=True)] if "xfail" in record else []
        out.append(pytest.param(record, id=record["id"], marks=marks))
    return out


def test_data_file_is_well_formed():
    ids = [r["id"] for r in RECORDS]
    assert len(ids) == len(set(ids)), "duplicate record ids"
    for r in RECORDS:
        assert {"id", "source", "family", "thinking", "tools", "output", "expect"} <= r.keys(), r["id"]
        assert r["family"] in ("glm45", "glm47"), r["id"]
        assert isinstance(r["thinking"], bool), r["id"]
        assert {"reasoning", "content", "calls", "stop"} <= r["expect"].keys(), r["id"]
        assert r["expect"]["stop"] in (None, *STOP_TOKENS), r["id"]
        for tool in r["tools"]:
            assert tool["type"] == "function" and isinstance(tool["function"]["name"], str), r["id"]


def test_data_file_covers_both_families_and_every_stop():
    assert {r["family"] for r in RECORDS} == {"glm45", "glm47"}
    assert {r["expect"]["stop"] for r in RECORDS} == {None, *STOP_TOKENS}
    for family in ("glm45", "glm47"):
        mine = [r for r in RECORDS if r["family"] == family]
        assert any(not r["thinking"] for r in mine)
        assert any(r["expect"]["calls"] and r["expect"]["reasoning"] for r in mine)
        assert any(c["arguments"] == {} for r in mine for c in r["expect"]["calls"])
        assert any(r["expect"].get("thinking_closed") is False for r in mine)
    assert any(r.get("parse_tools") is False for r in RECORDS)
    assert any(r["expect"].get("malformed") for r in RECORDS)
    assert any(c.get("ambiguous") for r in RECORDS for c in r["expect"]["calls"])


@pytest.mark.parametrize("record", _records())
def test_parse_output_reads_the_record(record: dict[str, Any]):
    out = parse_output(record["output"], record["family"], thinking=record["thinking"], tools=record["tools"],
                       parse_tools=record.get("parse_tools", True))
    want = record["expect"]
    assert out.reasoning == want["reasoning"]
    assert out.content == want["content"]
    assert out.stop == want["stop"]
    assert out.thinking_closed == want.get("thinking_closed", True)
    assert bool(out.malformed) == want.get("malformed", False), out.malformed
    assert [c.name for c in out.calls] == [c["name"] for c in want["calls"]]
    for got, expected in zip(out.calls, want["calls"], strict=True):
        assert _typed(got.arguments) == _typed(expected["arguments"]), got.name
        assert sorted(got.ambiguous) == sorted(expected.get("ambiguous", [])), got.name
        assert got.raw.keys() == got.arguments.keys()
        assert all(isinstance(text, str) for text in got.raw.values())


# ---- read_value: one argument's text, read by its declared types ------------------------------------------

@pytest.mark.parametrize(("raw", "types", "value", "ambiguous"), [
    pytest.param("001", ["string"], "001", False, id="number-like-string"),
    pytest.param("true", ["string"], "true", False, id="boolean-like-string"),
    pytest.param('{"retries":3}', ["string"], '{"retries":3}', False, id="json-like-string-raw"),
    pytest.param("  padded  ", ["string"], "  padded  ", False, id="string-edges-kept"),
    pytest.param("true", ["boolean"], True, False, id="boolean"),
    pytest.param("42", ["integer"], 42, False, id="integer"),
    pytest.param(" 7\n", ["integer"], 7, False, id="integer-with-whitespace"),
    pytest.param("4.0", ["integer"], 4.0, False, id="whole-float-fits-integer"),
    pytest.param("4.5", ["integer"], "4.5", False, id="fraction-for-integer-keeps-text"),
    pytest.param("001", ["integer"], 1, True, id="non-json-for-integer-read-leniently"),
    pytest.param("True", ["boolean"], True, True, id="python-literal-for-boolean-read-leniently"),
    pytest.param("soon", ["integer"], "soon", False, id="text-for-integer-keeps-text"),
    pytest.param("3", ["number"], 3, False, id="integer-fits-number"),
    pytest.param("3.14", ["number"], 3.14, False, id="number"),
    pytest.param("null", ["integer", "null"], None, False, id="null"),
    pytest.param("[1, 2]", ["array"], [1, 2], False, id="array"),
    pytest.param('{"a": 1}', ["object"], {"a": 1}, False, id="object"),
    pytest.param("[1, 2]", ["object"], "[1, 2]", False, id="json-of-another-type-keeps-text"),
    pytest.param("null", ["string", "null"], None, True, id="string-or-null-given-null"),
    pytest.param("42", ["string", "integer"], 42, True, id="string-or-integer-given-number"),
    pytest.param("abc", ["string", "integer"], "abc", False, id="string-or-integer-given-text"),
    pytest.param("42", None, 42, True, id="undeclared-number"),
    pytest.param("true", None, True, True, id="undeclared-boolean"),
    pytest.param("Paris", None, "Paris", False, id="undeclared-text"),
    pytest.param('"quoted"', None, "quoted", True, id="undeclared-json-string"),
])
def test_read_value(raw: str, types: list[str] | None, value: Any, ambiguous: bool):
    got, unclear = read_value(raw, types)
    assert _typed(got) == _typed(value)
    assert unclear is ambiguous


# ---- parse_call and parse_output, directly ----------------------------------------------------------------

def test_parse_call_reads_name_values_and_raw_text():
    schema = WEATHER["function"]["parameters"]
    call, problems = parse_call("get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
                                "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n", schema)
    assert problems == []
    assert (call.name, call.arguments, call.raw, call.ambiguous) == (
        "get_weather", {"city": "Paris", "days": 3}, {"city": "Paris", "days": "3"}, frozenset())


def test_parse_call_without_schema_leaves_types_open():
    call, problems = parse_call("f<arg_key>n</arg_key><arg_value>3</arg_value>", None)
    assert problems == [] and call.arguments == {"n": 3} and call.ambiguous == {"n"}


def test_parse_call_key_without_value_is_malformed():
    call, problems = parse_call("get_weather<arg_key>city</arg_key>", None)
    assert call.name == "get_weather" and call.arguments == {}
    assert len(problems) == 1 and "unparsed text in the call to get_weather" in problems[0]


def test_unclosed_call_is_malformed_and_not_a_call():
    text = "Checking.<tool_call>get_weather<arg_key>city</arg_key><arg_value>Par"
    out = parse_output(text, "glm47", thinking=False, tools=[WEATHER])
    assert out.calls == [] and out.stop is None
    assert len(out.malformed) == 1 and out.malformed[0].startswith("a tool call is not closed: '<tool_call>get_weather")
    assert out.content.startswith("Checking.")


@pytest.mark.parametrize("stop", STOP_TOKENS)
def test_stop_token_only_at_the_end(stop: str):
    assert parse_output(f"Done.{stop}", "glm47", thinking=False).stop == stop
    inner = parse_output(f"Done.{stop} and more", "glm47", thinking=False)
    assert inner.stop is None and inner.content == f"Done.{stop} and more"


def test_glm45_think_block_must_open_the_output():
    assert parse_output("  \n<think>r</think>a", "glm45", thinking=True).reasoning == "r"
    late = parse_output("Sure. <think>r</think>a", "glm45", thinking=True)
    assert late.reasoning is None and late.content == "Sure. <think>r</think>a"


def test_tool_choice_none_still_splits_reasoning():
    text = "\n<think>No tool.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Oslo</arg_value>\n</tool_call>"
    out = parse_output(text, "glm45", thinking=True, tools=[WEATHER], parse_tools=False)
    assert out.reasoning == "No tool." and out.calls == [] and out.content.startswith("\n<tool_call>get_weather")


def test_tools_as_a_tuple_like_case_tools():
    out = parse_output("<tool_call>get_weather<arg_key>days</arg_key><arg_value>2</arg_value></tool_call>",
                       "glm47", thinking=False, tools=(WEATHER,))
    assert out.calls[0].arguments == {"days": 2}


@pytest.mark.parametrize(("reasoning", "thought"), [(None, False), ("", False), (" \n", False), ("r", True)])
def test_thought_means_a_non_blank_think_body(reasoning: str | None, thought: bool):
    assert GeneratedOutput(reasoning, "").thought is thought
