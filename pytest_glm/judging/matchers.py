"""Tolerant matchers for what a healthy model may answer: the behaviour half of the gate.

A case states what a correct answer must contain, not one way of writing it. An expected argument is a
plain JSON value (compared modulo case and whitespace for strings, by value for numbers, strictly by type
for booleans and null) or one of these matchers:

- ``{"$any": [a, b, ...]}``: any of the values ("Tokyo", "東京", "东京");
- ``{"$datetime": "2026-12-03T10:00"}``: an ISO 8601 date-time at that moment, seconds optional;
- ``{"$absent_or": v}``: the argument may be left out, or given as ``v`` (optional ``null``);
- ``{"$set": [a, b]}``: an array holding these values in any order;
- ``{"$json": v}``: a string whose JSON parse equals ``v`` (any spacing);
- ``{"$python": {"stdout_any_of": [["34", "88"], ...]}}``: Python source that parses, runs within a few
  seconds in an isolated interpreter, and prints every string of one of the groups;
- ``{"$contains": "144"}`` (for content): a string holding that text, case-insensitively.

Exactness about what the deployment did to the model's tokens is not judged here: that is
:mod:`pytest_glm.judging.faithfulness`, from the model's own token ids.
"""

from __future__ import annotations

import ast
import datetime as dt
import json
import subprocess
import sys
import tempfile
from typing import Any

#: The argument was left out (the value of a missing key, for ``$absent_or``).
ABSENT = object()

OPERATORS = ("$any", "$datetime", "$absent_or", "$set", "$json", "$python", "$contains")

#: Wall-clock limit for running a program the model wrote.
PYTHON_TIMEOUT_S = 10.0


def operator(expected: Any) -> str | None:
    """The matcher's operator when ``expected`` is a matcher, else None."""
    if isinstance(expected, dict) and len(expected) == 1:
        (key,) = expected
        if key in OPERATORS:
            return key
    return None


def check_matcher(expected: Any, where: str) -> None:
    """Raise ValueError naming ``where`` when a matcher is malformed (read when the cases load)."""
    op = operator(expected)
    if op is None:
        if isinstance(expected, dict):
            bad = [k for k in expected if k.startswith("$")]
            if bad:
                raise ValueError(f"{where}: unknown matcher {bad[0]!r} (known: {', '.join(OPERATORS)})")
            for k, v in expected.items():
                check_matcher(v, f"{where}.{k}")
        elif isinstance(expected, list):
            for i, v in enumerate(expected):
                check_matcher(v, f"{where}[{i}]")
        return
    arg = expected[op]
    if op in ("$any", "$set") and not (isinstance(arg, list) and arg):
        raise ValueError(f"{where}: {op} takes a non-empty list")
    if op == "$datetime" and (not isinstance(arg, str) or _datetime(arg) is None):
        raise ValueError(f"{where}: $datetime takes an ISO 8601 date-time string, not {arg!r}")
    if op == "$contains" and not isinstance(arg, str):
        raise ValueError(f"{where}: $contains takes a string")
    if op == "$python":
        groups = arg.get("stdout_any_of") if isinstance(arg, dict) else None
        if not (isinstance(groups, list) and groups and all(isinstance(g, list) and g for g in groups)):
            raise ValueError(f"{where}: $python takes {{'stdout_any_of': [[text, ...], ...]}}")


def sample(expected: Any) -> Any:
    """One concrete value the matcher accepts (to validate a case against its tool's schema); ABSENT for
    a matcher that accepts a left-out argument."""
    op = operator(expected)
    if op is None:
        if isinstance(expected, dict):
            return {k: s for k, v in expected.items() if (s := sample(v)) is not ABSENT}
        if isinstance(expected, list):
            return [sample(v) for v in expected]
        return expected
    arg = expected[op]
    return {"$any": lambda: sample(arg[0]), "$set": lambda: [sample(v) for v in arg], "$absent_or": lambda: ABSENT,
            "$datetime": lambda: arg, "$json": lambda: json.dumps(arg), "$contains": lambda: arg,
            "$python": lambda: "print()"}[op]()


def _normalise(value: Any) -> Any:
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def _same_kind(a: Any, b: Any) -> bool:
    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        return type(v).__name__

    return kind(a) == kind(b)


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON, kind checked at every level (``true`` is not ``1`` anywhere in the tree)."""
    if not _same_kind(a, b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def mismatch(expected: Any, actual: Any) -> str | None:
    """Why ``actual`` does not satisfy ``expected`` (a readable reason), or None when it does."""
    op = operator(expected)
    if op is None:
        if actual is ABSENT:
            return "missing"
        if isinstance(expected, dict) and isinstance(actual, dict):
            for key, want in expected.items():
                why = mismatch(want, actual.get(key, ABSENT))
                if why:
                    return f"{key}: {why}"
            return None
        if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
            for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
                why = mismatch(want, got)
                if why:
                    return f"[{i}]: {why}"
            return None
        if _same_kind(expected, actual) and _normalise(expected) == _normalise(actual):
            return None
        return f"{actual!r}, expected {expected!r}"
    arg = expected[op]
    if op == "$absent_or":
        return None if actual is ABSENT else mismatch(arg, actual)
    if actual is ABSENT:
        return "missing"
    if op == "$any":
        return None if any(mismatch(a, actual) is None for a in arg) else f"{actual!r}, expected any of {arg!r}"
    if op == "$set":
        if not isinstance(actual, list) or len(actual) != len(arg):
            return f"{actual!r}, expected {len(arg)} items in any order: {arg!r}"
        left = list(actual)
        for want in arg:
            hit = next((i for i, got in enumerate(left) if mismatch(want, got) is None), None)
            if hit is None:
                return f"{actual!r}, expected {arg!r} in any order"
            left.pop(hit)
        return None
    if op == "$datetime":
        got = _datetime(actual) if isinstance(actual, str) else None
        if got is None:
            return f"{actual!r} is not an ISO 8601 date-time (expected {arg})"
        want = _datetime(arg)
        return None if got == want else f"{actual!r} is another moment than {arg}"
    if op == "$json":
        if not isinstance(actual, str):
            return f"{actual!r} is a {type(actual).__name__}, expected a string holding the JSON {arg!r}"
        try:
            parsed = json.loads(actual)
        except ValueError:
            return f"{actual!r} is not JSON text (expected the JSON {arg!r})"
        return None if same_json(parsed, arg) else f"{actual!r} parses to {parsed!r}, expected {arg!r}"
    if op == "$contains":
        if not isinstance(actual, str) or arg.casefold() not in actual.casefold():
            return f"{str(actual)[:200]!r} does not contain {arg!r}"
        return None
    return python_mismatch(actual, arg["stdout_any_of"])


def _datetime(text: str) -> dt.datetime | None:
    """The moment of an ISO 8601 date-time ('2026-12-03T10:00', '...:00', '...Z', a space for the T),
    as naive wall-clock time: a model that adds seconds or a UTC designator names the same moment."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1]
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if "T" not in value.upper() and " " not in value:
        return None  # a date alone is not a date-time
    return moment.replace(tzinfo=None)


def python_mismatch(code: Any, groups: list[list[str]]) -> str | None:
    """Parse ``code``, run it in an isolated interpreter (no site, no environment, a temporary directory,
    a time limit), and require its output to hold every string of one group."""
    if not isinstance(code, str):
        return f"code is a {type(code).__name__}, not a string"
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return f"the code does not parse as Python: {exc.msg} (line {exc.lineno})"
    with tempfile.TemporaryDirectory(prefix="glm-code-") as cwd:
        try:
            done = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=cwd, env={}, capture_output=True,
                                  text=True, timeout=PYTHON_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return f"the program did not finish within {PYTHON_TIMEOUT_S:g} s"
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"the program exited with status {done.returncode}: {tail[:200]}"
    if any(all(text in done.stdout for text in group) for group in groups):
        return None
    return f"the program printed {done.stdout[:200]!r}, expected it to show one of {groups}"
