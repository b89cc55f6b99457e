"""Tolerant matchers (``pytest_glm.judging.matchers``): what each accepts, what it rejects, and why, in words."""

from __future__ import annotations

import time

import jsonschema
import pytest

from pytest_glm.judging import matchers
from pytest_glm.judging.cases import load_cases
from pytest_glm.judging.matchers import ABSENT, OPERATORS, check_matcher, mismatch, operator, sample

FIB_FROM_0 = """\
numbers = []
a, b = 0, 1
for _ in range(10):
    numbers.append(a)
    a, b = b, a + b
print("Fibonacci:", ", ".join(map(str, numbers)))
print("Sum:", sum(numbers))
"""
FIB_FROM_1 = FIB_FROM_0.replace("a, b = 0, 1", "a, b = 1, 1")
FIB_OUTPUT = {"$python": {"stdout_any_of": [["34", "88"], ["55", "143"]]}}


# ---- operator -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", OPERATORS)
def test_operator_of_a_matcher(op: str):
    assert operator({op: "x"}) == op


@pytest.mark.parametrize("value", [{"city": "Paris"}, {"$any": [1], "other": 2}, {"$unknown": 1}, "text", [1], None])
def test_operator_of_a_plain_value(value):
    assert operator(value) is None


# ---- plain values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expected", "actual"), [
    ("Paris", "Paris"),
    ("Paris", "paris"),
    ("New York", "  new   YORK \n"),
    ("Straße", "STRASSE"),  # casefold
    (450.5, 450.50),
    (2, 2.0),
    (True, True),
    (None, None),
    ([1, "a"], [1.0, "A"]),
    ({"city": "Lyon", "room": "B2"}, {"room": "b2", "city": "lyon"}),
    ({"city": "Lyon"}, {"city": "Lyon", "room": "B2"}),  # keys not asked for are not judged here
])
def test_plain_value_accepted(expected, actual):
    assert mismatch(expected, actual) is None


@pytest.mark.parametrize(("expected", "actual", "reason"), [
    ("Paris", "Lyon", "'Lyon', expected 'Paris'"),
    (True, 1, "1, expected True"),
    (1, True, "True, expected 1"),
    (False, 0, "0, expected False"),
    (None, "null", "'null', expected None"),
    (1, "1", "'1', expected 1"),
    ("001", 1, "1, expected '001'"),
    (450.5, 450.51, "450.51, expected 450.5"),
    ([1, 2], [2, 1], "[0]: 2, expected 1"),
    ([1, 2], [1], "[1], expected [1, 2]"),
    ({"location": {"city": "Lyon"}}, {"location": {"city": "Paris"}}, "location: city: 'Paris', expected 'Lyon'"),
    ({"city": "Lyon"}, {}, "city: missing"),
    ({"city": "Lyon"}, "Lyon", "'Lyon', expected {'city': 'Lyon'}"),
    ("Paris", ABSENT, "missing"),
])
def test_plain_value_rejected_with_reason(expected, actual, reason: str):
    assert mismatch(expected, actual) == reason


# ---- $any -----------------------------------------------------------------------------------------------------

TOKYO = {"$any": ["Tokyo", "東京", "东京"]}


@pytest.mark.parametrize("actual", ["Tokyo", "tokyo", "東京", "东京"])
def test_any_accepts_each_alternative(actual):
    assert mismatch(TOKYO, actual) is None


def test_any_rejects_others_and_absence():
    assert mismatch(TOKYO, "Kyoto") == "'Kyoto', expected any of ['Tokyo', '東京', '东京']"
    assert mismatch(TOKYO, ABSENT) == "missing"


def test_any_of_matchers():
    either = {"$any": [{"$contains": "sunny"}, 21]}
    assert mismatch(either, "It is SUNNY.") is None and mismatch(either, 21.0) is None
    assert "expected any of" in mismatch(either, "rain")


# ---- $datetime --------------------------------------------------------------------------------------------

TEN = {"$datetime": "2026-12-03T10:00"}


@pytest.mark.parametrize("actual", [
    "2026-12-03T10:00", "2026-12-03T10:00:00", "2026-12-03T10:00:00Z", "2026-12-03T10:00:00z",
    "2026-12-03 10:00", " 2026-12-03T10:00:00.000 ",
    "2026-12-03T10:00:00+02:00",  # read as wall-clock time: the offset is dropped
])
def test_datetime_accepts_the_same_moment(actual):
    assert mismatch(TEN, actual) is None


@pytest.mark.parametrize(("actual", "reason"), [
    ("2026-12-03T11:00", "'2026-12-03T11:00' is another moment than 2026-12-03T10:00"),
    ("2026-12-04T10:00:00Z", "'2026-12-04T10:00:00Z' is another moment than 2026-12-03T10:00"),
    ("2026-12-03", "'2026-12-03' is not an ISO 8601 date-time (expected 2026-12-03T10:00)"),
    ("tomorrow at ten", "'tomorrow at ten' is not an ISO 8601 date-time (expected 2026-12-03T10:00)"),
    (1765000000, "1765000000 is not an ISO 8601 date-time (expected 2026-12-03T10:00)"),
    (ABSENT, "missing"),
])
def test_datetime_rejects_with_reason(actual, reason: str):
    assert mismatch(TEN, actual) == reason


# ---- $absent_or -------------------------------------------------------------------------------------------

def test_absent_or_accepts_absence_or_the_value():
    optional_null = {"$absent_or": None}
    assert mismatch(optional_null, ABSENT) is None
    assert mismatch(optional_null, None) is None
    assert mismatch(optional_null, 15) == "15, expected None"
    assert mismatch(optional_null, 0) == "0, expected None"


def test_absent_or_inside_arguments():
    expected = {"title": "Design review", "reminder_minutes": {"$absent_or": None}}
    assert mismatch(expected, {"title": "design review"}) is None
    assert mismatch(expected, {"title": "Design review", "reminder_minutes": None}) is None
    assert mismatch(expected, {"title": "Design review", "reminder_minutes": 10}) == "reminder_minutes: 10, expected None"
    assert mismatch({"unit": {"$absent_or": {"$any": ["celsius", "c"]}}}, {"unit": "C"}) is None


# ---- $set -----------------------------------------------------------------------------------------------------

PEOPLE = {"$set": ["Ana", "Bo"]}


@pytest.mark.parametrize("actual", [["Ana", "Bo"], ["Bo", "Ana"], ["ana", " BO "]])
def test_set_accepts_any_order(actual):
    assert mismatch(PEOPLE, actual) is None


@pytest.mark.parametrize(("actual", "reason"), [
    (["Ana"], "['Ana'], expected 2 items in any order: ['Ana', 'Bo']"),
    (["Ana", "Bo", "Cy"], "['Ana', 'Bo', 'Cy'], expected 2 items in any order: ['Ana', 'Bo']"),
    (["Ana", "Ana"], "['Ana', 'Ana'], expected ['Ana', 'Bo'] in any order"),
    (["Ana", "Cy"], "['Ana', 'Cy'], expected ['Ana', 'Bo'] in any order"),
    ("Ana, Bo", "'Ana, Bo', expected 2 items in any order: ['Ana', 'Bo']"),
    (ABSENT, "missing"),
])
def test_set_rejects_with_reason(actual, reason: str):
    assert mismatch(PEOPLE, actual) == reason


def test_set_counts_duplicates():
    assert mismatch({"$set": ["a", "a"]}, ["a", "a"]) is None
    assert mismatch({"$set": ["a", "a"]}, ["a", "b"]) is not None


# ---- $json ----------------------------------------------------------------------------------------------------

POLICY = {"$json": {"retries": 3, "backoff": [1, 2]}}


@pytest.mark.parametrize("actual", [
    '{"retries":3,"backoff":[1,2]}',
    '{"retries": 3, "backoff": [1, 2]}',
    '{\n  "backoff": [1, 2],\n  "retries": 3\n}',
])
def test_json_accepts_any_spacing_and_key_order(actual):
    assert mismatch(POLICY, actual) is None


@pytest.mark.parametrize(("actual", "reason"), [
    ({"retries": 3, "backoff": [1, 2]},
     "{'retries': 3, 'backoff': [1, 2]} is a dict, expected a string holding the JSON {'retries': 3, 'backoff': [1, 2]}"),
    ("retries=3", "'retries=3' is not JSON text (expected the JSON {'retries': 3, 'backoff': [1, 2]})"),
    ('{"retries":4,"backoff":[1,2]}',
     "'{\"retries\":4,\"backoff\":[1,2]}' parses to {'retries': 4, 'backoff': [1, 2]}, expected {'retries': 3, 'backoff': [1, 2]}"),
    ('{"retries":3,"backoff":[2,1]}',
     "'{\"retries\":3,\"backoff\":[2,1]}' parses to {'retries': 3, 'backoff': [2, 1]}, expected {'retries': 3, 'backoff': [1, 2]}"),
])
def test_json_rejects_with_reason(actual, reason: str):
    assert mismatch(POLICY, actual) == reason


def test_json_is_strict_about_top_level_booleans():
    assert mismatch({"$json": 1}, "1") is None
    assert mismatch({"$json": 1}, "true") == "'true' parses to True, expected 1"


def test_json_is_strict_about_nested_booleans():
    assert mismatch({"$json": {"retries": 1}}, '{"retries": true}') is not None


# ---- $contains ------------------------------------------------------------------------------------------------

def test_contains():
    assert mismatch({"$contains": "144"}, "The answer is 144.") is None
    assert mismatch({"$contains": "Paris"}, "it is PARIS") is None
    assert mismatch({"$contains": "144"}, "The answer is 124.") == "'The answer is 124.' does not contain '144'"
    assert mismatch({"$contains": "144"}, 144) == "'144' does not contain '144'"
    assert mismatch({"$contains": "144"}, ABSENT) == "missing"


# ---- $python --------------------------------------------------------------------------------------------------

def test_python_accepts_a_correct_program():
    assert mismatch(FIB_OUTPUT, FIB_FROM_0) is None


def test_python_accepts_the_other_convention():
    assert mismatch(FIB_OUTPUT, FIB_FROM_1) is None


def test_python_rejects_wrong_output():
    why = mismatch(FIB_OUTPUT, "print('Sum: 89')")
    assert why == "the program printed 'Sum: 89\\n', expected it to show one of [['34', '88'], ['55', '143']]"


def test_python_rejects_a_syntax_error():
    assert mismatch(FIB_OUTPUT, "def fib(n:\n    return n\n") == "the code does not parse as Python: '(' was never closed (line 1)"


def test_python_rejects_a_program_that_raises():
    why = mismatch(FIB_OUTPUT, "print(34, 88)\nprint(1 / 0)\n")
    assert why == "the program exited with status 1: ZeroDivisionError: division by zero"


def test_python_rejects_a_program_that_never_ends(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(matchers, "PYTHON_TIMEOUT_S", 0.5)
    started = time.monotonic()
    why = mismatch(FIB_OUTPUT, "while True:\n    pass\n")
    assert why == "the program did not finish within 0.5 s"
    assert time.monotonic() - started < 5


def test_python_rejects_what_is_not_code():
    assert mismatch(FIB_OUTPUT, 34) == "code is a int, not a string"
    assert mismatch(FIB_OUTPUT, ABSENT) == "missing"


def test_python_runs_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setenv("GLM_MATCHER_SECRET", "leak")
    monkeypatch.chdir(tmp_path)
    probe = f"import os\nprint(os.environ.get('GLM_MATCHER_SECRET', 'clean'))\nprint(os.getcwd() != {str(tmp_path)!r})\n"
    assert mismatch({"$python": {"stdout_any_of": [["clean", "True"]]}}, probe) is None


# ---- check_matcher ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("good", [
    {"city": {"$any": ["Paris", "Paris, France"]}},
    {"start": {"$datetime": "2026-12-03T10:00"}, "attendees": {"$set": ["Ana", "Bo"]}},
    {"reminder_minutes": {"$absent_or": None}},
    {"value": {"$json": {"retries": 3}}},
    {"code": FIB_OUTPUT},
    {"$contains": "144"},
    [{"$any": [1, 2]}, "plain"],
    {"plain": {"nested": [1, 2]}},
])
def test_check_matcher_accepts_well_formed(good):
    check_matcher(good, "case x")


@pytest.mark.parametrize(("bad", "message"), [
    ({"city": {"$anyy": ["Paris"]}}, r"^case x\.city: unknown matcher '\$anyy' \(known: \$any, \$datetime"),
    ({"$any": []}, r"^case x: \$any takes a non-empty list$"),
    ({"$any": "Paris"}, r"^case x: \$any takes a non-empty list$"),
    ({"$set": []}, r"^case x: \$set takes a non-empty list$"),
    ({"$datetime": "tomorrow"}, r"^case x: \$datetime takes an ISO 8601 date-time string, not 'tomorrow'$"),
    ({"$datetime": "2026-12-03"}, r"^case x: \$datetime takes an ISO 8601 date-time string, not '2026-12-03'$"),
    ({"$datetime": 20261203}, r"\$datetime takes an ISO 8601 date-time string"),
    ({"$contains": 144}, r"^case x: \$contains takes a string$"),
    ({"$python": {"stdout_any_of": []}}, r"^case x: \$python takes \{'stdout_any_of'"),
    ({"$python": {"stdout_any_of": [[]]}}, r"\$python takes"),
    ({"$python": {"stdout": ["34"]}}, r"\$python takes"),
    ({"$python": ["34"]}, r"\$python takes"),
    ([1, {"loc": {"$oops": 1}}], r"^case x\[1\]\.loc: unknown matcher '\$oops'"),
    ({"$any": [1], "extra": 2}, r"^case x: unknown matcher '\$any'"),  # an operator must stand alone
])
def test_check_matcher_rejects_malformed(bad, message: str):
    with pytest.raises(ValueError, match=message):
        check_matcher(bad, "case x")


# ---- sample ---------------------------------------------------------------------------------------------------

def test_sample_gives_one_accepted_value_per_matcher():
    assert sample({"$any": ["Paris", "Lyon"]}) == "Paris"
    assert sample({"$set": ["Ana", {"$any": ["Bo", "Bob"]}]}) == ["Ana", "Bo"]
    assert sample({"$datetime": "2026-12-03T10:00"}) == "2026-12-03T10:00"
    assert sample({"$json": {"retries": 3}}) == '{"retries": 3}'
    assert sample({"$contains": "144"}) == "144"
    assert isinstance(sample(FIB_OUTPUT), str)
    assert sample({"$absent_or": None}) is ABSENT
    assert sample({"title": "T", "reminder": {"$absent_or": 5}, "tags": [{"$any": ["a"]}]}) == {"title": "T", "tags": ["a"]}
    assert sample(42) == 42


@pytest.mark.parametrize("expected", [
    {"$any": ["Tokyo", "東京"]}, {"$set": ["Ana", "Bo"]}, {"$datetime": "2026-12-03T10:00"}, {"$json": [1, {"a": None}]},
    {"$contains": "144"}, {"$absent_or": None}, {"city": {"$any": ["Paris"]}, "days": {"$absent_or": 3}},
])
def test_sample_satisfies_its_own_matcher(expected):
    assert mismatch(expected, sample(expected)) is None


def test_sample_of_every_shipped_case_fits_the_tool_schema():
    checked = 0
    for case in load_cases():
        for call in case.tool_calls:
            jsonschema.validate(sample(call.arguments), case.tool_schema(call.name))
            checked += 1
    assert checked >= 20
