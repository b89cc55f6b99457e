"""What a failed correctness test asked and what came back, kept for the reports.

A failure message holds the first lines of what went wrong; a reviewer deciding a rollout needs the
exchange itself: the request (messages, tools, ``tool_choice``, thinking) and the answers, streamed and
not (content, reasoning, tool calls with their raw ``arguments``, ``finish_reason``), each with what the
exact checks found in it. The suite tests record it when they fail, as a user property named
:data:`PROPERTY` holding one JSON object, so that pytest-xdist carries it to the controller like the
figures; :class:`~pytest_glm.reporting.report.RunReport` puts it beside the test's outcome.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from pytest_glm.judging.answers import Answer
from pytest_glm.judging.cases import Case

PROPERTY = "glm_exchange"
#: Longest text kept per message, content, reasoning or arguments: a 10k-token history would make every
#: failing test's property (and the JUnit file, which carries it) hundreds of kilobytes.
MAX_TEXT = 6000
_MODES = {False: "plain", True: "stream"}


def clip(text: str | None, limit: int = MAX_TEXT) -> str:
    """``text`` up to ``limit`` characters, saying how much was left out."""
    text = text or ""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters]"


def request_of(case: Case, **overrides: Any) -> dict[str, Any]:
    """The request as the suites send it, without what is the same for every case (model, sampling)."""
    messages = []
    for msg in case.messages:
        shown = {k: v for k, v in msg.items() if k != "reasoning_content"}
        if isinstance(shown.get("content"), str):
            shown["content"] = clip(shown["content"])
        messages.append(shown)
    request: dict[str, Any] = {"messages": messages, "tools": list(case.tools), "tool_choice": case.tool_choice,
                               "thinking": case.thinking is not False, "max_tokens": case.request_max_tokens}
    request.update(overrides)
    return request


def answer_of(answer: Answer | None, *, findings: Sequence[str] = (), generated: str | None = None,
              error: str = "") -> dict[str, Any]:
    """One answer as the report keeps it; ``generated`` is the model's own output (its token ids as text),
    ``error`` why there is no answer."""
    if answer is None:
        return {"error": clip(error), "findings": list(findings)}
    out: dict[str, Any] = {
        "content": clip(answer.content), "reasoning": clip(answer.reasoning),
        "tool_calls": [{"id": c.id, "name": c.name, "arguments": clip(c.arguments)} for c in answer.calls],
        "finish_reason": answer.finish_reason, "completion_tokens": answer.completion_tokens,
        "reasoning_tokens": answer.reasoning_tokens, "findings": list(findings),
    }
    if answer.streamed:
        out["chunks"] = answer.chunks
    if generated is not None:
        out["generated"] = clip(generated)
    return out


def exchange(case: Case, answers: Mapping[str, dict[str, Any]], problems: Sequence[str] = (),
             **overrides: Any) -> dict[str, Any]:
    """The recorded exchange: the case, its request, the answers by mode (``plain``, ``stream``) and the
    problems the test failed on."""
    return {"case": case.id, "category": case.category, "request": request_of(case, **overrides),
            "answers": dict(answers), "problems": [clip(p, 2000) for p in problems]}


def record(node: Any, data: Mapping[str, Any]) -> None:
    """Attach ``data`` to the test ``node`` (its user properties; xdist and JUnit carry it)."""
    node.user_properties.append((PROPERTY, json.dumps(data, ensure_ascii=False)))


def _problems(exc: BaseException) -> list[str]:
    """The problems a failure names: the ``- `` lines of a verdict's explanation, else its first line."""
    text = str(getattr(exc, "msg", None) or exc).strip()
    if not text:
        return []
    listed = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    return listed or [text.splitlines()[0]]


def _request_failed(exc: BaseException, case: Case) -> bool:
    """The failure is the request's own (AnswerCache.get: "case ID: the server rejected the request ...")."""
    text = str(getattr(exc, "msg", None) or "")
    return isinstance(exc, pytest.fail.Exception) and text.startswith(f"case {case.id}: the ") and (
        "rejected the request" in text or "the request failed" in text)


def _safely(what: Any) -> tuple[Any, str]:
    """``what()``, or None and why it failed (a request the server rejects, a refused capability)."""
    try:
        return what(), ""
    except (Exception, pytest.fail.Exception, pytest.skip.Exception) as exc:
        text = str(getattr(exc, "msg", None) or exc).strip()
        return None, text.splitlines()[0] if text else type(exc).__name__


def answers_of(glm_answers: Any, case: Case, streams: Sequence[bool]) -> dict[str, dict[str, Any]]:
    """The cached answers of ``case`` in the given modes, each with its serving problems (the exact checks'
    findings) and, where the server sent token ids, the model's own output as text. The first mode's answer
    is the failing test's; the others are asked only if it came (a server that rejects one request would
    only make the failure wait again)."""
    out: dict[str, dict[str, Any]] = {}
    for stream in streams:
        answer, error = _safely(lambda stream=stream: glm_answers.get(case, stream))
        if answer is None:
            out[_MODES[stream]] = answer_of(None, error=error)
            break
        findings, _ = _safely(lambda stream=stream: glm_answers.serving_problems(case, stream))
        generated = None
        if answer.token_ids is not None:
            generated, _ = _safely(lambda answer=answer: glm_answers.endpoint.detokenize(answer.token_ids))
        out[_MODES[stream]] = answer_of(answer, findings=findings or (), generated=generated)
    return out


@contextmanager
def on_failure(request: pytest.FixtureRequest, glm_answers: Any, case: Case, stream: bool | None = None,
               answer: Answer | None = None, **overrides: Any) -> Iterator[None]:
    """Record the exchange of ``case`` if the block fails (an assertion or ``pytest.fail``; not a skip, nor
    a tolerated or known-defect xfail), then let the failure through unchanged.

    :param stream: the mode the test judges (its answer comes first); None: both, as the test does.
    :param answer: an answer the test asked for itself (with ``overrides`` such as ``max_tokens``), instead
        of the cached ones.
    """
    try:
        yield
    except pytest.xfail.Exception:
        raise
    except (AssertionError, pytest.fail.Exception) as exc:
        mode = _MODES[bool(stream)]
        if _request_failed(exc, case):  # asking again would only wait for the same failure
            answers = {mode: answer_of(None, error=str(getattr(exc, "msg", exc)).split(": ", 1)[-1])}
        elif answer is not None:
            findings, _ = _safely(lambda: [str(f) for f in glm_answers.findings_of(case, answer) or []])
            answers = {_MODES[answer.streamed]: answer_of(answer, findings=findings or ())}
        else:
            order = (False, True) if stream is None else (stream, not stream)
            answers = answers_of(glm_answers, case, order)
        with contextlib.suppress(Exception):  # what is kept for the report never replaces the failure itself
            record(request.node, exchange(case, answers, _problems(exc), **overrides))
        raise
