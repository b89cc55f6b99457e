"""The HTML page as a reviewer sees it: opened in headless Chromium, the verdict, the tables and the plots
render, the hostile text in an answer stays text, and no script fails. Driven by Playwright where it is
installed (with the system Chromium, never a downloaded browser), and by Chromium's own ``--dump-dom``
otherwise; pytest-html's report with the gate's summary is opened the same way. Skipped without Chromium."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_glm.reporting import html
from tests.helpers.report_data import SECRET, plot_files, sample_data

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("GLM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, offline, nothing kept: the flags a sandboxed CI machine needs.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                    reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
needs_playwright = pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                                      reason="Playwright is not installed (pip install '.[test]')")


def plots(directory: Path) -> list[Path]:
    """Real plots where matplotlib is installed (what a run embeds), else small PNGs of the same names."""
    if importlib.util.find_spec("matplotlib") is None:
        return plot_files(directory)
    from pytest_glm.reporting.plots import render, save_samples
    from tests.helpers.report_data import sample_report

    for batch in (1, 4, 8):
        save_samples(directory, f"balanced-b{batch}", "balanced", batch, [30.0 + i * batch for i in range(40)],
                     [8.0 + (i % 7) for i in range(200)])
    return render(directory, sample_report().figures, "glm-tiny on cpu, vLLM 0.32.0")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("page")
    return html.write(where / "gate.html", sample_data(), plots(where / "plots"), SECRET)


@needs_chromium
@needs_playwright
def test_the_page_renders_in_chromium(page: Path) -> None:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            tab.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
            tab.goto(page.as_uri(), wait_until="load")
            assert tab.inner_text(".glm-verdict-word") == "FAIL"
            assert tab.is_visible("#verdict") and tab.is_visible("#causes")
            assert tab.title().startswith("pytest-glm: FAIL")  # the answer's <script> set no title: it is text
            assert tab.locator("#suites table").count() == 3  # tool_calling, mtp, slo (preflight has no figures)
            assert "ttft p99" in tab.inner_text("#suite-slo table")
            assert tab.locator("#suite-slo td.glm-bad").inner_text().startswith("180")
            images = tab.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
            assert len(images) == 2 and all(done and width > 0 for done, width in images), images
            assert tab.locator(".glm-finding").first.is_visible()
            assert tab.locator("mark").count() >= 1
            # the inline script: its buttons show and close every case
            tab.click("button[data-glm-toggle=close]")
            assert tab.eval_on_selector_all("details.glm-case", "els => els.filter(d => d.open).length") == 0
            tab.click("button[data-glm-toggle=open]")
            assert tab.eval_on_selector_all("details.glm-case", "els => els.every(d => d.open)")
            shot = page.with_name("gate.png")
            tab.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            browser.close()
    assert not errors, errors


#: Added to a copy of the page for --dump-dom: records script errors and, once loaded, what rendered.
PROBE = """<script>
window.addEventListener("error", function (e) { document.documentElement.setAttribute("data-errors",
  (document.documentElement.getAttribute("data-errors") || "") + "|" + e.message); });
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.documentElement.setAttribute("data-images", imgs.map(function (i) {
    return (i.complete && i.naturalWidth > 0) ? "ok" : "broken"; }).join(","));
  document.documentElement.setAttribute("data-title", document.title);
});
</script>"""


@needs_chromium
def test_the_page_renders_in_chromium_without_playwright(page: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    common = [CHROMIUM, "--headless", *ARGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400"]
    dom = subprocess.run([*common, "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    head = dom.stdout[:dom.stdout.index("<head>")]
    assert 'data-images="ok,ok"' in head, head
    assert "data-errors" not in head, head
    assert 'data-title="pytest-glm: FAIL' in head
    assert '<div class="glm-verdict-word">FAIL</div>' in dom.stdout
    shot = tmp_path / "gate.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


EXAMPLE = """
import pytest
from pytest_glm.reporting import exchange

@pytest.mark.tool_calling
def test_case(request, glm_record):
    glm_record("tool_calling", "aggregate", "unfaithful_answers", 1, 0, "<=")
    exchange.record(request.node, {"case": "single.weather", "request": {"messages": [
        {"role": "user", "content": "Weather in Paris?"}]}, "answers": {"plain": {"content": "<b>x</b>",
        "findings": ["tool parser: dropped a call"]}}, "problems": ["tool parser: dropped a call"]})
    assert False, "tool parser: dropped a call"
"""


@needs_chromium
@needs_playwright
@pytest.mark.skipif(importlib.util.find_spec("pytest_html") is None, reason="pytest-html is not installed")
def test_pytest_html_report_with_the_gate_renders(pytester: pytest.Pytester) -> None:
    from playwright.sync_api import sync_playwright

    pytester.makepyfile(test_gate=EXAMPLE)
    report = pytester.path / "tests.html"
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm-profile=cpu", f"--html={report}",
                                  "--self-contained-html", timeout=120).assert_outcomes(failed=1)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            tab = browser.new_page()
            tab.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            tab.goto(report.as_uri(), wait_until="load")
            assert tab.inner_text(".glm-verdict-word") == "FAIL"
            assert tab.locator("#suite-tool_calling table").count() == 1
            assert tab.locator(".extraHTML .glm-finding").first.inner_text() == "tool parser: dropped a call"
            assert tab.locator(".extraHTML b").count() == 0  # the answer's markup is text there too
        finally:
            browser.close()
    assert not errors, errors
