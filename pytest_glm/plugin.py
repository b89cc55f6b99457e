"""pytest-glm's pytest plugin: options, markers, hooks and fixtures. Thin on purpose; the work is done
in the layers below it (docs/architecture.md): config, serving, judging, measuring, reporting.

When the server starts: once per run, after collection and before the first test, and only if a collected
test uses a ``glm_*`` fixture, so a run that needs no server never pays for one. A server that fails to
start stops the run once, with its log tail, instead of erroring every test. Under pytest-xdist the
controller owns the one server and workers attach to it (see :class:`XdistCoordinator`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.catalog import versions
from pytest_glm.config import GLMConfig, add_options, read_options, resolve
from pytest_glm.exceptions import ConfigError, DeploymentError
from pytest_glm.judging.case_answers import AnswerCache
from pytest_glm.measuring.load import LoadRunner
from pytest_glm.reporting import baseline, compare
from pytest_glm.reporting.report import RunReport, recorder
from pytest_glm.serving.deployment import Deployment, DeploymentManager
from pytest_glm.serving.endpoint import Endpoint

#: Any test that (directly or through another fixture) uses this fixture needs the server.
SERVER_FIXTURE = "glm_deployment"

MARKERS = (
    "preflight: the endpoint is the GLM deployment it claims to be (pytest-glm suite)",
    "tool_calling: correctness of parsed tool calls (pytest-glm suite)",
    "reasoning: reasoning/content separation (pytest-glm suite)",
    "mtp: MTP speculative-decoding acceptance (pytest-glm suite)",
    "slo: latency SLOs (pytest-glm suite); never shares the server with other load",
)

#: Tests with these markers measure the server (latency, /metrics deltas): under xdist they hold it alone.
EXCLUSIVE_MARKERS = ("slo", "mtp")
#: The longest a test waits for its turn on the server under xdist (a latency cell on a GPU takes minutes).
SHARE_TIMEOUT = 3600.0

_STATE_FILE = "deployment.json"
_NEED_FILE = "need-server"
_LOCK_FILE = "server-share.lock"
_manager_key = pytest.StashKey["GLMSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        glm_config = resolve(read_options(config))
        stored = baseline.load(glm_config.baseline) if glm_config.baseline else None
        earlier = compare.load(glm_config.compare) if glm_config.compare else None
        if earlier is not None and glm_config.compare is not None:
            compare.refuse_other_target(earlier, glm_config.compare, glm_config.model.model_id if glm_config.model
                                        else None, glm_config.profile.name)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from exc
    session = GLMSession(config, glm_config)
    session.baseline = stored
    session.earlier = earlier
    config.stash[_manager_key] = session
    config.pluginmanager.register(session, "glm_session")
    if config.pluginmanager.hasplugin("xdist") and (session.is_worker or _xdist_active(config)):
        config.pluginmanager.register(XdistCoordinator(session), "glm_xdist")


def _xdist_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None))


def needs_server(items: list[pytest.Item]) -> bool:
    return any(SERVER_FIXTURE in getattr(item, "fixturenames", ()) for item in items)


def needs_benchmark(items: list[pytest.Item]) -> bool:
    """Some collected test measures latency (the server is then launched with prefix caching off)."""
    return any(item.get_closest_marker("slo") is not None and SERVER_FIXTURE in getattr(item, "fixturenames", ())
               for item in items)


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
        self.benchmark = False
        self.report = RunReport(scrub_secret=glm_config.api_key)
        self.death: DeploymentError | None = None
        self._written: list[str] = []

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
            return self._manager().start(self.say, benchmark=self.benchmark)
        except (DeploymentError, ConfigError) as exc:
            self._write_state({"error": str(exc)})
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
            self.benchmark = needs_benchmark(session.items)
            self.start_or_exit()

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        g = self.glm
        target = f"endpoint {g.base_url}" if g.base_url else f"launch with {g.vllm or 'the installed vLLM'}"
        model = g.model.model_id if g.model else "(recognised from the endpoint)"
        return [f"glm: model {model}, profile {g.profile.name}, {target}"]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_worker:  # under xdist the controller sees every worker's reports too
            self.report.add(report)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker:
            return
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
            self._write_outputs()
            failed = self.comparison.failed if isinstance(self.comparison, compare.Comparison) else bool(self.comparison)
            if failed and session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self.manager is not None:
            self.manager.stop(self.say)

    def _write_outputs(self) -> None:
        """The JSON report and the plots (only when asked, and only if some suite ran)."""
        deployment = self.manager.deployment if self.manager is not None else None
        described = deployment.to_report() if deployment is not None else None
        if self.earlier is not None and self.report.outcomes:
            self.comparison = self._compare(described)
        comparison = self.comparison if isinstance(self.comparison, compare.Comparison) else None
        written = []
        if self.glm.report is not None and self.report.outcomes:
            self.report.write_json(self.glm.report, described, comparison)
            written.append(f"pytest-glm report: {self.glm.report}")
        if self.glm.plots is not None and self.report.outcomes:
            from pytest_glm.reporting.plots import render

            title = (f"{deployment.model.model_id} on {deployment.profile.name}, vLLM {deployment.vllm_version}"
                     if deployment is not None else "")
            for path in render(self.glm.plots, self.report.figures, self.report.scrub(title)):
                written.append(f"pytest-glm plot: {path}")
        self._written = written

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
        if self._tmp_state_dir is not None:
            shutil.rmtree(self._tmp_state_dir, ignore_errors=True)


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

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.session.is_worker and needs_server(session.items) and self.session.state_dir is not None:
            need = self.session.state_dir / _NEED_FILE
            if needs_benchmark(session.items):
                need.write_text("benchmark")
            else:
                need.touch()

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        state_dir = self.session.state_dir
        if state_dir is None or not (state_dir / _NEED_FILE).exists() or (state_dir / _STATE_FILE).exists():
            return
        self.session.benchmark = (state_dir / _NEED_FILE).read_text() == "benchmark"
        deployment = self.session.start_or_exit()
        self.session._write_state(deployment.to_state())


# -- fixtures ---------------------------------------------------------------------------------------
def _session(config: pytest.Config) -> GLMSession:
    return config.stash[_manager_key]


def glm_config_of(config: pytest.Config) -> GLMConfig:
    """The resolved options, for collection-time code (``pytest_generate_tests``) that has no fixtures."""
    return _session(config).glm


@pytest.fixture(scope="session")
def glm_config(pytestconfig: pytest.Config) -> GLMConfig:
    """The resolved pytest-glm options of this run."""
    return _session(pytestconfig).glm


@pytest.fixture(scope="session")
def glm_deployment(pytestconfig: pytest.Config) -> Deployment:
    """The deployment under test: model, profile, serve flags, vLLM version and endpoint."""
    return _session(pytestconfig).deployment()


@pytest.fixture(scope="session")
def glm_endpoint(glm_deployment: Deployment) -> Endpoint:
    """Base URL, served model name, ``/metrics``, ``/tokenize`` and ``/version`` of the deployment."""
    return glm_deployment.endpoint


@pytest.fixture(scope="session")
def _glm_sync_client(glm_endpoint: Endpoint) -> Iterator[Any]:
    client = glm_endpoint.client()
    yield client
    client.close()


@pytest.fixture
def glm_client(glm_deployment: Deployment, _glm_sync_client: Any) -> Any:
    """``openai.OpenAI`` client of the deployment (timeout: --glm-request-timeout). A dead server fails the
    test before this runs (``_glm_server_share``)."""
    return _glm_sync_client


@pytest.fixture
def glm_async_client(glm_deployment: Deployment) -> Any:
    """A fresh ``openai.AsyncOpenAI`` client of the deployment, for one test's event loop."""
    return glm_deployment.endpoint.async_client()


@pytest.fixture
def glm_load_runner(glm_deployment: Deployment) -> LoadRunner:
    """The load runner aimed at the deployment (random-token prompts, streamed, timed per chunk)."""
    ep = glm_deployment.endpoint
    return LoadRunner(ep.base_url, ep.model, ep.api_key, read_timeout=ep.request_timeout)


@pytest.fixture(scope="session")
def glm_baseline(pytestconfig: pytest.Config) -> dict[str, baseline.Cell] | None:
    """The stored run of --glm-baseline, by test name (None without the option)."""
    return _session(pytestconfig).baseline


@pytest.fixture(scope="session")
def glm_mtp_twin(pytestconfig: pytest.Config, glm_deployment: Deployment) -> Deployment:
    """The MTP-off twin of the launched deployment (--glm-mtp-equivalence); skips without the option."""
    session = _session(pytestconfig)
    if not session.glm.mtp_equivalence:
        pytest.skip("MTP equivalence runs with --glm-mtp-equivalence (it launches a second, MTP-off server)")
    return session.mtp_twin()


@pytest.fixture(scope="session")
def glm_answers(glm_endpoint: Endpoint, glm_deployment: Deployment) -> Iterator[AnswerCache]:
    """The answers of the correctness cases, each (case, streamed) asked once per run, with their
    faithfulness and behaviour verdicts (pytest_glm.judging.case_answers): the per-case tests, the aggregate
    gates and the load comparison judge the same responses."""
    cache = AnswerCache(glm_endpoint, glm_deployment)
    yield cache
    cache.close()


@pytest.fixture
def glm_record(request: pytest.FixtureRequest) -> Any:
    """``glm_record(suite, check, figure, value, limit=None, op='', unit='')``: a figure for the terminal
    tables, the JSON report and JUnit XML (as a ``glm`` property holding one JSON object). Appended to the
    test's user properties directly: pytest's ``record_property`` warns under the default junit family."""
    return recorder(lambda name, value: request.node.user_properties.append((name, value)))


@pytest.fixture(scope="session")
def glm_plots_dir(pytestconfig: pytest.Config) -> Path | None:
    """Where plots and their samples go (--glm-plots), or None."""
    return _session(pytestconfig).glm.plots


@pytest.fixture(autouse=True)
def _glm_server_share(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test of a server that died fails at once, with the log tail. Under xdist, tests that measure the
    server (slo, mtp) hold it alone; the others share it."""
    uses_server = SERVER_FIXTURE in request.fixturenames
    if uses_server:
        request.getfixturevalue(SERVER_FIXTURE)
        _session(request.config).check_alive()
    lock = _session(request.config).server_share() if uses_server else None
    if lock is None:
        yield
        return
    exclusive = any(request.node.get_closest_marker(m) for m in EXCLUSIVE_MARKERS)
    from filelock import Timeout

    try:
        hold = lock.write_lock() if exclusive else lock.read_lock()
        with hold:
            yield
    except Timeout:
        pytest.fail(f"waited {SHARE_TIMEOUT:.0f} s for {'sole' if exclusive else 'shared'} use of the server",
                    pytrace=False)
