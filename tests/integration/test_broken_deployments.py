"""The gate must fail deliberately broken deployments of the reference model, naming the symptom.

Each test serves glm-tiny with one thing wrong (a flag dropped or swapped, the other family's chat
template), points the shipped suites at it with --glm-base-url, and checks that they fail and say why.
The correct deployment passing is `pytest suites/` itself (CI runs it) and test_reference_models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.servers import SUITES, TEMPLATES, broken_server, drop, gate, replace

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

def test_no_tool_call_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--tool-call-parser"), drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or irrelevance")
    assert "the server rejected the request" in out and "--tool-call-parser" in out


def test_no_auto_tool_choice(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single.weather")
    assert "the server rejected the request" in out and "--enable-auto-tool-choice" in out


def test_parser_of_another_model_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, replace("--tool-call-parser", "hermes")) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or parallel")
    assert "finish_reason 'stop', expected 'tool_calls'" in out
    assert "content contains raw '<tool_call>': markup leaked past the parser" in out


def test_no_reasoning_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--reasoning-parser")) as url:
        out = gate(pytester, url, str(SUITES / "test_reasoning.py"), "-k", "test_case and arithmetic")
    assert "thinking is on but no reasoning came back (reasoning parser missing or wrong?)" in out
    assert "content contains raw '<think>'" in out


def test_chat_template_of_the_other_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, extra=("--chat-template", str(TEMPLATES / "glm47.jinja"))) as url:
        out = gate(pytester, url, str(SUITES / "test_preflight.py"), str(SUITES / "test_tool_calling.py"),
                   "-k", "template or single.weather")
    assert "chat template mismatch for glm-tiny (glm45)" in out and "this is the glm47 family's template" in out
    assert "the served chat template differs from GLM's glm45 format" in out
