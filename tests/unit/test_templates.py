"""The reference chat templates render GLM's formats byte for byte (glm-facts §1.3, §1.4, §1.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm.catalog.models import family_of_template, render_template
from pytest_glm.judging.glm_format import RENDERED_GLM45 as EXPECTED_45
from pytest_glm.judging.glm_format import RENDERED_GLM47 as EXPECTED_47
from pytest_glm.judging.glm_format import WEATHER, WORKED, next_request_prompt

TEMPLATES = Path(__file__).parents[2] / "pytest_glm" / "reference" / "templates"
T45 = (TEMPLATES / "glm45.jinja").read_text()
T47 = (TEMPLATES / "glm47.jinja").read_text()

def r45(messages, **kw):
    return render_template(T45, messages, **kw)


def r47(messages, **kw):
    return render_template(T47, messages, **kw)


def test_worked_example_glm45():
    assert r45(WORKED, tools=[WEATHER], add_generation_prompt=False) == EXPECTED_45


def test_worked_example_glm47():
    assert r47(WORKED, tools=[WEATHER], add_generation_prompt=False) == EXPECTED_47


def test_next_request_glm45():
    head = EXPECTED_45[: EXPECTED_45.index("<|assistant|>\n<think></think>\nIt is")]
    assert r45(WORKED[:4], tools=[WEATHER], add_generation_prompt=True) == head + "<|assistant|>"
    assert next_request_prompt("glm45") == head + "<|assistant|>"
    off = r45(WORKED[:4], tools=[WEATHER], add_generation_prompt=True, enable_thinking=False)
    assert off == head.replace("Paris?<|assistant|>", "Paris?/nothink<|assistant|>") + "<|assistant|>\n<think></think>"
    assert next_request_prompt("glm45", thinking=False) == off
    # the tool-call turn after the last user message keeps its reasoning
    assert "<think>I should call get_weather.</think>" in off


def test_next_request_glm47():
    head = EXPECTED_47[: EXPECTED_47.index("<|assistant|></think>It is")]
    assert r47(WORKED[:4], tools=[WEATHER], add_generation_prompt=True) == head + "<|assistant|><think>"
    assert next_request_prompt("glm47") == head + "<|assistant|><think>"
    off = r47(WORKED[:4], tools=[WEATHER], add_generation_prompt=True, enable_thinking=False)
    assert off == head + "<|assistant|></think>"
    assert next_request_prompt("glm47", thinking=False) == off
    assert "/nothink" not in off


def test_nothink_on_every_user_turn_once():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c/nothink"}]
    out = r45(msgs, add_generation_prompt=True, enable_thinking=False)
    assert out == "[gMASK]<sop><|user|>\na/nothink<|assistant|>\n<think></think>\nb<|user|>\nc/nothink<|assistant|>\n<think></think>"


def test_no_tools_no_tools_block():
    assert r45([{"role": "user", "content": "hi"}], add_generation_prompt=True) == "[gMASK]<sop><|user|>\nhi<|assistant|>"
    assert r47([{"role": "user", "content": "hi"}], add_generation_prompt=True) == "[gMASK]<sop><|user|>hi<|assistant|><think>"


def test_reasoning_of_earlier_turns_is_dropped():
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "reasoning_content": "r1", "content": "a1"},
            {"role": "user", "content": "q2"}, {"role": "assistant", "reasoning_content": "r2", "content": "a2"}]
    assert r45(msgs) == "[gMASK]<sop><|user|>\nq1<|assistant|>\n<think></think>\na1<|user|>\nq2<|assistant|>\n<think>r2</think>\na2"
    assert r47(msgs) == "[gMASK]<sop><|user|>q1<|assistant|></think>a1<|user|>q2<|assistant|><think>r2</think>a2"


def test_clear_thinking_false_keeps_reasoning_glm47():
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "reasoning_content": "r1", "content": "a1"},
            {"role": "user", "content": "q2"}]
    kept = r47(msgs, add_generation_prompt=True, clear_thinking=False)
    assert kept == "[gMASK]<sop><|user|>q1<|assistant|><think>r1</think>a1<|user|>q2<|assistant|><think>"
    assert "r1" not in r47(msgs, add_generation_prompt=True)
    assert "r1" not in r45(msgs, add_generation_prompt=True, clear_thinking=False)  # no such switch in glm45


def test_reasoning_split_out_of_content():
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "<think>\nthe thought\n</think>\n\nthe answer"}]
    assert r45(msgs).endswith("<|assistant|>\n<think>the thought</think>\nthe answer")
    assert r47(msgs).endswith("<|assistant|><think>the thought</think>the answer")


def test_consecutive_tool_results_share_one_observation():
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "f", "arguments": {}}}, {"function": {"name": "g", "arguments": {"x": 1}}}]},
            {"role": "tool", "content": "A"}, {"role": "tool", "content": "B"}]
    assert r45(msgs).endswith(
        "<|assistant|>\n<think></think>\n<tool_call>f\n</tool_call>\n<tool_call>g\n<arg_key>x</arg_key>\n"
        "<arg_value>1</arg_value>\n</tool_call><|observation|>\n<tool_response>\nA\n</tool_response>\n"
        "<tool_response>\nB\n</tool_response>")
    assert r47(msgs).endswith("<|assistant|></think><tool_call>f</tool_call><tool_call>g<arg_key>x</arg_key>"
                              "<arg_value>1</arg_value></tool_call><|observation|><tool_response>A</tool_response>"
                              "<tool_response>B</tool_response>")


def test_tool_output_list_renders_like_strings():
    base = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "f", "arguments": {}}}]}]
    as_list = [*base, {"role": "tool", "content": [{"output": "A"}, {"output": "B"}]}]
    as_strings = [*base, {"role": "tool", "content": "A"}, {"role": "tool", "content": "B"}]
    assert r45(as_list) == r45(as_strings)
    assert r47(as_list) == r47(as_strings)


def test_typed_argument_values():
    args = {"s": "001", "i": 3, "f": 2.5, "b": True, "n": None, "a": [1, "x"], "o": {"k": "ü"}, "j": '{"a": 1}'}
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": args}}]}]
    out = r47(msgs)
    assert ('<arg_key>s</arg_key><arg_value>001</arg_value><arg_key>i</arg_key><arg_value>3</arg_value>'
            '<arg_key>f</arg_key><arg_value>2.5</arg_value><arg_key>b</arg_key><arg_value>true</arg_value>'
            '<arg_key>n</arg_key><arg_value>null</arg_value><arg_key>a</arg_key><arg_value>[1, "x"]</arg_value>'
            '<arg_key>o</arg_key><arg_value>{"k": "ü"}</arg_value><arg_key>j</arg_key><arg_value>{"a": 1}</arg_value>') in out


def test_content_parts_and_none():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None}]
    assert r45(msgs) == "[gMASK]<sop><|user|>\nab<|assistant|>\n<think></think>"
    assert r47(msgs) == "[gMASK]<sop><|user|>ab<|assistant|></think>"


def test_non_ascii_kept_in_tools_json():
    tool = {"type": "function", "function": {"name": "t", "description": "Grüße 東京", "parameters": {}}}
    assert '"description": "Grüße 東京"' in r45([{"role": "user", "content": "x"}], tools=[tool])


@pytest.mark.parametrize(("template", "family"), [(T45, "glm45"), (T47, "glm47")])
def test_family_is_recognised(template, family):
    assert family_of_template(template) == family
