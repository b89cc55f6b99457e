"""Shared fixtures of the shipped suites: the cases, and one cached answer per (case, streamed) so that the
per-case tests, the aggregate gates and the load comparison judge the same responses."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_glm.answers import Answer
from pytest_glm.cases import Case
from pytest_glm.chat import ask, rejection


class AnswerCache:
    """Ask each (case, streamed) once per run; later tests read the cached answer."""

    def __init__(self, endpoint: Any, deployment: Any = None) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self._client = endpoint.client()
        self._answers: dict[tuple[str, bool], Answer] = {}

    def get(self, case: Case, stream: bool) -> Answer:
        key = (case.id, stream)
        if key not in self._answers:
            try:
                self._answers[key] = ask(self._client, case, self.endpoint.model, stream=stream)
            except (openai.APIStatusError, openai.APIError) as exc:
                pytest.fail(f"case {case.id}: {rejection(exc, self.deployment)}", pytrace=False)
        return self._answers[key]

    def close(self) -> None:
        self._client.close()


@pytest.fixture(scope="session")
def glm_answers(glm_endpoint: Any, glm_deployment: Any) -> Any:
    cache = AnswerCache(glm_endpoint, glm_deployment)
    yield cache
    cache.close()
