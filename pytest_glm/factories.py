"""Fixture factories: a second deployment for a test of one's own, in the style of pytest-postgresql's
``postgresql_proc`` factory.

In a ``conftest.py``::

    from pytest_glm import factories

    glm_variant = factories.glm_deployment(model="glm-tiny-variant")    # another model, same profile
    glm_no_mtp = factories.glm_deployment(mtp=False)                    # the run's model without MTP

Each is a session fixture: the deployment is launched the first time a test asks for it (with the run's
options, these overridden), and stopped when the session ends. Overrides are option names (``model``,
``mtp``, ``tp``, ``dp``, ``num_speculative_tokens``, ``max_model_len``, ``serve_arg``...), checked when the
fixture is set up. Under pytest-xdist every worker that uses the fixture launches its own server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm.config import OPTIONS, read_options, resolve
from pytest_glm.exceptions import ConfigError, DeploymentError
from pytest_glm.serving.deployment import Deployment, DeploymentManager

_NAMES = {opt.name for opt in OPTIONS}


def glm_deployment(**overrides: Any) -> Callable[..., Iterator[Deployment]]:
    """A session fixture launching a deployment with the run's options and ``overrides``."""
    unknown = sorted(set(overrides) - _NAMES)
    if unknown:
        raise TypeError(f"glm_deployment(): unknown option(s) {unknown}; known: {sorted(_NAMES)}")
    if "base_url" in overrides:
        raise TypeError("glm_deployment() launches a deployment; an endpoint that runs needs no factory")

    @pytest.fixture(scope="session")
    def fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
        values = {**read_options(request.config), **overrides, "base_url": None, "keep_server": False,
                  "server_log": None, "port": 0}
        try:
            config = resolve(values)
        except ConfigError as exc:
            pytest.fail(f"{request.fixturename}: {exc}", pytrace=False)
        log_dir = Path(tmp_path_factory.mktemp(f"glm-{request.fixturename}"))
        manager = DeploymentManager(config, log_dir)
        try:
            deployment = manager.start(lambda line: None)
        except (DeploymentError, ConfigError) as exc:
            manager.stop()
            pytest.fail(f"{request.fixturename}: the deployment did not start: {exc}", pytrace=False)
        try:
            yield deployment
        finally:
            manager.stop()

    return fixture
