"""Integration tests against the real vLLM CPU build serving the reference model (minutes each)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import vllm_processes, wait_no_vllm

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_server")]

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (pip install '.[cpu]')")


def test_launch_chat_xdist_and_cleanup(pytester: pytest.Pytester) -> None:
    """One real launch for two xdist workers: one server, both chat with it, the flags and the version it
    reports, and it is stopped at the end (the one-process path is what `pytest suites/` runs)."""
    out = pytester.path / "seen.jsonl"
    pytester._monkeypatch.setenv("GLM_EXAMPLE_OUT", str(out))
    pytester.copy_example("test_chat.py")
    result = pytester.runpytest_subprocess("-n", "2", "--dist=each", "-p", "no:cacheprovider", timeout=600)
    result.assert_outcomes(passed=4)
    text = result.stdout.str()
    assert text.count("[glm] starting vLLM") == 1
    assert "[glm] vLLM 0.32.0 ready at" in text and "[glm] vLLM stopped in" in text
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    assert {s["worker"] for s in seen} == {"gw0", "gw1"}
    assert len({s["url"] for s in seen}) == 1
    assert all(s["version"] == "0.32.0" for s in seen)
    assert all("--speculative-config.method" in s["flags"] and "glm45" in s["flags"] for s in seen)


def test_sigint_during_startup(pytester: pytest.Pytester) -> None:
    before = {p.pid for p in vllm_processes()}
    pytester.copy_example("test_chat.py")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider"], cwd=pytester.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line or "[glm] waiting for vLLM /health" in line:
            break
    assert [p for p in vllm_processes() if p.pid not in before], "vLLM should be loading"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert "KeyboardInterrupt" in out
    assert not wait_no_vllm(30, ignore=before)


@pytest.mark.broken_deployment
def test_vllm_rejects_a_flag(pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    result = pytester.runpytest_subprocess("--glm-serve-arg=--no-such-flag", "-p", "no:cacheprovider", timeout=300)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = result.stdout.str()
    assert text.count("pytest-glm: deployment failed") == 1
    assert "vLLM exited during start-up" in text
    assert "--no-such-flag" in text
    assert "hint: this vLLM version does not accept one of the flags" in text
