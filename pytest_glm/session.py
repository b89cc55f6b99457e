"""One pytest run of the gate, in named phases: the state the plugin's hooks act on.

- **configure**: the resolved options (and a stored baseline or report to compare with) become a
  :class:`GLMSession`, registered as a plugin so that its hook methods run (plugin.pytest_configure);
- **start**: after collection, if a collected test uses a ``glm_*`` fixture, the one deployment of the run is
  started or attached (:meth:`GLMSession.start_or_exit`; under xdist the controller, see
  :class:`XdistCoordinator`), and a failure stops the run once, saying why;
- **run**: every test report is recorded (:meth:`pytest_runtest_logreport`), a dead server fails the next
  test at once (:meth:`check_alive`), measuring tests hold the server alone under xdist (:meth:`server_share`);
- **report**: at the end the tables, the comparison and the deployment are printed
  (:meth:`pytest_terminal_summary`), the JSON report, the plots and the HTML page written
  (:meth:`write_outputs`), all from one view of the run (:meth:`report_data`);
- **stop**: whatever this run launched is stopped (:meth:`pytest_sessionfinish`, and
  :meth:`pytest_unconfigure` after an internal error).

Modelled on pytest-benchmark's session object and xdist's ``dsession``: one object per run that owns the
state, with the hooks as its methods.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.catalog import latency_grid, versions
from pytest_glm.config import GLMConfig
from pytest_glm.exceptions import ConfigError, DeploymentError
from pytest_glm.reporting import baseline, compare
from pytest_glm.reporting.report import RunReport, suite_of
from pytest_glm.serving.deployment import Deployment, DeploymentManager

#: Any test that (directly or through another fixture) uses this fixture needs the server.
SERVER_FIXTURE = "glm_deployment"


#: Tests with these markers measure the server (latency, /metrics deltas): under xdist they hold it alone.
EXCLUSIVE_MARKERS = ("slo", "mtp")
#: The longest a test waits for its turn on the server under xdist (a latency cell on a GPU takes minutes).
SHARE_TIMEOUT = 3600.0

#: In a shape run (--glm-weights dummy) these suites, and these tests of other suites, are skipped: they
#: judge what the model answers, and random weights answer nothing meaningful. Preflight's checks stay (health,
#: version, served name, tokenizer, template, a round trip judged on its finish_reason and usage only, context,
#: parsers, MTP running), as do the latency suite and the MTP suite's drafting (its acceptance recorded only).
SHAPE_SKIPPED_SUITES = ("tool_calling", "reasoning", "surfaces", "soak")
SHAPE_SKIPPED_TESTS = ("test_mtp_equivalence",)
SHAPE_SKIP_REASON = ("shape run: random weights (--glm-weights dummy) make the answers meaningless; the "
                     "correctness suites run with --glm-weights real")

_STATE_FILE = "deployment.json"
_NEED_FILE = "need-server"
_LOCK_FILE = "server-share.lock"
SESSION_KEY = pytest.StashKey["GLMSession"]()


def xdist_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None))


def shape_skipped(item: pytest.Item) -> bool:
    """Whether a shape run skips this test (it judges what the model answers)."""
    name = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    return suite_of(item.nodeid, item.keywords) in SHAPE_SKIPPED_SUITES or name in SHAPE_SKIPPED_TESTS


def needs_server(items: list[pytest.Item]) -> bool:
    """Whether a collected test uses the server (one a shape run skips does not count)."""
    return any(SERVER_FIXTURE in getattr(item, "fixturenames", ()) and not _shape_marked(item) for item in items)


def _shape_marked(item: pytest.Item) -> bool:
    return any(m.kwargs.get("reason") == SHAPE_SKIP_REASON for m in item.iter_markers("skip"))


def latency_plan_lines(glm: GLMConfig, items: list[pytest.Item]) -> list[str]:
    """:func:`catalog.latency_grid.summary` of the collected latency cells (``slo_cell`` parameters)."""
    cells = []
    for item in items:
        param = getattr(getattr(item, "callspec", None), "params", {}).get("slo_cell")
        if param is not None:
            cells.append((param[0].name, param[1]))
    if not cells:
        return []
    thresholds = glm.profile.thresholds
    capacity = glm.kv_estimate()
    active = glm.model.active_params_b if glm.model else None
    known = [(w, b) for w, b in dict.fromkeys(cells) if w in thresholds.workloads]
    plans = latency_grid.plan(thresholds, known, capacity, active, baseline=glm.baseline is not None)
    return latency_grid.summary(plans, capacity, thresholds.slo_tier)


class GLMSession:
    """Per-run state: the resolved config, and the manager that owns the server (never on a worker)."""

    def __init__(self, config: pytest.Config, glm_config: GLMConfig) -> None:
        self.config = config
        self.glm = glm_config
        self.is_worker = hasattr(config, "workerinput")
        self.state_dir: Path | None = None
        self._tmp_state_dir: str | None = None
        self.manager: DeploymentManager | None = None
        self.worker_deployment: Deployment | None = None
        self.baseline: dict[str, baseline.Cell] | None = None
        self.earlier: dict[str, Any] | None = None  # the --glm-compare report
        self.comparison: compare.Comparison | str | None = None  # the diff, or why there is none
        self.twin: Deployment | DeploymentError | None = None
        self.report = RunReport(scrub_secret=glm_config.api_key)
        self.death: DeploymentError | None = None
        self.start_failure: str | None = None  # why the deployment did not start (for the HTML page)
        self._written: list[str] = []
        self._compared = False
        self._own_plots_dir: str | None = None
        self.plots_dir = self._plots_dir()

    def _plots_dir(self) -> Path | None:
        """Where latency cells save their samples and the plots are drawn: --glm-plots; with --glm-html alone,
        a temporary folder of the controller's, handed to xdist workers (XdistCoordinator); else None."""
        if self.glm.plots is not None:
            return self.glm.plots
        if self.is_worker:
            handed = self.config.workerinput.get("glm_plots_dir")  # type: ignore[attr-defined]
            return Path(handed) if handed else None
        if self.glm.html is None:
            return None
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return None  # the page says why it has no plots
        self._own_plots_dir = tempfile.mkdtemp(prefix="pytest-glm-plots-")
        return Path(self._own_plots_dir)

    # -- output ------------------------------------------------------------------------------------
    def say(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                reporter.write_line(f"[glm] {line}")
        else:
            reporter.write_line(f"[glm] {line}")

    # -- the server --------------------------------------------------------------------------------
    def _manager(self) -> DeploymentManager:
        if self.manager is None:
            factory = self.config._tmp_path_factory  # type: ignore[attr-defined]  # pytest's own, set by tmpdir
            log_dir = Path(factory.getbasetemp()) / "glm"
            log_dir.mkdir(parents=True, exist_ok=True)
            self.manager = DeploymentManager(self.glm, log_dir)
        return self.manager

    def start_or_exit(self) -> Deployment:
        """Start the deployment; on failure print why once and stop the whole run."""
        try:
            return self._manager().start(self.say)
        except (DeploymentError, ConfigError) as exc:
            self._write_state({"error": str(exc)})
            self.start_failure = str(exc)
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_sep("=", "pytest-glm: deployment failed", red=True, bold=True)
                for line in str(exc).splitlines():
                    reporter.write_line(line)
            first_line = str(exc).splitlines()[0]
            code = pytest.ExitCode.USAGE_ERROR if isinstance(exc, ConfigError) else pytest.ExitCode.TESTS_FAILED
            pytest.exit(f"pytest-glm: {first_line}", returncode=code)

    def deployment(self) -> Deployment:
        """The deployment for a fixture; on a worker, the one the controller started."""
        if self.is_worker:
            return self._worker_deployment()
        return self.start_or_exit()

    def _worker_deployment(self) -> Deployment:
        if self.worker_deployment is None:
            state_dir = Path(self.config.workerinput["glm_state_dir"])  # type: ignore[attr-defined]
            path = state_dir / _STATE_FILE
            if not path.is_file():
                pytest.exit("pytest-glm: the controller started no server (use the glm fixtures as test "
                            "arguments so that collection sees them)", returncode=pytest.ExitCode.INTERNAL_ERROR)
            state = json.loads(path.read_text())
            if "error" in state:
                pytest.exit(f"pytest-glm: {state['error'].splitlines()[0]}", returncode=pytest.ExitCode.TESTS_FAILED)
            self.worker_deployment = Deployment.from_state(state, self.glm)
        return self.worker_deployment

    def check_alive(self) -> None:
        """Fail the current test at once if the server died; every later test fails the same way, fast."""
        if self.death is None:
            deployment = self.manager.deployment if self.manager is not None else self.worker_deployment
            if deployment is None:
                return
            try:
                deployment.check_alive()
            except DeploymentError as exc:
                self.death = exc
        if self.death is not None:
            pytest.fail(self.report.scrub(str(self.death)), pytrace=False)

    def mtp_twin(self) -> Deployment:
        """The MTP-off twin (--glm-mtp-equivalence), launched on first use by whichever process needs it."""
        if self.twin is None:
            try:
                self.twin = self._manager().launch_twin(self.deployment(), self.say)
            except DeploymentError as exc:
                self.twin = exc
        if isinstance(self.twin, DeploymentError):
            pytest.fail(f"the MTP-off twin did not start: {self.twin}", pytrace=False)
        return self.twin

    def _stop_twin(self) -> None:
        if isinstance(self.twin, Deployment) and self.twin.server is not None:
            self.twin.server.stop()
            self.twin.server = None

    def server_share(self) -> Any:
        """Under xdist, the read/write lock that lets measuring tests hold the server alone (else None)."""
        if self.state_dir is None:
            return None
        from filelock import ReadWriteLock

        return ReadWriteLock(self.state_dir / _LOCK_FILE, timeout=SHARE_TIMEOUT)

    def _write_state(self, state: dict[str, Any]) -> None:
        if self.state_dir is None:
            return
        tmp = self.state_dir / (_STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_dir / _STATE_FILE)

    # -- hooks -------------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        if self.is_worker or self.state_dir is not None:
            return  # xdist: the controller starts the server when the workers' collection needs it
        if session.config.option.collectonly or (session.testsfailed and not session.config.option.continue_on_collection_errors):
            return
        if needs_server(session.items):
            self.start_or_exit()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Preflight first: a gap it finds (a short context, no tool parser) then fails there, once, and the
        tests that need what is missing are skipped with its reason (serving.capabilities)."""
        items.sort(key=lambda item: suite_of(item.nodeid) != "preflight")
        if self.glm.shape_run:
            for item in items:
                if shape_skipped(item):
                    item.add_marker(pytest.mark.skip(reason=SHAPE_SKIP_REASON))

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        """After "collected N items": the latency cells, what judges each one, and those beyond the KV cache
        (estimated from the model's config: no server is up yet; each cell checks the server's figure)."""
        if self.is_worker:
            return []
        return latency_plan_lines(self.glm, items)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        g = self.glm
        target = f"endpoint {g.base_url}" if g.base_url else f"launch with {g.vllm or 'the installed vLLM'}"
        model = g.model.model_id if g.model else "(recognised from the endpoint)"
        if g.shape_run:
            model += " (shape run: random weights, --glm-weights dummy)"
        return [f"glm: model {model}, profile {g.profile.name}, {target}"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_worker:  # under xdist the controller sees every worker's reports too
            self.report.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
        causes = self.report.cause_lines()
        if causes:
            terminalreporter.write_sep("=", "pytest-glm: causes (failures grouped by what they share)", red=True,
                                       bold=True)
            for line in causes:
                terminalreporter.write_line(line)
        for title, lines in self.report.tables():
            terminalreporter.write_sep("-", title, red="FAIL" in title.split("—")[-1], green="pass" in title)
            for line in lines:
                terminalreporter.write_line(line)
        if isinstance(self.comparison, compare.Comparison):
            terminalreporter.write_sep("-", self.comparison.title(), red=self.comparison.failed,
                                       green=not self.comparison.failed)
            for line in self.comparison.lines():
                terminalreporter.write_line(self.report.scrub(line))
        elif self.comparison:
            terminalreporter.write_sep("-", "pytest-glm: comparison refused", red=True)
            terminalreporter.write_line(self.comparison)
        deployment = self.manager.deployment if self.manager is not None else None
        if deployment is not None:
            terminalreporter.write_sep("-", "pytest-glm: deployment under test")
            for line in deployment.describe():
                terminalreporter.write_line(self.report.scrub(line))
        for line in self._written:
            terminalreporter.write_line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self._stop_twin()
        if not self.is_worker:
            self.write_outputs()
            failed = self.comparison.failed if isinstance(self.comparison, compare.Comparison) else bool(self.comparison)
            if failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.manager is not None:
            self.manager.stop(self.say)

    def deployment_report(self) -> dict[str, Any] | None:
        deployment = self.manager.deployment if self.manager is not None else None
        return deployment.to_report() if deployment is not None else None

    def comparison_result(self) -> compare.Comparison | None:
        """The diff with --glm-compare, computed once, when some suite ran (None without one)."""
        if not self._compared and self.earlier is not None and self.report.outcomes:
            self._compared = True
            self.comparison = self._compare(self.deployment_report())
        return self.comparison if isinstance(self.comparison, compare.Comparison) else None

    def report_data(self) -> dict[str, Any]:
        """The run as the JSON report has it (scrubbed): what the HTML page and pytest-html's summary show."""
        return self.report.to_json(self.deployment_report(), self.comparison_result())

    def write_outputs(self) -> None:
        """The JSON report, the plots and the HTML page (only when asked, and only if some suite ran; the
        page also when the deployment did not start, saying why)."""
        deployment = self.manager.deployment if self.manager is not None else None
        data = self.report_data()  # one view of the run for the JSON report and the page
        written = []
        if self.glm.report is not None and self.report.outcomes:
            RunReport.write_data(self.glm.report, data)
            written.append(f"pytest-glm report: {self.glm.report}")
        pngs: list[Path] = []
        if self.plots_dir is not None and self.report.outcomes:
            from pytest_glm.reporting.plots import render

            title = (f"{deployment.model.model_id} on {deployment.profile.name}, vLLM {deployment.vllm_version}"
                     if deployment is not None else "")
            pngs = render(self.plots_dir, self.report.figures, self.report.scrub(title))
            if self.glm.plots is not None:
                written += [f"pytest-glm plot: {path}" for path in pngs]
        if self.glm.html is not None and (self.report.outcomes or self.start_failure):
            from pytest_glm.reporting import html

            if self.start_failure:
                data = dict(data)
                data["verdict"], data["deployment_error"] = "fail", self.start_failure
                data["causes"] = [{"count": 0, "outcomes": {}, "cause": self.start_failure.splitlines()[0],
                                   "example": "the deployment did not start: no test ran"}, *data["causes"]]
            notes = [] if self.plots_dir is not None else [
                "No plots: drawing them needs matplotlib (pip install 'pytest-glm[plots]')."]
            html.write(self.glm.html, data, pngs, self.glm.api_key, notes if self._plots_expected() else [])
            written.append(f"pytest-glm html: {self.glm.html}")
        self._written = written

    def _plots_expected(self) -> bool:
        return any(f.suite in ("slo", "mtp") for f in self.report.figures)

    def _compare(self, described: dict[str, Any] | None) -> compare.Comparison | str:
        """This run against --glm-compare; a message instead when the endpoint turned out to serve another
        model (with --glm-base-url and no --glm-model it is known only once reached; a named model and the
        profile were checked at configure time)."""
        assert self.earlier is not None and self.glm.compare is not None
        dep = described or {}
        if self.glm.model is None:
            try:
                compare.refuse_other_target(self.earlier, self.glm.compare, dep.get("model"), None)
            except ConfigError as exc:
                return str(exc)
        current = self.report.to_json(described)
        version, family, build = dep.get("vllm_version") or "", dep.get("family"), self.glm.profile.accelerator
        return compare.compare(self.earlier, current, str(self.glm.compare), self.glm.profile.thresholds.baseline_tolerance,
                               explain=lambda what: versions.explain(version, what, family, build))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop_twin()
        if self.manager is not None:  # a run that ended before sessionfinish (internal error)
            self.manager.stop()
        for own in (self._tmp_state_dir, self._own_plots_dir):
            if own is not None:
                shutil.rmtree(own, ignore_errors=True)


class XdistCoordinator:
    """One server per run under pytest-xdist.

    Workers collect; each writes a "need" file into a directory the controller handed it (through
    ``pytest_configure_node``) if its tests use the server. The controller, told that a worker finished
    collecting, starts the server before any test is scheduled, and writes the deployment (or the
    failure) into that directory for the workers to read. The controller stops the server at the end, so
    a worker that dies or finishes early takes nothing down with it.
    """

    def __init__(self, session: GLMSession) -> None:
        self.session = session
        if session.is_worker:
            session.state_dir = Path(session.config.workerinput["glm_state_dir"])  # type: ignore[attr-defined]
        else:
            session._tmp_state_dir = tempfile.mkdtemp(prefix="pytest-glm-")
            session.state_dir = Path(session._tmp_state_dir)

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["glm_state_dir"] = str(self.session.state_dir)
        node.workerinput["glm_controller_pid"] = os.getpid()
        node.workerinput["glm_plots_dir"] = str(self.session.plots_dir or "")

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.session.is_worker and needs_server(session.items) and self.session.state_dir is not None:
            (self.session.state_dir / _NEED_FILE).touch()

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        state_dir = self.session.state_dir
        if state_dir is None or not (state_dir / _NEED_FILE).exists() or (state_dir / _STATE_FILE).exists():
            return
        deployment = self.session.start_or_exit()
        self.session._write_state(deployment.to_state())
