"""Case files: the shipped ones load and are consistent; a bad record is named by file and id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from pytest_glm.cases import DEFAULT_DATA_DIR, load_cases
from pytest_glm.exceptions import ConfigError
from pytest_glm.reference.targets import argument_text, completion


def test_shipped_cases_load():
    cases = load_cases()
    assert len({c.id for c in cases}) == len(cases) >= 30
    categories = {c.category for c in cases}
    for needed in ("single_tool", "choose_among_several", "parallel", "parallel_multiple", "irrelevance",
                   "multi_turn", "tool_choice_required", "tool_choice_named", "tool_choice_none", "types",
                   "thinking_on", "thinking_off"):
        assert needed in categories
    for case in cases:
        for call in case.tool_calls:
            jsonschema.validate(call.arguments, case.tool_schema(call.name))


def test_request_is_greedy_and_carries_thinking_switch():
    case = next(c for c in load_cases() if c.id == "reasoning.off")
    req = case.request("m")
    assert req["temperature"] == 0 and req["extra_body"] == {"chat_template_kwargs": {"enable_thinking": False}}


def test_template_messages_parse_history_arguments():
    case = next(c for c in load_cases() if c.id == "multi_turn.answer_after_result")
    history = case.template_messages()[1]
    assert history["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert history["reasoning_content"] == history["reasoning"]
    assert isinstance(case.messages[1]["tool_calls"][0]["function"]["arguments"], str)  # the request keeps JSON


def _copy(tmp_path: Path) -> Path:
    for f in ("tools.json", "tool_calling.json", "reasoning.json"):
        shutil.copy(DEFAULT_DATA_DIR / f, tmp_path / f)
    return tmp_path


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d[0].update(tools=["nope"]), "unknown tools ['nope']"),
    (lambda d: d[0].update(surprise=1), "invalid: Additional properties"),
    (lambda d: d[1].update(id=d[0]["id"]), "duplicate case id"),
    (lambda d: d[0]["tool_calls"][0]["arguments"].update(city=7), "break its schema"),
    (lambda d: d[0]["tool_calls"][0].update(name="get_time"), "not among its tools"),
])
def test_bad_record_is_named(tmp_path, edit, message):
    data = _copy(tmp_path)
    _edit(data / "tool_calling.json", edit)
    with pytest.raises(ConfigError) as info:
        load_cases(data)
    assert "tool_calling.json case" in str(info.value) and message in str(info.value)


def test_targets_per_family():
    cases = {c.id: c for c in load_cases()}
    single = cases["single.weather"]
    assert completion(single, "glm45") == ("\n<think>The user wants the weather in Paris. I will call get_weather.</think>"
                                           "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
                                           "</tool_call><|observation|>")
    assert completion(single, "glm47") == ("The user wants the weather in Paris. I will call get_weather.</think>"
                                           "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
                                           "</tool_call><|observation|>")
    off = cases["reasoning.off"]
    assert completion(off, "glm45") == "\n42<|user|>"
    assert completion(off, "glm47") == "42<|user|>"
    assert completion(cases["types.zero_arguments"], "glm47").endswith("<tool_call>list_devices</tool_call><|observation|>")
    assert argument_text(None) == "null" and argument_text([1, 2.5]) == "[1, 2.5]" and argument_text("001") == "001"
