"""The launcher's failure paths and lifecycle, with a fake `vllm` (fast: no model is loaded)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import FAKE_VLLM, vllm_processes, wait_no_vllm

pytestmark = pytest.mark.usefixtures("no_leftover_server")


def run_chat(pytester: pytest.Pytester, *args: str, mode: str = "serve") -> pytest.RunResult:
    pytester.copy_example("test_chat.py")
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", mode)
    return pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "-p", "no:cacheprovider", *args, timeout=120)


def test_launch_serve_and_stop(pytester: pytest.Pytester) -> None:
    result = run_chat(pytester, "-s")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert out.count("[glm] starting vLLM") == 1
    assert "[glm] vLLM 0.0.0-fake ready at http://127.0.0.1:" in out
    assert "[glm] vLLM stopped in" in out


def test_exit_during_startup_fails_the_run_once(pytester: pytest.Pytester) -> None:
    result = run_chat(pytester, mode="exit")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert out.count("pytest-glm: deployment failed") == 1
    assert "vLLM exited during start-up (exit code 1)" in out
    assert "ValueError: fake start-up failure for the test" in out  # the log tail
    assert "full log:" in out
    assert "passed" not in out.splitlines()[-1] and " error" not in out.splitlines()[-1]


def test_clean_exit_during_startup_is_a_failure_too(pytester: pytest.Pytester) -> None:
    result = run_chat(pytester, mode="exit0")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert "vLLM exited during start-up (exit code 0)" in result.stdout.str()


def test_startup_timeout(pytester: pytest.Pytester) -> None:
    began = time.monotonic()
    result = run_chat(pytester, "--glm-startup-timeout=3", mode="hang")
    assert time.monotonic() - began < 60
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    assert "vLLM did not become healthy within 3 s" in out
    assert "raise --glm-startup-timeout" in out
    assert "INFO still loading..." in out


def test_port_taken(pytester: pytest.Pytester) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = run_chat(pytester, f"--glm-port={port}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert f"port {port} on 127.0.0.1 is already taken" in result.stdout.str()


def test_vllm_missing(pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    result = pytester.runpytest_subprocess("--glm-vllm=/nonexistent/vllm")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--glm-vllm: '/nonexistent/vllm' is not an executable file" in result.stdout.str()
    assert "pip install 'pytest-glm[cpu]'" in result.stdout.str()


def test_api_key_goes_by_environment_not_argv(pytester: pytest.Pytester) -> None:
    log = pytester.path / "server.log"
    result = run_chat(pytester, "--glm-api-key=sk-topsecret", f"--glm-server-log={log}")
    result.assert_outcomes(passed=2)
    text = log.read_text()
    assert "FAKE_ENV_KEY_SET=True" in text
    assert "sk-topsecret" not in text
    assert "sk-topsecret" not in result.stdout.str() + result.stderr.str()


def test_xdist_one_server(pytester: pytest.Pytester) -> None:
    out = pytester.path / "seen.jsonl"
    pytester._monkeypatch.setenv("GLM_EXAMPLE_OUT", str(out))
    pytester.copy_example("test_chat.py")
    pytester.makepyfile(test_more="from test_chat import test_chat as test_chat_again\n")
    result = run_chat(pytester, "-n", "2", "--dist=each")
    result.assert_outcomes(passed=6)
    assert result.stdout.str().count("[glm] starting vLLM") == 1
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    assert len({s["url"] for s in seen}) == 1


def test_xdist_startup_failure_stops_the_run(pytester: pytest.Pytester) -> None:
    result = run_chat(pytester, "-n", "2", mode="exit")
    assert result.ret != pytest.ExitCode.OK
    out = result.stdout.str()
    assert out.count("pytest-glm: deployment failed") == 1
    assert "ValueError: fake start-up failure for the test" in out


def _spawn(pytester: pytest.Pytester, example: str, *args: str, mode: str) -> subprocess.Popen[str]:
    pytester.copy_example(example)
    env = {**os.environ, "FAKE_VLLM_MODE": mode, "GLM_HOLD_SECONDS": "120"}
    return subprocess.Popen([sys.executable, "-m", "pytest", f"--glm-vllm={FAKE_VLLM}", "-s", "-p", "no:cacheprovider",
                             *args], cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps it ignored;
    # give the child the default disposition, as a terminal's Ctrl-C would find it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    raise AssertionError(f"{needle!r} not seen; output:\n{''.join(seen)}")


def test_sigint_during_startup_leaves_nothing(pytester: pytest.Pytester) -> None:
    before = {p.pid for p in vllm_processes()}
    proc = _spawn(pytester, "test_chat.py", mode="hang")
    _wait_for_line(proc, "[glm] server log:")
    time.sleep(2)
    assert [p for p in vllm_processes() if p.pid not in before], "the fake server should be starting"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in out
    assert not wait_no_vllm(20, ignore=before)


def test_sigterm_while_serving_leaves_nothing(pytester: pytest.Pytester) -> None:
    before = {p.pid for p in vllm_processes()}
    proc = _spawn(pytester, "test_slow_chat.py", mode="serve")
    _wait_for_line(proc, "HOLDING")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert not wait_no_vllm(20, ignore=before)


def test_killed_pytest_is_reaped(pytester: pytest.Pytester) -> None:
    before = {p.pid for p in vllm_processes()}
    proc = _spawn(pytester, "test_slow_chat.py", mode="serve")
    _wait_for_line(proc, "HOLDING")
    assert [p for p in vllm_processes() if p.pid not in before]
    proc.kill()  # SIGKILL: no teardown runs; the reaper must end the server
    proc.communicate(timeout=30)
    assert not wait_no_vllm(30, ignore=before)


def test_keep_server_is_reused(pytester: pytest.Pytester) -> None:
    cache = pytester.path / "cache"
    first = run_chat(pytester, "-s", "--glm-keep-server", f"--glm-cache-dir={cache}")
    first.assert_outcomes(passed=2)
    assert "leaving vLLM running at" in first.stdout.str()
    try:
        second = run_chat(pytester, "-s", "--glm-keep-server", f"--glm-cache-dir={cache}")
        second.assert_outcomes(passed=2)
        assert "reusing the server kept by an earlier run" in second.stdout.str()
        assert "[glm] starting vLLM" not in second.stdout.str()
    finally:
        record = next((cache / "servers").glob("*.json"))
        os.killpg(json.loads(record.read_text())["pid"], signal.SIGTERM)


def test_xdist_measuring_tests_hold_the_server_alone(pytester: pytest.Pytester) -> None:
    """Under xdist, slo/mtp tests never overlap any other test that uses the server; the others overlap freely."""
    log = pytester.path / "spans.jsonl"
    pytester._monkeypatch.setenv("SPANS", str(log))
    pytester.makepyfile(test_spans='''
import json, os, time, pytest

def span(name, glm_deployment, seconds):
    began = time.monotonic()
    time.sleep(seconds)
    with open(os.environ["SPANS"], "a") as fh:
        fh.write(json.dumps({"name": name, "begin": began, "end": time.monotonic()}) + "\\n")

@pytest.mark.slo
def test_latency(glm_deployment):
    span("slo", glm_deployment, 1.0)

@pytest.mark.mtp
def test_acceptance(glm_deployment):
    span("mtp", glm_deployment, 1.0)

@pytest.mark.parametrize("i", range(6))
def test_shared(i, glm_deployment):
    span(f"shared{i}", glm_deployment, 0.4)
''')
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "-p", "no:cacheprovider", "-n", "2", timeout=120)
    result.assert_outcomes(passed=8)
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    alone = [s for s in spans if s["name"] in ("slo", "mtp")]
    assert len(alone) == 2
    for a in alone:
        overlapping = [s["name"] for s in spans if s is not a and s["begin"] < a["end"] and a["begin"] < s["end"]]
        assert not overlapping, f"{a['name']} overlapped {overlapping}"
    shared = [s for s in spans if s["name"].startswith("shared")]
    assert any(s is not t and s["begin"] < t["end"] and t["begin"] < s["end"] for s in shared for t in shared)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_server_death_fails_the_remaining_tests_fast(pytester: pytest.Pytester, xdist: list[str]) -> None:
    """The server is killed by the first test; every later test fails at once, saying so, with the log tail."""
    pytester.makepyfile(test_die='''
import os, signal, time, psutil, pytest

def test_kill_the_server(glm_deployment, glm_endpoint):
    for port_user in psutil.net_connections("tcp"):
        if port_user.laddr and port_user.laddr.port == int(glm_endpoint.base_url.rsplit(":", 1)[1]) and port_user.pid:
            os.kill(port_user.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while glm_endpoint.health() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not glm_endpoint.health()

@pytest.mark.parametrize("i", range(6))
def test_after_death(i, glm_client, glm_endpoint):
    glm_client.models.list()
''')
    began = time.monotonic()
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "-p", "no:cacheprovider", "-p", "no:randomly",
                                           *xdist, "--dist=loadfile" if xdist else "-q", timeout=120)
    elapsed = time.monotonic() - began
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed") == 1 and outcomes.get("errors", 0) + outcomes.get("failed", 0) == 6, out[-3000:]
    assert out.count("vLLM server died") >= 6
    assert "--- last lines of the vLLM log ---" in out and "fake-vllm serve" in out
    assert elapsed < 60, f"the run took {elapsed:.0f} s"


def test_server_has_its_own_process_group_in_our_session(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its own group so that killpg ends all of it; our session, because a new session is a new scheduler
    autogroup on Linux, and the client's group then starved behind the server's busy threads (launch.py)."""
    from pytest_glm.serving.launch import VLLMExecutor

    monkeypatch.setenv("FAKE_VLLM_MODE", "serve")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(tmp_path / "log", "w") as log:
        executor = VLLMExecutor([sys.executable, str(FAKE_VLLM), "serve", "m", "--port", str(port)],
                                url=f"http://127.0.0.1:{port}/health", log=log, env=dict(os.environ), timeout=30)
        executor.start()
        try:
            pid = executor.process.pid
            assert os.getpgid(pid) == pid
            assert os.getsid(pid) == os.getsid(0)
        finally:
            executor.stop()
    assert executor.process is None
