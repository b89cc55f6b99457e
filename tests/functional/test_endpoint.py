"""Testing an endpoint that already runs (--glm-base-url): reachability, API key, model recognition."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from pytest_glm.serving.launch import free_port, port_is_taken
from tests.conftest import FAKE_VLLM

SECRET = "sk-live-abcdef123456"


@pytest.fixture
def running_endpoint() -> Iterator[str]:
    """The fake vLLM serving 'glm-4.7-fp8' behind an API key, as a remote deployment would."""
    port = free_port()
    env = {**os.environ, "FAKE_VLLM_MODE": "serve", "VLLM_API_KEY": SECRET}
    proc = subprocess.Popen([str(FAKE_VLLM), "serve", "x", "--port", str(port), "--served-model-name", "glm-4.7-fp8"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    # A plain socket poll: pytester's sys.modules snapshots make httpx's lazily built httpcore error map
    # stale between tests, so an httpx poll here would see unmapped httpcore errors.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not port_is_taken("127.0.0.1", port):
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.copy_example("test_chat.py")
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v", *args, timeout=60)


def test_right_key_passes_and_is_never_printed(pytester: pytest.Pytester, running_endpoint: str) -> None:
    result = run(pytester, f"--glm-base-url={running_endpoint}", f"--glm-api-key={SECRET}")
    result.assert_outcomes(passed=2)
    assert SECRET not in result.stdout.str() + result.stderr.str()


def test_key_from_environment(pytester: pytest.Pytester, running_endpoint: str) -> None:
    pytester._monkeypatch.setenv("GLM_API_KEY", SECRET)
    run(pytester, f"--glm-base-url={running_endpoint}").assert_outcomes(passed=2)


def test_model_is_recognised_from_the_served_name(pytester: pytest.Pytester, running_endpoint: str) -> None:
    pytester.makepyfile(test_family="def test_family(glm_deployment):\n"
                                    "    assert glm_deployment.model.model_id == 'zai-org/GLM-4.7-FP8'\n"
                                    "    assert glm_deployment.launched is False and glm_deployment.command is None\n")
    result = pytester.runpytest_subprocess(f"--glm-base-url={running_endpoint}", f"--glm-api-key={SECRET}",
                                           "-p", "no:cacheprovider", "test_family.py")
    result.assert_outcomes(passed=1)


def test_wrong_key(pytester: pytest.Pytester, running_endpoint: str) -> None:
    result = run(pytester, f"--glm-base-url={running_endpoint}", "--glm-api-key=sk-wrong-999")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert out.count("pytest-glm: deployment failed") == 1
    assert "rejected the API key (HTTP 401)" in out and "--glm-api-key" in out
    assert "sk-wrong-999" not in out + result.stderr.str()


def test_nothing_listening_is_waited_for_then_named(pytester: pytest.Pytester) -> None:
    """A refused connection is a server not up yet: wait up to --glm-startup-timeout, saying so, then fail
    saying nothing answered there (not "unreachable" for an endpoint that answers)."""
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    result = run(pytester, f"--glm-base-url={url}", "--glm-startup-timeout=4")
    assert 4 <= time.monotonic() - began < 30
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert f"waiting for {url}: no answer (ConnectError)" in out
    assert f"{url} is not ready within 4 s: no answer (ConnectError); nothing answers there" in out


def test_a_starting_endpoint_is_waited_for(pytester: pytest.Pytester) -> None:
    """The server comes up a few seconds after the run starts (a pod still loading its model): the run
    waits and then passes."""
    port = free_port()
    env = {**os.environ, "FAKE_VLLM_MODE": "serve"}
    later = subprocess.Popen(["bash", "-c", f"sleep 3; exec {FAKE_VLLM} serve x --port {port} --served-model-name "
                                            f"glm-4.7-fp8"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        result = run(pytester, f"--glm-base-url=http://127.0.0.1:{port}", "--glm-startup-timeout=60")
    finally:
        later.terminate()
        later.wait(timeout=10)
    result.assert_outcomes(passed=2)
    assert f"waiting for http://127.0.0.1:{port}: no answer" in result.stdout.str()


@pytest.fixture
def answering_503() -> Iterator[str]:
    """An endpoint that answers 503 Service Unavailable on every route (a gateway before a loading pod)."""
    import http.server
    import threading

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"no healthy upstream")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_endpoint_answering_503_is_named_as_answering(pytester: pytest.Pytester, answering_503: str) -> None:
    result = run(pytester, f"--glm-base-url={answering_503}", "--glm-startup-timeout=3")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    first = next(line for line in out.splitlines() if "is not ready within" in line)
    assert f"{answering_503} is not ready within 3 s: HTTP 503 on /health; the endpoint answered but is not ready: " \
           "usually the model is still loading" in first
    assert "unreachable" not in out


def test_unknown_served_model_name(pytester: pytest.Pytester, running_endpoint: str) -> None:
    result = run(pytester, f"--glm-base-url={running_endpoint}", f"--glm-api-key={SECRET}",
                 "--glm-served-model-name=glm-4.6")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "does not serve 'glm-4.6'" in result.stdout.str() and "it serves: glm-4.7-fp8" in result.stdout.str()
