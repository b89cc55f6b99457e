"""The faithfulness checks on the argument schemas real clients send (Pydantic, Zod) and on the wire form
of the arguments: each check passes what vLLM 0.32 serves correctly and fails the bug's symptom."""

from __future__ import annotations

import json

import pytest

from pytest_glm.catalog.versions import known_defect
from pytest_glm.judging.answers import Answer, Call
from pytest_glm.judging.case_answers import AnswerCache
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.faithfulness import id_shape, id_shape_findings, judge
from pytest_glm.judging.glm_output import _declared_types, parse_output

CASES = {c.id: c for c in load_cases()}


def call_text(name: str, pairs: list[tuple[str, str]], family: str = "glm47") -> str:
    if family == "glm47":
        body = "".join(f"<arg_key>{k}</arg_key><arg_value>{v}</arg_value>" for k, v in pairs)
        return f"Call it.</think><tool_call>{name}{body}</tool_call><|observation|>"
    body = "".join(f"<arg_key>{k}</arg_key>\n<arg_value>{v}</arg_value>\n" for k, v in pairs)
    return f"\n<think>Call it.</think>\n<tool_call>{name}\n{body}</tool_call><|observation|>"


def served(name: str, arguments: str, *, call_id: str = "chatcmpl-tool-0123456789abcdef") -> Answer:
    return Answer(reasoning="Call it.", finish_reason="tool_calls", completion_tokens=24, token_ids=list(range(24)),
                  calls=[Call(call_id, name, arguments)])


def findings(case_id: str, text: str, arguments: str) -> list[str]:
    case = CASES[case_id]
    name = case.tool_calls[0].name
    return [str(f) for f in judge(case, served(name, arguments), text, "glm47")]


# ---- the schema says the type, however the client wrote it -------------------------------------------------

@pytest.mark.parametrize(("prop", "types"), [
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, ["null", "string"]),  # Pydantic Optional[str]
    ({"type": ["string", "null"]}, ["null", "string"]),  # Zod .nullable()
    ({"$ref": "#/$defs/Slot"}, ["object"]),  # Pydantic nested model
    ({"allOf": [{"$ref": "#/$defs/Slot"}], "description": "d"}, ["object"]),  # Pydantic with a description
    ({"type": "integer", "nullable": True}, ["integer", "null"]),  # OpenAPI 3.0
    ({"enum": [1, "x", None]}, ["integer", "null", "string"]),
    ({"description": "anything"}, None),  # no type: any
    ({"anyOf": [{"type": "integer"}, {}]}, None),  # one branch takes anything
    ({"$ref": "#/$defs/Missing"}, None),
    ({"$ref": "https://example.com/s.json"}, None),  # not followed: any
])
def test_declared_types_follow_what_clients_emit(prop, types):
    schema = {"$defs": {"Slot": {"type": "object"}}, "properties": {"p": prop}}
    assert _declared_types(schema, "p") == types


def test_a_reference_to_an_object_must_come_back_as_an_object():
    text = call_text("book_room", [("room", "Orion"), ("slot", '{"day": "Tuesday", "hour": 14}')])
    good = json.dumps({"room": "Orion", "slot": {"day": "Tuesday", "hour": 14}})
    assert findings("schema.refs", text, good) == []
    stringified = json.dumps({"room": "Orion", "slot": '{"day": "Tuesday", "hour": 14}'})  # vLLM 0.32
    (finding,) = findings("schema.refs", text, stringified)
    assert "returned slot='{\"day\": \"Tuesday\", \"hour\": 14}' where the model generated {'day': 'Tuesday'" in finding


def test_optional_values_and_null():
    text = call_text("save_note", [("title", "Ideas"), ("tag", "null"), ("folder", "null")])
    assert findings("schema.optional_null", text, '{"title": "Ideas", "tag": null, "folder": null}') == []
    # string-or-null: the text null is the string "null" or null; both readings are faithful
    assert findings("schema.optional_null", text, '{"title": "Ideas", "tag": "null", "folder": null}') == []
    (finding,) = findings("schema.optional_null", text, '{"title": "Ideas", "tag": null}')
    assert "dropped the argument 'folder'" in finding


def test_untyped_parameters_take_either_reading_but_not_another_value():
    text = call_text("record_reading", [("count", "5"), ("valid", "true"), ("samples", "[1, 2.5]")])
    assert findings("schema.untyped", text, '{"count": 5, "valid": true, "samples": [1, 2.5]}') == []
    assert findings("schema.untyped", text, '{"count": "5", "valid": "true", "samples": "[1, 2.5]"}') == []
    (finding,) = findings("schema.untyped", text, '{"count": 5, "valid": true, "samples": [1, 2]}')
    assert "returned samples=[1, 2]" in finding


def test_falsy_values_keep_their_type():
    pairs = [("notifications", "false"), ("retries", "0"), ("nickname", ""), ("tags", "[]"), ("metadata", "{}")]
    text = call_text("update_settings", pairs)
    good = '{"notifications": false, "retries": 0, "nickname": "", "tags": [], "metadata": {}}'
    assert findings("schema.falsy", text, good) == []
    for bad, key in (('"notifications": "false"', "notifications"), ('"retries": null', "retries"),
                     ('"tags": ""', "tags"), ('"metadata": []', "metadata")):
        arguments = json.dumps({**json.loads(good), **json.loads("{" + bad + "}")})
        (finding,) = findings("schema.falsy", text, arguments)
        assert f"returned {key}=" in finding
    (finding,) = findings("schema.falsy", text, '{"notifications": false, "retries": 0, "tags": [], "metadata": {}}')
    assert "dropped the argument 'nickname'" in finding


def test_special_characters_byte_for_byte():
    code = 'if a < b & c > 0:\n    print("C:\\\\temp\\n")\n'
    text = call_text("write_file", [("path", "check.py"), ("content", code)])
    assert findings("schema.special_chars", text, json.dumps({"path": "check.py", "content": code})) == []
    for altered in (code.replace("&", "&amp;"), code.replace("\\\\", "\\"), code.replace('"', "'"), code.rstrip("\n")):
        (finding,) = findings("schema.special_chars", text, json.dumps({"path": "check.py", "content": altered}))
        assert "returned content=" in finding


def test_nested_arrays_and_objects():
    value = {"items": [{"sku": "A-1", "quantity": 2}], "shipping": {"address": {"street": "5 Main St", "city": "X"}}}
    text = call_text("create_order", [(k, json.dumps(v)) for k, v in value.items()])
    assert findings("schema.nested", text, json.dumps(value)) == []
    flattened = {**value, "shipping": json.dumps(value["shipping"])}
    (finding,) = findings("schema.nested", text, json.dumps(flattened))
    assert "returned shipping=" in finding


# ---- the wire form: the raw arguments string, not only its values ------------------------------------------

def test_a_call_without_arguments_sends_an_empty_object():
    text = call_text("list_devices", [])
    assert findings("types.zero_arguments", text, "{}") == []
    (finding,) = findings("types.zero_arguments", text, "")
    assert finding.startswith("API: call 0 (list_devices): `arguments` is an empty string")


def test_non_ascii_arrives_as_itself():
    case = CASES["types.unicode"]
    text = call_text("translate", [("text", "Grüße aus Köln"), ("target_language", "ja")])
    assert [str(f) for f in judge(case, served("translate", '{"text": "Grüße aus Köln", "target_language": "ja"}'),
                                  text, "glm47")] == []
    escaped = json.dumps({"text": "Grüße aus Köln", "target_language": "ja"})  # ensure_ascii: \u00fc ...
    (finding,) = [str(f) for f in judge(case, served("translate", escaped), text, "glm47")]
    assert "non-ASCII text arrives escaped (\\u00df, \\u00f6, \\u00fc)" in finding
    # an escape the model itself wrote is passed through as it is
    written = call_text("translate", [("text", "K\\u00f6ln"), ("target_language", "de")])
    assert [str(f) for f in judge(case, served("translate", json.dumps({"text": "K\\u00f6ln", "target_language": "de"})),
                                  written, "glm47")] == []


def test_a_key_twice_is_found():
    text = call_text("get_weather", [("city", "Paris")])
    (finding,) = findings("single.weather", text, '{"city": "Lyon", "city": "Paris"}')
    assert "the arguments repeat the key 'city'" in finding


def test_id_shape_streamed_and_not():
    assert id_shape("chatcmpl-tool-0123456789abcdef") == "<8>-tool-<16>"
    plain, streamed = served("f", "{}"), served("f", "{}", call_id="chatcmpl-tool-fedcba9876543210")
    assert id_shape_findings(plain, streamed) == []
    other = served("f", "{}", call_id="call_0")
    (finding,) = id_shape_findings(plain, other)
    assert "one shape non-streamed (<8>-tool-<16>) and another streamed (call_0)" in str(finding)


def test_an_unclosed_call_may_be_dropped_or_kept():
    text = "Send it.</think><tool_call>send_email<arg_key>to</arg_key><|observation|>"
    generated = parse_output(text, "glm47", thinking=True, tools=CASES["schema.strict"].tools)
    assert generated.content_readings() == ("<tool_call>send_email<arg_key>to</arg_key>", "")


# ---- known defects ----------------------------------------------------------------------------------------

def test_known_defect_excuses_only_its_symptom_on_its_case_and_versions():
    finding = "tool parser: call 0 (book_room): the tool parser returned slot='{\"day\": 1}' where the model generated"
    assert known_defect("0.32.0", "schema.refs", finding) is not None
    assert known_defect("0.31.0", "schema.refs", finding) is None
    assert known_defect("0.32.0", "schema.nested", finding) is None
    assert known_defect("0.32.0", "schema.refs", "tool parser: dropped the argument 'room'") is None


def _cache_holding(case_id: str, arguments: str, version: str = "0.32.0", *, fail: bool = False) -> AnswerCache:
    """An AnswerCache whose (case, plain) answer is already there and came without token ids."""
    from types import SimpleNamespace as NS
    deployment = NS(vllm_version=version, model=NS(family="glm47"), profile=NS(accelerator="cpu"))
    cache = AnswerCache(NS(client=lambda: NS(close=lambda: None), model="m"), deployment, known_defects_fail=fail)
    name = CASES[case_id].tool_calls[0].name
    cache._answers[(case_id, False)] = Answer(reasoning="Call it.", finish_reason="tool_calls", completion_tokens=24,
                                              token_ids=None, calls=[Call("chatcmpl-tool-0", name, arguments)])
    return cache


def test_without_token_ids_the_ref_defect_is_recognised_by_what_was_served():
    """A gateway that drops token ids: a $ref'd object served as a JSON string is still the known defect
    (no model writes an object as a string), and only that."""
    case = CASES["schema.refs"]
    stringified = json.dumps({"room": "Orion", "slot": json.dumps({"day": "Tuesday", "hour": 14})})
    cache = _cache_holding("schema.refs", stringified)
    (known,) = cache.known(case, False)
    assert "recognised without token ids" in known and "#46924" in known
    assert cache.fully_excused(case, False)
    # Another version, --glm-known-defects fail, or a wrong value beside it: not excused.
    assert not _cache_holding("schema.refs", stringified, "0.31.0").fully_excused(case, False)
    assert not _cache_holding("schema.refs", stringified, fail=True).fully_excused(case, False)
    wrong_room = json.dumps({"room": "Lyra", "slot": json.dumps({"day": "Tuesday", "hour": 14})})
    assert not _cache_holding("schema.refs", wrong_room).fully_excused(case, False)
    not_json = json.dumps({"room": "Orion", "slot": "Tuesday 14:00"})
    assert not _cache_holding("schema.refs", not_json).fully_excused(case, False)
    healthy = json.dumps({"room": "Orion", "slot": {"day": "Tuesday", "hour": 14}})
    assert _cache_holding("schema.refs", healthy).known(case, False) == []
