"""The gate must fail deliberately broken deployments of the reference model, naming the layer at fault.

Each test serves glm-tiny with one thing wrong (a flag dropped or swapped, the other family's chat
template, a gateway in front that alters what the model generated), points the shipped suites at it
with --glm-base-url, and checks that they fail and say which layer did it. The correct deployment passing
is `pytest suites/` itself (CI runs it) and test_reference_models; a gateway that only drops the token ids
must still pass, with the exact checks said to be off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.altering_proxy import altering_proxy, drop_token_ids, lowercase_arguments
from tests.integration.servers import SUITES, TEMPLATES, broken_server, drop, gate, replace

pytestmark = [pytest.mark.slow, pytest.mark.broken_deployment, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")

def first_cause(out: str) -> str:
    """The first cause line of the run's "causes" block (the first thing the user reads after the tests)."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if "pytest-glm: causes" in line)
    return lines[at + 1]


def test_no_tool_call_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Every tool case would get the same HTTP 400: one failure names the flags, the rest are skipped."""
    with broken_server(tmp_path, drop("--tool-call-parser"), drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or irrelevance")
    cause = first_cause(out)
    assert "(1 failed, " in cause and "skipped)" in cause
    assert "the server refuses tool_choice 'auto' (HTTP 400" in cause
    assert "--enable-auto-tool-choice --tool-call-parser glm45" in cause
    assert "1 failed" in out.splitlines()[-1]


def test_no_auto_tool_choice(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--enable-auto-tool-choice", False)) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single.weather")
    assert "the server refuses tool_choice 'auto'" in first_cause(out) and "--enable-auto-tool-choice" in out


def test_context_shorter_than_the_suites_need(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """--max-model-len 512: preflight fails once naming the numbers and the flag; every request that does
    not fit is skipped with that reason instead of failing with the same HTTP 400 a hundred times."""
    with broken_server(tmp_path, extra=("--max-model-len", "512")) as url:
        out = gate(pytester, url, str(SUITES / "test_preflight.py"), str(SUITES / "test_tool_calling.py"),
                   str(SUITES / "test_reasoning.py"))
    cause = first_cause(out)
    assert cause.split("(")[1].startswith("1 failed, ") and "skipped)" in cause
    assert "the server serves max_model_len 512, but the collected suites send requests of up to" in cause
    assert "launch it with --max-model-len" in cause and "(--glm-max-model-len" in cause
    assert "cannot be greater than max_model_len" not in out  # no request was sent that could not fit
    assert out.splitlines()[-1].count("failed") == 1 and " 1 failed" in out.splitlines()[-1]


def test_parser_of_another_model_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, replace("--tool-call-parser", "hermes")) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or parallel")
    assert "tool parser: the tool parser returned 0 call(s) [] where the model generated 1: ['get_weather']" in out
    assert "finish_reason: finish_reason 'stop', but the model's output ended with <|observation|>" in out
    assert "content contains raw '<tool_call>': markup leaked past the parser" in out  # the behaviour verdict


def test_no_reasoning_parser(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, drop("--reasoning-parser")) as url:
        out = gate(pytester, url, str(SUITES / "test_reasoning.py"), "-k", "served_faithfully and arithmetic")
    assert "reasoning parser: the server returned no reasoning where the model generated" in out
    assert "the server returned the content '<think>17 plus 25" in out


def test_chat_template_of_the_other_family(pytester: pytest.Pytester, tmp_path: Path) -> None:
    with broken_server(tmp_path, extra=("--chat-template", str(TEMPLATES / "glm47.jinja"))) as url:
        out = gate(pytester, url, str(SUITES / "test_preflight.py"), str(SUITES / "test_tool_calling.py"),
                   "-k", "template or single.weather")
    assert "chat template mismatch for glm-tiny (glm45)" in out and "this is the glm47 family's template" in out
    assert "the served chat template differs from GLM's glm45 format" in out


def test_gateway_that_alters_argument_values(pytester: pytest.Pytester, healthy_upstream: str) -> None:
    """A gateway that lower-cases tool-call arguments: HTTP 200, valid JSON, schema-valid, and equal to the
    expected values modulo case, so only the comparison with the model's own tokens can see it."""
    with altering_proxy(healthy_upstream, lowercase_arguments) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single.weather or choose.flights")
    assert "the tool parser returned city='paris' where the model generated 'Paris'" in out
    assert "the tool parser returned origin='ber' where the model generated 'BER'" in out
    assert "4 failed, 4 passed" in out  # the behaviour verdicts (case-insensitive) alone would pass it


def test_gateway_that_drops_token_ids_falls_back_and_says_so(pytester: pytest.Pytester, healthy_upstream: str) -> None:
    """Without token ids the exact checks cannot run: a healthy deployment still passes, on the weaker
    checks, and the run says once that they were used."""
    with altering_proxy(healthy_upstream, drop_token_ids) as url:
        out = gate(pytester, url, str(SUITES / "test_tool_calling.py"), "-k", "single or parallel or aggregate",
                   expect=pytest.ExitCode.OK)
    assert out.count("the endpoint returned no token ids for 100% of the answers") == 1
    assert "token_id_coverage                0" in out
