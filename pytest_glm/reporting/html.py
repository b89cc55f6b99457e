"""``--glm-html FILE``: one page to decide a rollout, attachable to a ticket.

Rendered from the JSON report (:meth:`RunReport.to_json <pytest_glm.reporting.report.RunReport.to_json>`)
and the plot files, so it shows exactly what the JSON says: the verdict and its causes first, then what
changed since a stored run, the deployment, each suite's figures against their thresholds, every failed
case with its request and answers (the exact checks' findings highlighted), and the plots. It is one file
with nothing to fetch: the style is inline and the plots are PNG ``data:`` URIs. Every text is escaped,
and the API key is scrubbed from the data and again from the finished page. A tiny inline script only adds
"open all / close all" buttons for the failed cases; the page reads the same without it.

:func:`summary_fragment` and :func:`exchange_fragment` are the pieces pytest-html's report reuses
(pytest_glm.reporting.pytest_html_hooks).
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_glm.reporting.report import _DEFECT_NOTE, SUITES, Figure, _as_matrix, _header, _num

#: Failed cases shown on the page (all of them are in the JSON report), and how many of them open.
MAX_CASES = 200
OPEN_CASES = 12
#: Changes of the comparison shown per kind.
MAX_CHANGES = 100
_FAILING = ("failed", "error")

STYLE = """
.glm { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328; }
.glm h1, .glm h2, .glm h3, .glm h4 { margin: 1.2em 0 .4em; line-height: 1.25; }
.glm h2 { font-size: 20px; border-bottom: 1px solid #d0d7de; padding-bottom: .25em; }
.glm h3 { font-size: 16px; }
.glm h4 { font-size: 14px; margin: .9em 0 .3em; }
.glm-verdict { display: flex; align-items: center; gap: 24px; padding: 18px 24px; border-radius: 8px; color: #fff; }
.glm-verdict.glm-pass { background: #1a7f37; }
.glm-verdict.glm-fail { background: #cf222e; }
.glm-verdict-word { font-size: 56px; font-weight: 800; letter-spacing: 2px; line-height: 1; }
.glm-verdict-what { font-size: 16px; }
.glm-verdict-what div + div { opacity: .92; font-size: 14px; }
.glm table { border-collapse: collapse; margin: .4em 0 .8em; font-size: 13px; }
.glm th, .glm td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
.glm th { background: #f6f8fa; font-weight: 600; }
.glm td.glm-num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.glm .glm-ok { background: #dafbe1; }
.glm .glm-bad { background: #ffebe9; color: #82071e; font-weight: 600; }
.glm .glm-limit { display: block; color: #57606a; font-size: 11px; font-weight: normal; }
.glm-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 700;
             color: #fff; background: #57606a; vertical-align: middle; }
.glm-badge.glm-pass { background: #1a7f37; }
.glm-badge.glm-fail { background: #cf222e; }
.glm-badge.glm-known { background: #9a6700; }
.glm pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 6px 8px; margin: .2em 0 .5em;
           white-space: pre-wrap; overflow-wrap: anywhere; font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace;
           max-height: 28em; overflow: auto; }
.glm code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
.glm dl.glm-facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: .4em 0; }
.glm dl.glm-facts dt { font-weight: 600; color: #57606a; }
.glm dl.glm-facts dd { margin: 0; }
.glm ul { margin: .2em 0 .6em; padding-left: 1.4em; }
.glm-finding { background: #fff1e5; border-left: 4px solid #cf222e; padding: 4px 8px; margin: 3px 0; list-style: none; }
.glm ul.glm-findings { padding-left: 0; }
.glm mark { background: #fff8c5; outline: 1px solid #d4a72c; }
.glm details.glm-case { border: 1px solid #d0d7de; border-radius: 6px; margin: 8px 0; padding: 0 10px; }
.glm details.glm-case[open] { padding-bottom: 8px; }
.glm details.glm-case > summary { cursor: pointer; padding: 6px 0; font-weight: 600; overflow-wrap: anywhere; }
.glm-answers { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 12px; }
.glm-answer { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 10px; min-width: 0; }
.glm-msg { margin: 4px 0; }
.glm-role { display: inline-block; min-width: 70px; font-weight: 700; color: #0550ae; }
.glm-muted { color: #57606a; }
.glm figure { margin: 8px 0; }
.glm figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
.glm figcaption { color: #57606a; font-size: 12px; }
.glm-tools button { font: inherit; margin-right: 6px; }
.glm-page { max-width: 1280px; margin: 16px auto; padding: 0 16px; }
"""

#: Opens or closes every failed case; without scripting the buttons stay hidden and nothing else changes.
SCRIPT = """
(function () {
  var buttons = document.querySelectorAll("[data-glm-toggle]");
  for (var i = 0; i < buttons.length; i++) {
    var button = buttons[i];
    button.hidden = false;
    button.addEventListener("click", function (event) {
      var open = event.currentTarget.getAttribute("data-glm-toggle") === "open";
      var cases = document.querySelectorAll("details.glm-case");
      for (var j = 0; j < cases.length; j++) { cases[j].open = open; }
    });
  }
})();
"""


def esc(value: Any) -> str:
    """Any value as HTML text (None as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def scrub(data: Any, secret: str | None) -> Any:
    """``data`` (strings, lists, dicts) with the secret replaced by ``***`` everywhere."""
    if not secret:
        return data
    if isinstance(data, str):
        return data.replace(secret, "***")
    if isinstance(data, list):
        return [scrub(v, secret) for v in data]
    if isinstance(data, dict):
        return {scrub(k, secret): scrub(v, secret) for k, v in data.items()}
    return data


def scrub_page(page: str, secret: str | None) -> str:
    """The finished page without the secret in any form it can take there (raw or escaped)."""
    if not secret:
        return page
    for form in dict.fromkeys((secret, html.escape(secret), html.escape(secret, quote=False))):
        page = page.replace(form, "***")
    return page


# -- the page ------------------------------------------------------------------------------------------
def render(data: Mapping[str, Any], plots: Iterable[Path] = (), secret: str | None = None,
           notes: Sequence[str] = ()) -> str:
    """The whole page for one run's JSON report, its plot PNGs, and page-level notes (such as why there
    are no plots)."""
    data = scrub(dict(data), secret)
    by_suite: dict[str, list[Path]] = {}
    for path in plots:
        by_suite.setdefault(_plot_suite(path), []).append(path)
    dep = data.get("deployment") or {}
    title = f"pytest-glm: {str(data.get('verdict', '?')).upper()} — {dep.get('model') or 'no deployment'}"
    if dep.get("profile"):
        title += f" on {dep['profile']}"
    body = [
        _verdict(data),
        *(f'<p class="glm-muted">{esc(note)}</p>' for note in notes),
        _causes(data),
        _comparison(data.get("comparison")),
        _deployment(dep, data),
        _suites(data, by_suite),
        _failed_cases(data),
    ]
    other = by_suite.get("", [])
    if other:
        body.append("<section id=\"plots\"><h2>Plots</h2>" + "".join(_image(p) for p in other) + "</section>")
    body.append(f'<footer class="glm-muted"><p>{esc(data.get("schema"))} · written by pytest-glm. Every figure, '
                f'test and exchange is in the JSON report (--glm-report).</p></footer>')
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
            f"<body class=\"glm\"><main class=\"glm-page\">\n{''.join(body)}\n</main>"
            f"<script>{SCRIPT}</script></body></html>\n")
    return scrub_page(page, secret)


def write(path: Path, data: Mapping[str, Any], plots: Iterable[Path] = (), secret: str | None = None,
          notes: Sequence[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data, plots, secret, notes), encoding="utf-8")
    return path


def summary_fragment(data: Mapping[str, Any], secret: str | None = None) -> str:
    """Verdict, causes, comparison, deployment and suite tables, for another page (pytest-html's summary);
    it brings its own style, every selector under ``.glm``."""
    data = scrub(dict(data), secret)
    parts = [_verdict(data), _causes(data), _comparison(data.get("comparison")),
             _deployment(data.get("deployment") or {}, data), _suites(data, {}, link_cases=False)]
    return scrub_page(f'<style>{STYLE}</style><div class="glm">{"".join(parts)}</div>', secret)


def exchange_fragment(exchange: Mapping[str, Any], secret: str | None = None) -> str:
    """One failed case's exchange, for another page (pytest-html's per-test extras)."""
    return scrub_page(f'<div class="glm">{_exchange(scrub(dict(exchange), secret))}</div>', secret)


# -- sections ----------------------------------------------------------------------------------------
def _verdict(data: Mapping[str, Any]) -> str:
    verdict = "fail" if data.get("verdict") != "pass" else "pass"
    dep = data.get("deployment") or {}
    target = esc(dep.get("model") or "no deployment reached")
    if dep.get("profile"):
        target += f" on <b>{esc(dep['profile'])}</b>"
    if dep.get("vllm_version"):
        target += f", vLLM {esc(dep['vllm_version'])}"
    tests = data.get("tests") or {}
    tally = _tally(tests) or "no suite test ran"
    when = f"run of {esc(data.get('created'))}, {esc(data.get('duration_s'))} s" if data.get("created") else ""
    return (f'<header class="glm-verdict glm-{verdict}" id="verdict"><div class="glm-verdict-word">'
            f'{"PASS" if verdict == "pass" else "FAIL"}</div><div class="glm-verdict-what"><div>{target}</div>'
            f'<div>{esc(tally)}</div><div>{when}</div></div></header>')


def _causes(data: Mapping[str, Any]) -> str:
    causes = data.get("causes") or []
    if not causes:
        text = "Nothing failed." if data.get("verdict") == "pass" else (
            "No test failed; the verdict comes from a figure beyond its threshold or from the comparison below.")
        return f'<section id="causes"><h2>Causes</h2><p>{esc(text)}</p></section>'
    rows = []
    for c in causes:
        tally = ", ".join(f"{n} {k}" for k, n in sorted((c.get("outcomes") or {}).items()))
        example = _short_id(c.get("example") or "")
        rows.append(f'<tr><td class="glm-num">{esc(c.get("count"))}</td><td>{esc(tally)}</td>'
                    f'<td class="glm-bad">{esc(c.get("cause"))}</td><td><code>{esc(example)}</code></td></tr>')
    return ('<section id="causes"><h2>Causes</h2><p class="glm-muted">The failures grouped by what they share, '
            'largest first.</p><table><tr><th>tests</th><th>outcomes</th><th>cause</th><th>e.g.</th></tr>'
            + "".join(rows) + "</table></section>")


def _comparison(comparison: Mapping[str, Any] | None) -> str:
    if not comparison:
        return ""
    base = comparison.get("baseline") or {}
    verdict = comparison.get("verdict", "pass")
    head = (f'<h2>Changes since the earlier run <span class="glm-badge glm-{esc(verdict)}">'
            f'{"FAIL" if verdict == "fail" else "pass"}</span></h2>'
            f'<p>Compared with <code>{esc(base.get("path"))}</code>: {esc(base.get("model"))} on '
            f'{esc(base.get("profile"))}, vLLM {esc(base.get("vllm_version") or "?")}, run of '
            f'{esc(base.get("created") or "?")}, verdict {esc(base.get("verdict"))}.</p>')
    counts = ", ".join(f"{n} {k}" for k, n in (comparison.get("counts") or {}).items() if n) or "no change"
    unchanged = comparison.get("unchanged") or {}
    lines = [f"<p>{esc(counts)}; unchanged: {esc(unchanged.get('tests', 0))} tests, "
             f"{esc(unchanged.get('figures', 0))} figures; failing in both runs: "
             f"{esc(comparison.get('failing_in_both', 0))}.</p>"]
    if comparison.get("not_run"):
        lines.append(f"<p>Not run this time (not compared): {esc(', '.join(comparison['not_run']))}.</p>")
    changes = comparison.get("changes") or []
    if changes:
        rows: list[str] = []
        shown: dict[str, int] = {}
        for c in changes:
            kind = c.get("kind", "")
            shown[kind] = shown.get(kind, 0) + 1
            if shown[kind] > MAX_CHANGES:
                continue
            bad = kind in ("new failure", "worse")
            rows.append(f'<tr><td class="{"glm-bad" if bad else ""}">{esc(kind)}</td><td><code>{esc(c.get("what"))}'
                        f'</code></td><td class="glm-num">{esc(_show(c.get("before")))} → {esc(_show(c.get("after")))}'
                        f'</td><td>{esc(c.get("detail"))}{_known(c.get("known"))}</td></tr>')
        more = sum(max(n - MAX_CHANGES, 0) for n in shown.values())
        lines.append("<table><tr><th>change</th><th>test or figure</th><th>before → after</th><th>why</th></tr>"
                     + "".join(rows) + "</table>")
        if more:
            lines.append(f'<p class="glm-muted">… and {more} more changes (all are in the JSON report).</p>')
    return f'<section id="comparison">{head}{"".join(lines)}</section>'


def _known(note: str | None) -> str:
    return f'<br><span class="glm-muted">known behaviour of the new vLLM: {esc(note)}</span>' if note else ""


#: Deployment keys shown by :func:`_deployment` in their own rows (any other key gets a generic row).
_SHOWN = {"model", "family", "precision", "profile", "hardware", "endpoint", "served_model", "how", "vllm_version",
          "vllm_notes", "mtp", "variants", "command", "flag_reasons", "serve_flags", "started_in_s", "memory_gib",
          "weights", "shape_run"}


def _deployment(dep: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    if not dep:
        return ('<section id="deployment"><h2>Deployment under test</h2><p>No deployment was reached in this run.'
                + (f"</p><pre>{esc(data['deployment_error'])}</pre>" if data.get("deployment_error") else "</p>")
                + "</section>")
    facts: list[tuple[str, str]] = []
    model = esc(dep.get("model"))
    extra = ", ".join(esc(x) for x in (f"family {dep['family']}" if dep.get("family") else None,
                                        dep.get("precision"),
                                        f"shape run: {dep['shape_run']}" if dep.get("shape_run") else None) if x)
    facts.append(("model", f"<b>{model}</b>" + (f" ({extra})" if extra else "")))
    hw = dep.get("hardware") or {}
    profile = f"<b>{esc(dep.get('profile'))}</b>"
    if hw:
        count = f"{hw.get('count')} x {hw.get('device')}" if hw.get("count") else hw.get("device")
        each = f", {hw['memory_gib_each']} GiB each" if hw.get("memory_gib_each") else ""
        profile += f" — {esc(hw.get('description'))} ({esc(count)}{esc(each)})"
    facts.append(("profile, hardware", profile))
    how = {"reused": "reused (--glm-keep-server)"}.get(dep.get("how") or "", dep.get("how") or "")
    facts.append(("endpoint", f"<code>{esc(dep.get('endpoint'))}</code> [{esc(how)}], served model "
                              f"<code>{esc(dep.get('served_model'))}</code>"))
    facts.append(("vLLM", f"<b>{esc(dep.get('vllm_version') or 'unknown')}</b>"))
    mtp = dep.get("mtp")
    facts.append(("MTP", "on" if mtp else "off" if mtp is False else "unknown"))
    if dep.get("variants"):
        facts.append(("variants", esc(", ".join(dep["variants"]))))
    if dep.get("command"):
        facts.append(("serving command", f"<pre>{esc(dep['command'])}</pre>"))
    elif dep.get("serve_flags"):
        facts.append(("serve flags", f"<pre>{esc(' '.join(dep['serve_flags']))}</pre>"))
    reasons = dep.get("flag_reasons") or {}
    if reasons:
        facts.append(("why these flags", "<ul>" + "".join(f"<li><code>{esc(f)}</code>: {esc(why)}</li>"
                                                          for f, why in reasons.items()) + "</ul>"))
    start = []
    if dep.get("started_in_s") is not None:
        start.append(f"ready in {dep['started_in_s']:.1f} s" if isinstance(dep["started_in_s"], (int, float))
                     else f"ready in {dep['started_in_s']} s")
    if dep.get("memory_gib") is not None:
        start.append(f"{dep['memory_gib']:.2f} GiB resident" if isinstance(dep["memory_gib"], (int, float))
                     else f"{dep['memory_gib']} GiB resident")
    if start:
        facts.append(("start-up", esc(", ".join(start))))
    if data.get("created"):
        facts.append(("run started", f"{esc(data['created'])} ({esc(data.get('duration_s'))} s)"))
    for key, value in dep.items():
        if key not in _SHOWN and value not in (None, "", [], {}):
            facts.append((key.replace("_", " "), esc(value if isinstance(value, str) else json.dumps(value))))
    notes = dep.get("vllm_notes") or []
    if notes:
        facts.append((f"vLLM {esc(dep.get('vllm_version'))} notes", "<ul>" + "".join(f"<li>{esc(n)}</li>"
                                                                              for n in notes) + "</ul>"))
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<section id="deployment"><h2>Deployment under test</h2><dl class="glm-facts">{rows}</dl></section>'


def _suites(data: Mapping[str, Any], plots: Mapping[str, list[Path]], link_cases: bool = True) -> str:
    suites = data.get("suites") or {}
    if not suites:
        return ""
    order = sorted(suites, key=lambda s: SUITES.index(s) if s in SUITES else len(SUITES))
    out = ['<section id="suites"><h2>Suites</h2>']
    numbers = _case_numbers(data)
    for name in order:
        suite = suites[name]
        counts = suite.get("tests") or {}
        ran = sum(n for k, n in counts.items() if k != "skipped")
        verdict = suite.get("verdict") if ran else "not run"
        badge = {"pass": "pass", "fail": "FAIL"}.get(str(verdict), "not run (every test skipped)")
        tally = _tally(counts) or "none"
        out.append(f'<section class="glm-suite" id="suite-{esc(name)}"><h3>{esc(name)} '
                   f'<span class="glm-badge glm-{esc(verdict)}">{esc(badge)}</span></h3>'
                   f"<p>tests: {esc(tally)}</p>")
        out.append(_figures(suite.get("figures") or []))
        cases = suite.get("cases") or []
        failed = [c for c in cases if c.get("outcome") in _FAILING]
        if failed:
            items = []
            for c in failed:
                label = f"<code>{esc(_short_id(c.get('nodeid', '')))}</code>"
                number = numbers.get(c.get("nodeid", ""))
                if link_cases and number is not None:
                    label = f'<a href="#case-{number}">{label}</a>'
                items.append(f'<li><span class="glm-badge glm-fail">{esc(c.get("outcome", "").upper())}</span> '
                             f'{label}: {esc(_first_line(c.get("message", ""), 240))}</li>')
            out.append(f"<h4>Failed ({len(failed)})</h4><ul>{''.join(items)}</ul>")
        known = _known_defects(cases)
        if known:
            out.append("<h4>Known defects of the served vLLM</h4><ul>" + "".join(
                f'<li><span class="glm-badge glm-known">KNOWN DEFECT</span> {n} test{"s" if n > 1 else ""}: '
                f"{esc(note)}</li>" for note, n in known.items()) + "</ul>")
        tolerated = [c for c in cases if c.get("outcome") == "tolerated"]
        if tolerated:
            out.append(f"<details><summary>Tolerated model misses ({len(tolerated)}, counted in the suite's rates)"
                       "</summary><ul>" + "".join(f"<li><code>{esc(_short_id(c.get('nodeid', '')))}</code>: "
                                                  f"{esc(_first_line(c.get('message', ''), 300))}</li>"
                                                  for c in tolerated) + "</ul></details>")
        out += [_image(p) for p in plots.get(name, [])]
        out.append("</section>")
    out.append("</section>")
    return "".join(out)


def _figures(figures: list[Mapping[str, Any]]) -> str:
    """The suite's figures against their thresholds: one row per figure, or, for checks measuring the same
    figures (the latency cells, MTP's workload kinds), one row per check with the limit under each value."""
    if not figures:
        return ""
    objs = [Figure(**{k: v for k, v in f.items() if k != "passed"}) for f in figures]
    if _as_matrix(objs) or _dense(objs):
        columns = list(dict.fromkeys(f.figure for f in objs))
        checks = list(dict.fromkeys(f.check for f in objs))
        cell = {(f.check, f.figure): f for f in objs}
        head = "<tr><th>check</th>" + "".join(f'<th title="{esc(c)}">{esc(_header(c).replace("_", " "))}</th>'
                                             for c in columns) + "</tr>"
        rows = []
        for check in checks:
            tds = []
            for column in columns:
                f = cell.get((check, column))
                if f is None:
                    tds.append("<td></td>")
                    continue
                limit = f'<span class="glm-limit">{esc(f.op)} {esc(_num(f.limit))}</span>' if f.op and f.limit is not None else ""
                tds.append(f'<td class="glm-num {_result_class(f.passed)}">{esc(_value(f, unit=False))}{limit}</td>')
            rows.append(f"<tr><th>{esc(check)}</th>{''.join(tds)}</tr>")
        ms = "latencies in ms; " if any(f.unit.strip() == "ms" for f in objs) else ""
        return (f"<table>{head}{''.join(rows)}</table><p class=\"glm-muted\">{ms}the limit under each value; red: "
                f"beyond its limit</p>")
    rows = []
    for f in objs:
        threshold = f"{f.op} {_num(f.limit)}" if f.op and f.limit is not None else ""
        result = {True: "pass", False: "FAIL", None: "-"}[f.passed]
        rows.append(f'<tr><td>{esc(f.check)}</td><td><code>{esc(f.figure)}</code></td><td class="glm-num">'
                    f'{esc(_value(f))}</td><td class="glm-num">{esc(threshold)}</td>'
                    f'<td class="{_result_class(f.passed)}">{result}</td></tr>')
    return ("<table><tr><th>check</th><th>figure</th><th>measured</th><th>threshold</th><th>result</th></tr>"
            + "".join(rows) + "</table>")


def _dense(figures: list[Figure]) -> bool:
    """A few checks measuring (nearly) the same figures, such as MTP's workload kinds: a matrix on a page,
    where the terminal's narrower rule (:func:`_as_matrix`) keeps a list."""
    checks = {f.check for f in figures}
    columns = {f.figure for f in figures}
    return len(checks) >= 2 and len(columns) <= 12 and len(figures) >= 0.75 * len(checks) * len(columns)


def _failed_cases(data: Mapping[str, Any]) -> str:
    cases = [c for suite in (data.get("suites") or {}).values() for c in suite.get("cases") or []
             if c.get("outcome") in _FAILING]
    if not cases:
        return ""
    numbers = _case_numbers(data)
    out = [f'<section id="failed-cases"><h2>Failed cases ({len(cases)})</h2><p class="glm-muted">What each failed '
           f'test asked and what came back, streamed and not; the exact checks\' findings are highlighted, and the '
           f'text they quote is <mark>marked</mark> in the answers.</p><p class="glm-tools">'
           f'<button type="button" data-glm-toggle="open" hidden>open all</button>'
           f'<button type="button" data-glm-toggle="close" hidden>close all</button></p>']
    for i, c in enumerate(cases[:MAX_CASES]):
        opened = " open" if i < OPEN_CASES else ""
        body = [f"<h4>Failure</h4><pre>{esc(c.get('message'))}</pre>"]
        if c.get("exchange"):
            body.append(_exchange(c["exchange"]))
        out.append(f'<details class="glm-case" id="case-{numbers[c["nodeid"]]}"{opened}><summary>'
                   f'<span class="glm-badge glm-fail">{esc(c.get("outcome", "").upper())}</span> '
                   f'{esc(_short_id(c.get("nodeid", "")))}</summary>{"".join(body)}</details>')
    if len(cases) > MAX_CASES:
        out.append(f'<p class="glm-muted">… and {len(cases) - MAX_CASES} more failed tests (all are in the JSON '
                   f"report).</p>")
    out.append("</section>")
    return "".join(out)


def _exchange(ex: Mapping[str, Any]) -> str:
    """A case's request and answers, with what the checks found."""
    out = []
    problems = ex.get("problems") or []
    quoted = _quoted([*problems, *(f for a in (ex.get("answers") or {}).values() for f in a.get("findings") or [])])
    if problems:
        out.append("<h4>Problems</h4>" + _findings(problems))
    req = ex.get("request") or {}
    settings = [f"case <code>{esc(ex.get('case'))}</code>" + (f" ({esc(ex['category'])})" if ex.get("category") else ""),
                f"tool_choice <code>{esc(json.dumps(req.get('tool_choice')))}</code>",
                f"thinking {'on' if req.get('thinking') else 'off'}"]
    if req.get("max_tokens") is not None:
        settings.append(f"max_tokens {esc(req['max_tokens'])}")
    out.append(f"<h4>Request</h4><p>{', '.join(settings)}</p>")
    for msg in req.get("messages") or []:
        out.append(_message(msg))
    tools = req.get("tools") or []
    if tools:
        names = ", ".join(esc((t.get("function") or {}).get("name", "?")) for t in tools)
        out.append(f"<details><summary>tools: {names}</summary><pre>{esc(json.dumps(tools, indent=1, ensure_ascii=False))}"
                   f"</pre></details>")
    answers = ex.get("answers") or {}
    if answers:
        cols = [_answer(mode, a, quoted) for mode, a in answers.items()]
        out.append(f'<h4>Answers</h4><div class="glm-answers">{"".join(cols)}</div>')
    return "".join(out)


def _message(msg: Mapping[str, Any]) -> str:
    parts = [f'<div class="glm-msg"><span class="glm-role">{esc(msg.get("role"))}</span>']
    if msg.get("tool_call_id"):
        parts.append(f' <span class="glm-muted">for call {esc(msg["tool_call_id"])}</span>')
    content = msg.get("content")
    if content not in (None, ""):
        parts.append(f"<pre>{esc(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False))}</pre>")
    if isinstance(msg.get("reasoning"), str) and msg["reasoning"]:
        parts.append(f'<span class="glm-muted">reasoning</span><pre>{esc(msg["reasoning"])}</pre>')
    for call in msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        parts.append(f"<pre>{esc(fn.get('name'))}({esc(args if isinstance(args, str) else json.dumps(args))})</pre>")
    parts.append("</div>")
    return "".join(parts)


def _answer(mode: str, a: Mapping[str, Any], quoted: list[str]) -> str:
    title = {"plain": "non-streamed", "stream": "streamed"}.get(mode, mode)
    out = [f'<div class="glm-answer"><h4>{esc(title)}</h4>']
    if a.get("error"):
        out.append(f'<ul class="glm-findings"><li class="glm-finding">no answer: {esc(a["error"])}</li></ul></div>')
        return "".join(out)
    findings = a.get("findings") or []
    out.append(_findings(findings) if findings else '<p class="glm-muted">the exact checks found nothing in this answer</p>')
    facts = [f"finish_reason <code>{esc(a.get('finish_reason'))}</code>"]
    for key, label in (("completion_tokens", "completion tokens"), ("reasoning_tokens", "reasoning tokens"),
                       ("chunks", "chunks")):
        if a.get(key) is not None:
            facts.append(f"{label} {esc(a[key])}")
    out.append(f"<p>{', '.join(facts)}</p>")
    calls = a.get("tool_calls") or []
    if calls:
        out.append(f"<div>tool calls ({len(calls)}):</div>")
        for call in calls:
            out.append(f'<div class="glm-muted"><code>{esc(call.get("name"))}</code> id <code>{esc(call.get("id"))}'
                       f"</code>, raw arguments:</div><pre>{_marked(call.get('arguments') or '', quoted)}</pre>")
    else:
        out.append("<div>tool calls: none</div>")
    out.append(f"<div>content:</div><pre>{_marked(a.get('content') or '', quoted) or '<i>(empty)</i>'}</pre>")
    if a.get("reasoning"):
        out.append(f"<div>reasoning:</div><pre>{_marked(a['reasoning'], quoted)}</pre>")
    if a.get("generated") is not None:
        out.append(f"<details><summary>what the model generated (its token ids as text)</summary>"
                   f"<pre>{_marked(a['generated'], quoted)}</pre></details>")
    out.append("</div>")
    return "".join(out)


def _findings(findings: Iterable[str]) -> str:
    return '<ul class="glm-findings">' + "".join(f'<li class="glm-finding">{esc(f)}</li>' for f in findings) + "</ul>"


# -- helpers -------------------------------------------------------------------------------------------
_QUOTED = re.compile(r"'([^'\n]{3,200})'|\"([^\"\n]{3,200})\"")


def _quoted(texts: Iterable[str]) -> list[str]:
    """The values the findings quote ('paris', "Paris"), longest first, to mark in the answers."""
    found = {m.group(1) or m.group(2) for t in texts for m in _QUOTED.finditer(t)}
    return sorted(found, key=len, reverse=True)


def _marked(text: str, quoted: Sequence[str]) -> str:
    """``text`` escaped, with each occurrence of a quoted value in ``<mark>``."""
    if not quoted or not text:
        return esc(text)
    pattern = re.compile("|".join(re.escape(q) for q in quoted))
    out, last = [], 0
    for m in pattern.finditer(text):
        out.append(esc(text[last:m.start()]))
        out.append(f"<mark>{esc(m.group(0))}</mark>")
        last = m.end()
    out.append(esc(text[last:]))
    return "".join(out)


def _image(path: Path) -> str:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(path.stem)}">'
            f"<figcaption>{esc(path.name)}</figcaption></figure>")


def _plot_suite(path: Path) -> str:
    """Which suite's section a plot belongs in (plots.render names them): latency-* to slo, mtp-* to mtp."""
    if path.name.startswith("latency-"):
        return "slo"
    if path.name.startswith("mtp-"):
        return "mtp"
    return ""


def _case_numbers(data: Mapping[str, Any]) -> dict[str, int]:
    """A number per failed test, the anchor of its case on the page."""
    nodeids = [c["nodeid"] for suite in (data.get("suites") or {}).values() for c in suite.get("cases") or []
               if c.get("outcome") in _FAILING and "nodeid" in c]
    return {nodeid: i for i, nodeid in enumerate(nodeids)}


def _known_defects(cases: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    notes: dict[str, int] = {}
    for c in cases:
        if c.get("outcome") == "known_defect":
            found = _DEFECT_NOTE.search(c.get("message") or "")
            note = found.group(1) if found else (c.get("message") or "")[:200]
            notes[note] = notes.get(note, 0) + 1
    return notes


def _short_id(nodeid: str) -> str:
    """``suites/test_mtp.py::test_x[y]`` as ``test_mtp.py::test_x[y]``."""
    path, sep, rest = nodeid.partition("::")
    return path.rsplit("/", 1)[-1] + sep + rest


def _tally(counts: Mapping[str, int]) -> str:
    """'447 passed, 5 skipped, 6 known defects'."""
    return ", ".join(f"{n} {'known defect' + ('s' if n > 1 else '') if k == 'known_defect' else k}"
                     for k, n in counts.items() if n)


def _first_line(text: str, limit: int) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _value(f: Figure, unit: bool = True) -> str:
    return "n/a" if f.value is None else _num(f.value) + (f.unit if unit else "")


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, float):
        return _num(value)
    return str(value)


def _result_class(passed: bool | None) -> str:
    return {True: "glm-ok", False: "glm-bad", None: ""}[passed]
