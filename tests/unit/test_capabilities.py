"""A deployment that lacks what the suites need fails once, naming the flag, and the rest is skipped."""

from __future__ import annotations

from types import SimpleNamespace as NS

import pytest

from pytest_glm.judging.case_answers import AnswerCache
from pytest_glm.judging.cases import load_cases
from pytest_glm.serving.capabilities import Capabilities

CASES = {c.id: c for c in load_cases()}


class FakeEndpoint:
    model = "glm-tiny"

    def __init__(self, context: int) -> None:
        self.context, self.tokenized = context, 0

    def max_model_len(self) -> int:
        return self.context

    def tokenize(self, **_: object) -> list[int]:
        self.tokenized += 1
        return [0] * 700

    def client(self) -> object:
        return NS(close=lambda: None)


def deployment(context: int, flags: tuple[str, ...] = ("--reasoning-parser", "glm45"), launched: bool = True) -> NS:
    return NS(endpoint=FakeEndpoint(context), flags=flags, launched=launched, model=NS(family="glm45"),
              mtp_expectation=lambda: (False, "no"))


def test_the_first_test_fails_and_the_others_skip_with_its_reason() -> None:
    caps = Capabilities(deployment(512))
    with pytest.raises(pytest.fail.Exception, match="too short"):
        caps.refuse("context", "too short", "suites/test_preflight.py::test_ctx")
    with pytest.raises(pytest.skip.Exception, match=r"too short \(failed once, in test_ctx\)"):
        caps.refuse("context", "case x needs 9000", "suites/test_tool_calling.py::test_a")
    with pytest.raises(pytest.fail.Exception, match="no parser"):  # another gap fails on its own
        caps.refuse("tool parser", "no parser", "suites/test_tool_calling.py::test_a")


def test_a_case_that_does_not_fit_the_context_is_refused() -> None:
    dep = deployment(4096)
    caps = Capabilities(dep)
    caps._facts["tool parser"] = None  # no probe: the parser is there
    answers = AnswerCache(dep.endpoint, dep, capabilities=caps)
    off = CASES["reasoning.off"]  # 1024 max_tokens and a short prompt: the bound fits, no /tokenize call
    assert answers.cannot_ask(off) is None and dep.endpoint.tokenized == 0
    gap, why = answers.cannot_ask(CASES["reasoning.long"])  # 8192 max_tokens
    assert gap == "context" and "needs 8892 tokens of context (700 of prompt + max_tokens 8192)" in why
    assert "max_model_len 4096" in why and "--glm-max-model-len" in why
    assert answers.askable([off, CASES["reasoning.long"]]) == [off]


def test_missing_parsers_are_refused_for_the_cases_that_need_them() -> None:
    dep = deployment(32768, flags=())
    caps = Capabilities(dep)
    caps._facts["tool parser"] = "no tool parser: launch it with --enable-auto-tool-choice"
    answers = AnswerCache(dep.endpoint, dep, capabilities=caps)
    assert answers.cannot_ask(CASES["single.weather"]) == ("tool parser", caps._facts["tool parser"])
    gap, why = answers.cannot_ask(CASES["reasoning.arithmetic"])
    assert gap == "reasoning parser" and "--reasoning-parser glm45" in why
    assert answers.cannot_ask(CASES["reasoning.off"]) is None  # thinking off needs neither
    endpoint_flags_unknown = Capabilities(deployment(32768, flags=(), launched=False))
    assert endpoint_flags_unknown.reasoning_parser_problem() is None
