"""The one healthy reference server that the integration tests share.

Every test that puts a gateway in front of a correct deployment (a proxy that alters, drops or cuts what
the server sent) or soaks one needs the same thing: glm-tiny served as pytest-glm launches it. Starting it
once for the run instead of once per module saves a server start (about 25 s) for each of them; the
broken-deployment tests that change the server itself still start their own (tests/integration/servers.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import start_healthy


@pytest.fixture(scope="session")
def healthy_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of glm-tiny served correctly, MTP on, with ``--stream-interval 4`` (several tokens per stream
    chunk: the heavier chunking where GLM streaming parsers lost pieces of calls, docs/regressions.md)."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")
    server = start_healthy(tmp_path_factory.mktemp("healthy") / "server.log")
    try:
        yield server.base_url
    finally:
        server.stop()
