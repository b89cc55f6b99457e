"""Case files: the shipped ones load and are consistent; a bad record is named by file and id."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.cases import DEFAULT_DATA_DIR, load_cases
from pytest_glm.judging.matchers import sample
from pytest_glm.reference.targets import argument_text, completion, default_answers_file, load_answers


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
            jsonschema.validate(sample(call.arguments), case.tool_schema(call.name))


def test_request_is_greedy_asks_for_token_ids_and_carries_thinking_switch():
    cases = {c.id: c for c in load_cases()}
    req = cases["reasoning.off"].request("m")
    assert req["temperature"] == 0 and req["top_p"] == 1 and req["max_tokens"] == 1024
    assert req["extra_body"] == {"return_token_ids": True, "chat_template_kwargs": {"enable_thinking": False}}
    thinking = cases["reasoning.long"]
    assert thinking.request("m")["max_tokens"] == 8192 and thinking.request_timeout(120) == 8192 / 20
    assert cases["reasoning.off"].request_timeout(120) == 120


def test_reference_answers_cover_the_cases_and_fit_the_tools(tmp_path):
    cases = load_cases()
    for model in ("glm-tiny", "glm-tiny-variant"):
        assert set(load_answers(default_answers_file(model), cases)) == {c.id for c in cases}
    bad = json.loads(default_answers_file("glm-tiny").read_text())
    bad["single.weather"]["tool_calls"][0]["arguments"] = {"city": 7}
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"single\.weather: arguments of get_weather break its schema"):
        load_answers(tmp_path / "a.json", cases)
    del bad["single.weather"]
    (tmp_path / "a.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"missing \['single.weather'\]"):
        load_answers(tmp_path / "a.json", cases)


def test_a_long_message_is_written_out(tmp_path):
    case = next(c for c in load_cases() if c.id == "context.long_history")
    history = case.messages[0]["content"]
    assert history.startswith("Here is today's server log:\n2026-12-01T12:00:00Z INFO") and len(history) > 10_000
    assert case.request("m")["messages"][0]["content"] == history and case.max_tokens == 256
    path = _copy(tmp_path)
    _edit(path / "tool_calling.json", lambda d: d[0]["messages"][0].update(content={"$repeat": "x"}))
    with pytest.raises(ConfigError, match=r"single\.weather.*invalid"):
        load_cases(path)


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
    (lambda d: d[0]["tool_calls"][0]["arguments"].update(city={"$maybe": 1}), "unknown matcher '$maybe'"),
    (lambda d: d[0]["tool_calls"][0]["arguments"].update(city={"$any": []}), "$any takes a non-empty list"),
])
def test_bad_record_is_named(tmp_path, edit, message):
    data = _copy(tmp_path)
    _edit(data / "tool_calling.json", edit)
    with pytest.raises(ConfigError) as info:
        load_cases(data)
    assert "tool_calling.json case" in str(info.value) and message in str(info.value)


def test_targets_per_family():
    cases = {c.id: c for c in load_cases()}
    answers = load_answers(default_answers_file("glm-tiny"), list(cases.values()))
    variant = load_answers(default_answers_file("glm-tiny-variant"), list(cases.values()))

    def completion_of(case_id: str, family: str, book=answers) -> str:
        return completion(cases[case_id], book[case_id], family)

    assert completion_of("single.weather", "glm45") == ("\n<think>The user wants the weather in Paris. I will call get_weather.</think>"
                                           "\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
                                           "</tool_call><|observation|>")
    assert completion_of("single.weather", "glm47") == ("The user wants the weather in Paris. I will call get_weather.</think>"
                                           "<tool_call>get_weather<arg_key>city</arg_key><arg_value>Paris</arg_value>"
                                           "</tool_call><|observation|>")
    assert completion_of("reasoning.off", "glm45") == "\n42<|user|>"
    assert completion_of("reasoning.off", "glm47") == "42<|user|>"
    assert completion_of("types.zero_arguments", "glm47").endswith("<tool_call>list_devices</tool_call><|observation|>")
    # GLM-4.5's dynamic thinking: an empty think block
    assert completion_of("reasoning.arithmetic", "glm45", variant) == "\n<think></think>\n17 plus 25 is 42.<|user|>"
    assert argument_text(None) == "null" and argument_text([1, 2.5]) == "[1, 2.5]" and argument_text("001") == "001"
