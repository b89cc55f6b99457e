"""Shared fixtures of the shipped suites: the cases, and one cached answer per (case, streamed) so that the
per-case tests, the aggregate gates and the load comparison judge the same responses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_glm.answers import Answer
from pytest_glm.cases import Case
from pytest_glm.chat import ask


class AnswerCache:
    """Ask each (case, streamed) once per run; later tests read the cached answer."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint
        self._client = endpoint.client()
        self._answers: dict[tuple[str, bool], Answer] = {}

    def get(self, case: Case, stream: bool) -> Answer:
        key = (case.id, stream)
        if key not in self._answers:
            try:
                self._answers[key] = ask(self._client, case, self.endpoint.model, stream=stream)
            except openai.APIStatusError as exc:
                pytest.fail(f"case {case.id}: the server rejected the request (HTTP {exc.status_code}): "
                            f"{_error_message(exc)}", pytrace=False)
        return self._answers[key]

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="session")
def glm_answers(glm_endpoint: Any) -> Any:
    cache = AnswerCache(glm_endpoint)
    yield cache
    cache.close()


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if body.get("message"):
            return str(body["message"])
    return str(exc)
