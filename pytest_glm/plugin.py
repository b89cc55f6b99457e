"""pytest-glm's pytest plugin: options, markers and fixtures. Thin on purpose: ``pytest_configure`` hands
the run to a :class:`~pytest_glm.session.GLMSession` (its phases and hooks), and the work is done in the
layers below (docs/architecture.md).

When the server starts: once per run, after collection and before the first test, and only if a collected
test uses a ``glm_*`` fixture, so a run that needs no server never pays for one. A server that fails to
start stops the run once, with its log tail, instead of erroring every test. Under pytest-xdist the
controller owns the one server and workers attach to it (see :class:`~pytest_glm.session.XdistCoordinator`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.config import GLMConfig, add_options, read_options, resolve
from pytest_glm.exceptions import ConfigError
from pytest_glm.judging.case_answers import AnswerCache
from pytest_glm.measuring.load import LoadRunner
from pytest_glm.reporting import baseline, compare
from pytest_glm.reporting.report import recorder
from pytest_glm.serving.capabilities import Capabilities
from pytest_glm.serving.deployment import Deployment
from pytest_glm.serving.endpoint import Endpoint
from pytest_glm.session import (
    EXCLUSIVE_MARKERS,
    SERVER_FIXTURE,
    SESSION_KEY,
    SHARE_TIMEOUT,
    GLMSession,
    XdistCoordinator,
    xdist_active,
)

MARKERS = (
    "preflight: the endpoint is the GLM deployment it claims to be (pytest-glm suite)",
    "tool_calling: correctness of parsed tool calls (pytest-glm suite)",
    "reasoning: reasoning/content separation (pytest-glm suite)",
    "mtp: MTP speculative-decoding acceptance (pytest-glm suite)",
    "slo: latency SLOs (pytest-glm suite); never shares the server with other load",
    "surfaces: tool calling and reasoning through /v1/responses and /v1/messages (pytest-glm suite)",
    "soak: sustained mixed load with exact checks on a sample, with --glm-soak (pytest-glm suite)",
)


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
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "glm_session")
    if config.pluginmanager.hasplugin("xdist") and (session.is_worker or xdist_active(config)):
        config.pluginmanager.register(XdistCoordinator(session), "glm_xdist")
    if config.pluginmanager.hasplugin("html"):  # pytest-html: its report gains the gate's summary and exchanges
        from pytest_glm.reporting.pytest_html_hooks import PytestHtmlHooks

        config.pluginmanager.register(PytestHtmlHooks(session), "glm_pytest_html")


# -- fixtures ---------------------------------------------------------------------------------------
def _session(config: pytest.Config) -> GLMSession:
    return config.stash[SESSION_KEY]


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
def glm_capabilities(glm_deployment: Deployment) -> Capabilities:
    """What the deployment can do that the suites need (context, tool and reasoning parsers, MTP), learnt
    once; a gap fails its first test, preflight's, and skips the rest with the reason."""
    return Capabilities(glm_deployment)


@pytest.fixture(scope="session")
def glm_answers(glm_endpoint: Endpoint, glm_deployment: Deployment, glm_config: GLMConfig,
                glm_capabilities: Capabilities) -> Iterator[AnswerCache]:
    """The answers of the correctness cases, each (case, streamed) asked once per run, with their
    faithfulness and behaviour verdicts (pytest_glm.judging.case_answers): the per-case tests, the aggregate
    gates and the load comparison judge the same responses."""
    cache = AnswerCache(glm_endpoint, glm_deployment, known_defects_fail=glm_config.known_defects_fail,
                        capabilities=glm_capabilities)
    yield cache
    cache.close()


@pytest.fixture
def glm_record(request: pytest.FixtureRequest) -> Any:
    """``glm_record(suite, check, figure, value, limit=None, op='', unit='', source='')``: a figure for the terminal
    tables, the JSON report and JUnit XML (as a ``glm`` property holding one JSON object). Appended to the
    test's user properties directly: pytest's ``record_property`` warns under the default junit family."""
    return recorder(lambda name, value: request.node.user_properties.append((name, value)))


@pytest.fixture(scope="session")
def glm_plots_dir(pytestconfig: pytest.Config) -> Path | None:
    """Where plots and their samples go (--glm-plots; with --glm-html alone, a temporary folder the page's
    plots are drawn from), or None."""
    return _session(pytestconfig).plots_dir


@pytest.fixture(scope="session")
def glm_say(pytestconfig: pytest.Config) -> Any:
    """``glm_say(line)``: print ``[glm] line`` on the terminal now, whatever the capture mode (the progress
    lines of a long test: the soak's)."""
    return _session(pytestconfig).say


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
