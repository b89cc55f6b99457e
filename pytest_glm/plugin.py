"""pytest-glm's pytest plugin: options, markers, hooks and fixtures. Thin on purpose; the work is done
in config, deployment, launch and endpoint.

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

from pytest_glm.config import GLMConfig, add_options, read_options, resolve
from pytest_glm.deployment import Deployment, DeploymentManager
from pytest_glm.endpoint import Endpoint
from pytest_glm.exceptions import ConfigError, DeploymentError

#: Any test that (directly or through another fixture) uses this fixture needs the server.
SERVER_FIXTURE = "glm_deployment"

MARKERS = (
    "preflight: the endpoint is the GLM deployment it claims to be (pytest-glm suite)",
    "tool_calling: correctness of parsed tool calls (pytest-glm suite)",
    "reasoning: reasoning/content separation (pytest-glm suite)",
    "mtp: MTP speculative-decoding acceptance (pytest-glm suite)",
    "slo: latency SLOs (pytest-glm suite); never shares the server with other load",
)

_STATE_FILE = "deployment.json"
_NEED_FILE = "need-server"
_manager_key = pytest.StashKey["GLMSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        glm_config = resolve(read_options(config))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    session = GLMSession(config, glm_config)
    config.stash[_manager_key] = session
    config.pluginmanager.register(session, "glm_session")
    if config.pluginmanager.hasplugin("xdist") and (session.is_worker or _xdist_active(config)):
        config.pluginmanager.register(XdistCoordinator(session), "glm_xdist")


def _xdist_active(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None))


def needs_server(items: list[pytest.Item]) -> bool:
    return any(SERVER_FIXTURE in getattr(item, "fixturenames", ()) for item in items)


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
            log_dir = Path(self.config._tmp_path_factory.getbasetemp()) / "glm"  # noqa: SLF001
            log_dir.mkdir(parents=True, exist_ok=True)
            self.manager = DeploymentManager(self.glm, log_dir)
        return self.manager

    def start_or_exit(self) -> Deployment:
        """Start the deployment; on failure print why once and stop the whole run."""
        try:
            return self._manager().start(self.say)
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

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        g = self.glm
        target = f"endpoint {g.base_url}" if g.base_url else f"launch with {g.vllm or 'the installed vLLM'}"
        model = g.model.model_id if g.model else "(recognised from the endpoint)"
        return [f"glm: model {model}, profile {g.profile.name}, {target}"]

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        deployment = self.manager.deployment if self.manager is not None else None
        if deployment is None:
            return
        terminalreporter.write_sep("-", "pytest-glm: deployment under test")
        for line in deployment.describe():
            terminalreporter.write_line(line)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.manager is not None:
            self.manager.stop(self.say)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
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
            session._tmp_state_dir = tempfile.mkdtemp(prefix="pytest-glm-")  # noqa: SLF001
            session.state_dir = Path(session._tmp_state_dir)  # noqa: SLF001

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["glm_state_dir"] = str(self.session.state_dir)
        node.workerinput["glm_controller_pid"] = os.getpid()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.session.is_worker and needs_server(session.items) and self.session.state_dir is not None:
            (self.session.state_dir / _NEED_FILE).touch()

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        state_dir = self.session.state_dir
        if state_dir is None or not (state_dir / _NEED_FILE).exists() or (state_dir / _STATE_FILE).exists():
            return
        deployment = self.session.start_or_exit()
        self.session._write_state(deployment.to_state())  # noqa: SLF001


# -- fixtures ---------------------------------------------------------------------------------------
def _session(config: pytest.Config) -> GLMSession:
    return config.stash[_manager_key]


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
    """``openai.OpenAI`` client of the deployment (timeout: --glm-request-timeout)."""
    glm_deployment.check_alive()
    return _glm_sync_client


@pytest.fixture
def glm_async_client(glm_deployment: Deployment) -> Any:
    """A fresh ``openai.AsyncOpenAI`` client of the deployment, for one test's event loop."""
    glm_deployment.check_alive()
    return glm_deployment.endpoint.async_client()
