"""Teardown goes on past a failing step, and says what failed instead of swallowing it."""

from __future__ import annotations

import logging

import pytest

from pytest_glm.serving.launch import _logged


def test_a_failing_teardown_step_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    ran = []
    with caplog.at_level(logging.WARNING, logger="pytest_glm"):
        with _logged("stopping the vLLM server"):
            raise ProcessLookupError("no such process")
        with _logged("closing the server log"):
            ran.append("closed")
    assert ran == ["closed"]
    assert caplog.messages == ["stopping the vLLM server failed: ProcessLookupError: no such process"]
