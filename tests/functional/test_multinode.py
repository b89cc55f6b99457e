"""Multi-node launch with the fake `vllm` as every node (fast: nothing is loaded): two local nodes serve the
tests, a node that dies fails the run naming it, and no node process outlives pytest on any path."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import FAKE_VLLM

pytestmark = pytest.mark.usefixtures("no_leftover_server")

TWO_NODES = (f"--glm-vllm={FAKE_VLLM}", "--glm-profile=cpu-2node", "-p", "no:cacheprovider", "-p", "no:randomly")


def node_pids(log_dir: Path) -> list[int]:
    """Every process the nodes said they started: each node's own pid and its stand-in worker's."""
    pids = []
    for log in sorted(log_dir.glob("vllm-node*.log")):
        pids += [int(p) for p in re.findall(r"FAKE_(?:NODE rank=\d+|WORKER) pid=(\d+)", log.read_text())]
    return pids


def survivors(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.3)


def test_two_local_nodes_serve_and_stop(pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    logs = pytester.path / "logs"
    result = pytester.runpytest_subprocess(*TWO_NODES, "-s", f"--glm-server-log={logs / 'x.log'}", timeout=120)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "through the local runner" in out and "ready on 2 node(s)" in out and "(one generation answered)" in out
    result.stdout.fnmatch_lines([
        "nodes: 2 (local runner), vLLM's multi-node runtime",
        "  node 0 (127.0.0.1, head): *VLLM_CPU_OMP_THREADS_BIND=* serve * --nnodes 2 --node-rank 0 *--port *",
        "  node 1 (127.0.0.1, follower): *VLLM_CPU_OMP_THREADS_BIND=* serve * --nnodes 2 --node-rank 1 * --headless",
    ])
    pids = node_pids(logs)
    assert len(pids) == 3  # head, follower, the follower's worker
    assert not survivors(pids)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_follower_dying_mid_run_fails_the_run_naming_it(pytester: pytest.Pytester, xdist: list[str]) -> None:
    pytester.makepyfile(test_mid='''
import time, pytest

def test_while_it_dies(glm_deployment):
    time.sleep(4)

@pytest.mark.parametrize("i", range(4))
def test_after(i, glm_client, glm_endpoint):
    glm_client.models.list()
''')
    pytester._monkeypatch.setenv("FAKE_VLLM_DIE_RANK", "1")
    pytester._monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "1.5")
    logs = pytester.path / "logs"
    began = time.monotonic()
    result = pytester.runpytest_subprocess(*TWO_NODES, *xdist, "--dist=loadfile" if xdist else "-q",
                                           f"--glm-server-log={logs / 'x.log'}", timeout=120)
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 4, out[-3000:]
    assert out.count("node 1 (127.0.0.1) died (exit code 1): Worker_TP1: RuntimeError: fake node 1 failure") >= 4
    assert "node 0 (127.0.0.1) died" not in out  # the head, ended because of it, is not blamed
    assert time.monotonic() - began < 60
    assert not survivors(node_pids(logs))


def test_a_node_dying_during_start_up_stops_the_run(pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    pytester._monkeypatch.setenv("FAKE_VLLM_MODE", "hang")  # the head never gets healthy
    pytester._monkeypatch.setenv("FAKE_VLLM_DIE_RANK", "1")
    pytester._monkeypatch.setenv("FAKE_VLLM_DIE_AFTER", "1")
    logs = pytester.path / "logs"
    result = pytester.runpytest_subprocess(*TWO_NODES, f"--glm-server-log={logs / 'x.log'}", timeout=120)
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert out.count("pytest-glm: deployment failed") == 1
    assert "node 1 (127.0.0.1) died during start-up (exit code 1): Worker_TP1: RuntimeError: fake node 1" in out
    assert "command of node 1 (127.0.0.1):" in out
    assert not survivors(node_pids(logs))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's Ctrl-C finds it (see test_launcher.py)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_no_node_outlives_pytest(pytester: pytest.Pytester, signum: int) -> None:
    pytester.copy_example("test_slow_chat.py")
    logs = pytester.path / "logs"
    env = {**os.environ, "FAKE_VLLM_MODE": "serve", "GLM_HOLD_SECONDS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *TWO_NODES, "-s", f"--glm-server-log={logs / 'x.log'}"],
                            cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("HOLDING" in line for line in seen):
        seen.append(proc.stdout.readline())
    assert any("HOLDING" in line for line in seen), "".join(seen)
    pids = node_pids(logs)
    started = [psutil.Process(p) for p in pids]
    started += [c for p in started for c in p.children(recursive=True)]
    assert len(pids) == 3
    proc.send_signal(signum)
    proc.communicate(timeout=60)
    assert not survivors([p.pid for p in started], timeout=40)  # SIGKILL: the reapers end them
