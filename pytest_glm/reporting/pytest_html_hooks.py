"""When pytest-html is installed, its report carries the gate too (registered by the plugin only then).

pytest-html's page is a list of tests; the gate's own page (``--glm-html``, pytest_glm.reporting.html) is
the one to decide a rollout from. A team that already attaches pytest-html's report gets the same facts
in it, by pytest-html's own conventions: the verdict, the causes, the deployment and the suite tables at
the top of its summary (``pytest_html_results_summary``), and each failed correctness test's exchange as
extras of that test (an ``html`` extra rendered like the gate's page, and the ``json`` record).
"""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from pytest_glm.reporting import exchange, html


class PytestHtmlHooks:
    """pytest-html's hooks, bound to the run's session (:class:`pytest_glm.session.GLMSession`)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def pytest_html_results_summary(self, prefix: list[str], summary: list[str], postfix: list[str],
                                    session: pytest.Session) -> None:
        if self.session.is_worker or not self.session.report.outcomes:
            return
        prefix.append(html.summary_fragment(self.session.report_data(), self.session.glm.api_key))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        if report.when != "call" or not item.config.getoption("htmlpath", None):
            return report
        from pytest_html import extras

        secret = self.session.glm.api_key
        for name, value in item.user_properties:
            if name == exchange.PROPERTY:
                record = html.scrub(json.loads(str(value)), secret)
                report.extras = [*getattr(report, "extras", []), extras.html(html.exchange_fragment(record, secret)),
                                 extras.json(record, name="glm exchange")]
        return report
