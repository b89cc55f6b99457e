"""The surfaces suite fails a deployment whose ``/v1/responses`` stream stops after its first output item.

A real GLM serving bug: Codex-style clients got the reasoning item of a turn and then nothing, no call, no
``response.completed``, while chat completions served the same turn whole. A gateway in front of glm-tiny
reproduces the symptom (HTTP 200, a well-formed stream that just ends); the suite must fail exactly the
streamed responses answers, saying the stream ended early and what it left out, and pass the rest.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers.altering_proxy import EndStream, altering_proxy
from tests.integration.servers import SUITES, gate

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")


def cut_after_first_output_item(body: dict[str, Any]) -> dict[str, Any]:
    """Let a responses stream's first ``response.output_item.done`` through, then end the stream."""
    if body.get("type") == "response.output_item.done":
        raise EndStream(body)
    return body


def test_responses_stream_that_stops_after_its_first_output_item(pytester: pytest.Pytester, healthy_upstream: str) -> None:
    with altering_proxy(healthy_upstream, cut_after_first_output_item) as url:
        out = gate(pytester, url, str(SUITES / "test_surfaces.py"), "-k", "single.weather or reasoning.arithmetic")
    assert "responses API (stream): the stream ended without response.completed or response.incomplete" in out
    assert "responses API (stream): 0 call(s) [] where chat returned 1: ['get_weather']" in out
    assert "responses API (stream): no content where chat returned" in out
    assert "2 failed, 6 passed" in out  # chat, the messages API and non-streamed responses are whole
