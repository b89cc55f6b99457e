"""--glm-html through the plugin, with the fake `vllm` (no model is loaded): the page is written with the
verdict, the deployment and a failed case's exchange, the key nowhere; a bad path stops the run naming the
option; a deployment that does not start still gets its FAIL page; plots drawn for the page alone, also
under xdist; and pytest-html's report, when installed, gains the gate's summary and the exchange."""

from __future__ import annotations

import importlib.util
import re

import pytest

from tests.conftest import FAKE_VLLM

SECRET = "sk-html-option-9"
HOSTILE = "<script>alert('x')</script>"

EXAMPLE = f"""
import pytest
from pytest_glm.reporting import exchange

@pytest.mark.preflight
def test_served(glm_deployment, glm_record):
    glm_record("preflight", "round_trip", "answers", 1, 1, ">=")

@pytest.mark.tool_calling
def test_case(glm_deployment, request):
    exchange.record(request.node, {{
        "case": "single.weather", "category": "single_tool",
        "request": {{"messages": [{{"role": "user", "content": "Weather in Paris?"}}], "tools": [],
                    "tool_choice": None, "thinking": True, "max_tokens": 64}},
        "answers": {{"plain": {{"content": {HOSTILE!r}, "reasoning": "", "tool_calls": [], "finish_reason": "stop",
                               "findings": ["tool parser: the model generated a call the server dropped"]}}}},
        "problems": ["tool parser: the model generated a call the server dropped"]}})
    assert False, "tool parser: the model generated a call the server dropped"
"""


def run(pytester: pytest.Pytester, *args: str, mode: str = "serve") -> pytest.RunResult:
    pytester.makepyfile(test_gate=EXAMPLE)
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", mode)
    pytester._monkeypatch.setenv("GLM_API_KEY", SECRET)
    return pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "-p", "no:cacheprovider", *args, timeout=120)


def test_the_page_is_written(pytester: pytest.Pytester) -> None:
    page = pytester.path / "out" / "gate.html"
    result = run(pytester, f"--glm-html={page}")
    result.assert_outcomes(passed=1, failed=1)
    assert f"pytest-glm html: {page}" in result.stdout.str()
    text = page.read_text(encoding="utf-8")
    assert '<div class="glm-verdict-word">FAIL</div>' in text
    assert "0.0.0-fake" in text and "serving command" in text and "fake-vllm" not in text.split("serving command")[0]
    assert re.search(r'<li class="glm-finding">tool parser: the model generated a call the server dropped</li>', text)
    assert HOSTILE not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert SECRET not in text and SECRET not in result.stdout.str()


@pytest.mark.parametrize(("where", "message"), [
    ("dir", "--glm-html: {path} is a directory"),
    ("under-a-file", "--glm-html: cannot write {path}: {parent} is not a directory"),
])
def test_a_bad_path_stops_the_run_naming_the_option(pytester: pytest.Pytester, where: str, message: str) -> None:
    if where == "dir":
        path = pytester.path
    else:
        (pytester.path / "notes.txt").write_text("")
        path = pytester.path / "notes.txt" / "gate.html"
    result = run(pytester, f"--glm-html={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message.format(path=path, parent=pytester.path / "notes.txt") in result.stderr.str()
    assert "Traceback" not in result.stderr.str()


def test_the_same_file_as_the_json_report_is_refused(pytester: pytest.Pytester) -> None:
    path = pytester.path / "gate.out"
    result = run(pytester, f"--glm-html={path}", f"--glm-report={path}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--glm-html: {path} is also the --glm-report file" in result.stderr.str()


def test_a_deployment_that_does_not_start_gets_a_fail_page(pytester: pytest.Pytester) -> None:
    page = pytester.path / "gate.html"
    result = run(pytester, f"--glm-html={page}", mode="exit")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = page.read_text(encoding="utf-8")
    assert '<div class="glm-verdict-word">FAIL</div>' in text and "No deployment was reached in this run." in text
    assert "vLLM exited during start-up (exit code 1)" in text
    assert "ValueError: fake start-up failure for the test" in text


PLOTTED = """
import pytest
from pytest_glm.reporting.plots import save_samples

@pytest.mark.slo
@pytest.mark.parametrize("batch", [1, 4])
def test_cell(batch, glm_plots_dir, glm_record):
    assert glm_plots_dir is not None
    save_samples(glm_plots_dir, f"balanced-b{batch}", "balanced", batch, [40.0 + i for i in range(20)],
                 [9.0 + i / 10 for i in range(50)])
    glm_record("slo", f"balanced-b{batch}", "p99_ttft_ms", 59.0, 150.0, "<=", " ms")
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_plots_are_drawn_for_the_page_alone(pytester: pytest.Pytester, workers: list[str]) -> None:
    """Without --glm-plots the latency cells save their samples into a temporary folder (handed to xdist
    workers), and the page embeds the plots drawn from them."""
    pytest.importorskip("matplotlib", reason="the plots extra is not installed (pip install '.[plots]')")
    pytester.makepyfile(test_cells=PLOTTED)
    page = pytester.path / "gate.html"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm-profile=cpu", f"--glm-html={page}",
                                           *workers, timeout=120)
    result.assert_outcomes(passed=2)
    text = page.read_text(encoding="utf-8")
    assert text.count('<img src="data:image/png;base64,') == 1 and "latency-balanced.png" in text
    assert "pytest-glm plot:" not in result.stdout.str()  # nothing written beside the page


@pytest.mark.skipif(importlib.util.find_spec("pytest_html") is None, reason="pytest-html is not installed")
def test_pytest_html_gains_the_summary_and_the_exchange(pytester: pytest.Pytester) -> None:
    report = pytester.path / "tests.html"
    result = run(pytester, f"--html={report}", "--self-contained-html")
    result.assert_outcomes(passed=1, failed=1)
    text = report.read_text(encoding="utf-8")
    summary = text[text.index('<div class="additional-summary prefix">'):text.index('<p class="run-count">')]
    assert '<header class="glm-verdict glm-fail" id="verdict">' in summary and "0.0.0-fake" in summary
    assert 'id="suite-tool_calling"' in summary
    # the extras travel in pytest-html's data blob (escaped there, as it escapes every test's data)
    blob = text[text.index('data-jsonblob="'):]
    assert "glm-finding" in blob and "application/json" in blob
    assert SECRET not in text
