"""Shared fixtures of the shipped suites: the answers of the correctness cases, asked once per run
(pytest_glm.case_answers), so that the per-case tests, the aggregate gates and the load comparison judge
the same responses."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm.case_answers import AnswerCache


@pytest.fixture(scope="session")
def glm_answers(glm_endpoint: Any, glm_deployment: Any) -> Any:
    cache = AnswerCache(glm_endpoint, glm_deployment)
    yield cache
    cache.close()
