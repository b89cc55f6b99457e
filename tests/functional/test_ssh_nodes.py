"""The ssh node runner against a loopback sshd that the test starts on a private port (its own host key, an
authorized key made here): it launches and stops a follower (the fake `vllm`), leaves no process behind,
also when the follower is killed, and names an unreachable host in one line before anything launches.

Needs Debian's openssh-server (``/usr/sbin/sshd``) and the OpenSSH client; skipped, saying so, without them."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pytest_glm.exceptions import DeploymentError
from pytest_glm.serving.nodes import NodeLaunch
from pytest_glm.serving.ssh_nodes import SSHRunner
from tests.conftest import FAKE_VLLM

SSHD = Path("/usr/sbin/sshd")

pytestmark = pytest.mark.skipif(not SSHD.is_file() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                reason="needs Debian's openssh-server (/usr/sbin/sshd) and the OpenSSH client "
                                       "(apt-get install -y openssh-server openssh-client)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def ssh_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """An ssh client config with hosts glm-a and glm-b (both the loopback sshd) and glm-dead (a closed port)."""
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True, timeout=30)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    port = _free_port()
    (home / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home / 'host_key'}
AuthorizedKeysFile {home / 'authorized_keys'}
PidFile {home / 'sshd.pid'}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
""")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    sshd = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(home / "sshd.log", "w"))  # noqa: SIM115
    common = (f"  HostName 127.0.0.1\n  User {getpass.getuser()}\n  IdentityFile {home / 'client_key'}\n"
              "  IdentitiesOnly yes\n  UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no\n  LogLevel ERROR\n")
    config = home / "ssh_config"
    config.write_text(f"Host glm-a glm-b\n  Port {port}\n{common}Host glm-dead\n  Port {_free_port()}\n{common}"
                      # TEST-NET-1 (RFC 5737): never answers, so only the connect timeout ends the attempt
                      f"Host glm-silent\n  Port 22\n{common.replace('127.0.0.1', '192.0.2.1')}")
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "glm-a", "true"],
                             capture_output=True, timeout=20, check=False).returncode != 0:
            if sshd.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the loopback sshd did not accept a login: {(home / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.3)
        yield config
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)


def follower(tmp_path: Path, host: str = "glm-b") -> NodeLaunch:
    argv = (sys.executable, str(FAKE_VLLM), "serve", "m", "--nnodes", "2", "--node-rank", "1", "--headless")
    return NodeLaunch(rank=1, host=host, argv=argv, env={"VLLM_API_KEY": "sk-never-in-argv"},
                      log_path=tmp_path / "vllm-node1.log")


def started_pids(log: Path, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        found = re.findall(r"FAKE_(?:NODE rank=\d+|WORKER) pid=(\d+)", text)
        if len(found) == 2:
            return [int(p) for p in found]
        time.sleep(0.2)
    raise AssertionError(f"the follower did not start: {log.read_text() if log.exists() else '(no log)'}")


def gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_ssh_runner_launches_and_stops_a_follower(ssh_config: Path, tmp_path: Path) -> None:
    runner = SSHRunner(["glm-a", "glm-b"], ["-F", str(ssh_config)], connect_timeout=5, grace=5)
    try:
        assert runner.hosts(2) == ["glm-a", "glm-b"]
        assert runner.address("glm-b") == "127.0.0.1"
        node = runner.start(follower(tmp_path))
        pids = started_pids(node.launch.log_path)  # the follower and its worker, on the "remote" host
        text = node.launch.log_path.read_text()
        assert "FAKE_ENV_KEY_SET=True" in text and "sk-never-in-argv" not in text  # by stdin, not argv
        assert node.running() and node.remote_pgid() == pids[0]
        node.stop(5)
        node.stop(5)  # idempotent
        assert not node.running()
        assert gone(pids)
    finally:
        runner.close()
    assert not runner._control.exists()  # the control masters' sockets are gone with them


def test_a_killed_follower_is_seen_and_leaves_nothing(ssh_config: Path, tmp_path: Path) -> None:
    runner = SSHRunner(["glm-a", "glm-b"], ["-F", str(ssh_config)], connect_timeout=5, grace=5)
    try:
        node = runner.start(follower(tmp_path))
        pids = started_pids(node.launch.log_path)
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while node.running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not node.running() and node.exit_code() == 128 + signal.SIGKILL
        assert gone(pids)  # its worker too: the wrapper ends the node's whole group
        node.stop(5)
    finally:
        runner.close()


def test_the_ssh_connection_dropping_ends_the_remote_node(ssh_config: Path, tmp_path: Path) -> None:
    """pytest killed outright: its ssh client goes, the remote wrapper sees its stdin close and ends the node."""
    runner = SSHRunner(["glm-a", "glm-b"], ["-F", str(ssh_config)], connect_timeout=5, grace=5)
    try:
        node = runner.start(follower(tmp_path))
        pids = started_pids(node.launch.log_path)
        node.process.kill()
        node.process.wait(timeout=10)
        assert gone(pids)
    finally:
        runner.close()


@pytest.mark.parametrize("dead", ["glm-dead", "glm-silent"], ids=["refused", "silent"])
def test_an_unreachable_host_is_one_line_naming_it(ssh_config: Path, dead: str) -> None:
    runner = SSHRunner(["glm-a", dead], ["-F", str(ssh_config)], connect_timeout=3)
    began = time.monotonic()
    with pytest.raises(DeploymentError) as info:
        runner.hosts(2)
    assert time.monotonic() - began < 3 + 5
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"--glm-hosts: {dead} is unreachable over ssh: ")
    runner.close()


def test_the_gate_runs_on_two_ssh_nodes(ssh_config: Path, pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    logs = pytester.path / "logs"
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "--glm-profile=cpu-2node", "-p", "no:cacheprovider",
                                           "--glm-hosts=glm-a,glm-b", f"--glm-ssh-arg=-F {ssh_config}",
                                           f"--glm-server-log={logs / 'x.log'}", "-s", timeout=120)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "through the ssh runner" in out and "ready on 2 node(s) at http://127.0.0.1:" in out
    result.stdout.fnmatch_lines(["  node 1 (glm-b, follower): * --headless"])
    pids = [int(p) for log in logs.glob("vllm-node*.log")
            for p in re.findall(r"FAKE_(?:NODE rank=\d+|WORKER) pid=(\d+)", log.read_text())]
    assert len(pids) == 3 and gone(pids)


def test_an_unreachable_host_stops_the_gate_before_any_launch(ssh_config: Path, pytester: pytest.Pytester) -> None:
    pytester.copy_example("test_chat.py")
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "--glm-profile=cpu-2node", "-p", "no:cacheprovider",
                                           "--glm-hosts=glm-a,glm-dead", f"--glm-ssh-arg=-F {ssh_config}", timeout=120)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*pytest-glm: deployment failed*", "--glm-hosts: glm-dead is unreachable over ssh: *"])
    assert "node 0" not in result.stdout.str()
