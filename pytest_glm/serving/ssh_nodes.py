"""The ssh node runner: each node's ``vllm serve`` on a host named by ``--glm-hosts``, through the plain
OpenSSH client (``BatchMode``, a connect timeout, one control master per host).

On the remote host a small wrapper (bash) starts the node with ``setsid`` in a process group of its own,
says that group's id, and waits for either of two things: the node exits (the wrapper exits with its code,
so ssh does), or its standard input, held by this process, closes (a stop, or this pytest killed outright:
the connection drops and sshd closes the pipe). It then ends the whole group, SIGTERM, then SIGKILL after a
grace period. The node's output comes back through ssh into its log file here. The environment (the API key
among it) goes over stdin, never in an argv that ``ps`` shows on either side.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pytest_glm.exceptions import ConfigError, DeploymentError
from pytest_glm.serving.nodes import NodeLaunch

#: What the wrapper prints first: the remote process group of the node.
PGID_LINE = "pytest-glm-node-pgid"

#: The remote wrapper; ``$1``: the grace in tenths of a second, the rest: the node's argv. The environment
#: arrives on stdin as NAME=VALUE lines up to an empty line. The background reader gets stdin as fd 3, copied
#: before it starts (a background job of a non-interactive shell has its stdin replaced by /dev/null, before
#: its own redirections).
WRAPPER = r"""
grace=$1; shift
while IFS= read -r line && [ -n "$line" ]; do export "$line"; done
exec 3<&0
setsid "$@" </dev/null 3<&- 2>&1 &
pid=$!
echo "PGID_LINE $pid"
end() {
  kill -TERM -- -$pid 2>/dev/null
  i=0
  while kill -0 -- -$pid 2>/dev/null && [ $i -lt $grace ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL -- -$pid 2>/dev/null
}
{ cat >/dev/null <&3; kill -TERM $$ 2>/dev/null; } &
reader=$!
trap 'end; exit 143' TERM HUP INT
wait $pid
code=$?
kill $reader 2>/dev/null
end
exit $code
""".replace("PGID_LINE", PGID_LINE)


class SSHNode:
    """One node on a remote host: the local ssh client whose session runs the wrapper."""

    def __init__(self, launch: NodeLaunch, ssh: list[str], grace: float) -> None:
        self.launch = launch
        self._ssh = ssh
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[Any] | None = open(launch.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._log.write(f"# pytest-glm {launch.name}: {shlex.join(launch.argv)}\n")
        self._log.flush()
        remote = shlex.join(["bash", "-c", WRAPPER, "glm-node", str(int(grace * 10)), *launch.argv])
        try:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [*ssh, launch.host, remote], stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT,
                process_group=0)
        except OSError as exc:
            self._close_log()
            raise DeploymentError(f"{launch.name}: ssh could not be started: {exc.strerror or exc}") from exc
        assert self.process.stdin is not None
        env = "".join(f"{k}={v}\n" for k, v in launch.env.items() if "\n" not in f"{k}{v}")
        try:
            self.process.stdin.write((env + "\n").encode())
            self.process.stdin.flush()  # stdin stays open: closing it stops the node
        except OSError:
            pass  # ssh already gone: running() says so, with its message in the log
        self._stop_lock = threading.Lock()

    @property
    def pid(self) -> int:
        """The local ssh client's pid (its exit is the node's)."""
        return self.process.pid

    def remote_pgid(self) -> int | None:
        """The node's process group on its host, as the wrapper said it."""
        with contextlib.suppress(OSError), open(self.launch.log_path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(PGID_LINE):
                    return int(line.split()[1])
        return None

    def running(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, grace: float) -> None:
        with self._stop_lock:
            if self.process.stdin is not None:
                with contextlib.suppress(OSError):
                    self.process.stdin.close()  # the wrapper ends the node's group
            try:
                self.process.wait(timeout=grace + 10)
            except subprocess.TimeoutExpired:
                pgid = self.remote_pgid()
                if pgid is not None:  # the session hangs: end the group over a connection of our own
                    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                        subprocess.run([*self._ssh, self.launch.host, f"kill -KILL -- -{pgid}"],
                                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
                with contextlib.suppress(OSError):
                    self.process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=10)
            self._close_log()

    def _close_log(self) -> None:
        if getattr(self, "_log", None) is not None:
            with contextlib.suppress(OSError):
                self._log.close()  # type: ignore[union-attr]
            self._log = None


class SSHRunner:
    """Nodes on the hosts of ``--glm-hosts`` (head first), through ``ssh``.

    :param hosts: ssh destinations (``host``, ``user@host`` or a Host of the ssh config).
    :param ssh_args: extra arguments for every ssh call (``--glm-ssh-arg='-F cfg'``, ``-p 2222``...).
    :param connect_timeout: seconds ssh may take to connect (``ConnectTimeout``).
    """

    name = "ssh"

    def __init__(self, hosts: Sequence[str], ssh_args: Sequence[str] = (), *, connect_timeout: float = 10.0,
                 grace: float = 30.0, ssh: str = "ssh") -> None:
        self._hosts = list(hosts)
        self.connect_timeout = connect_timeout
        self.grace = grace
        self._control = Path(tempfile.mkdtemp(prefix="glm-ssh-"))
        self.base = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(int(connect_timeout), 1)}",
                     "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}/%C", "-o", "ControlPersist=60",
                     "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", *ssh_args]
        self._addresses: dict[str, str] = {}

    def hosts(self, nodes: int) -> list[str]:
        """The hosts, each checked with ``ssh host true`` (all at once, within the connect timeout)."""
        if len(self._hosts) != nodes:
            raise ConfigError("--glm-hosts", f"{len(self._hosts)} hosts for {nodes} nodes",
                              "name one host per node, the head first")
        checks = {h: subprocess.Popen([*self.base, h, "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for h in dict.fromkeys(self._hosts)}
        failed: list[tuple[str, str]] = []
        for host, proc in checks.items():
            try:
                _, err = proc.communicate(timeout=self.connect_timeout + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                failed.append((host, f"no answer within {self.connect_timeout:.0f} s"))
                continue
            if proc.returncode != 0:
                why = next((ln.strip() for ln in reversed(err.splitlines()) if ln.strip()), f"exit {proc.returncode}")
                failed.append((host, why))
        if failed:
            host, why = failed[0]
            raise DeploymentError(f"--glm-hosts: {host} is unreachable over ssh: {why}")
        return list(self._hosts)

    def address(self, host: str) -> str:
        """Where the other nodes reach ``host``: the HostName ssh resolves it to (``ssh -G``, local only)."""
        if host not in self._addresses:
            name = host.rsplit("@", 1)[-1]
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                out = subprocess.run([*self.base, "-G", host], capture_output=True, text=True, timeout=10,
                                     check=False).stdout
                name = next((ln.split(None, 1)[1] for ln in out.splitlines() if ln.startswith("hostname ")), name)
            self._addresses[host] = name
        return self._addresses[host]

    def start(self, launch: NodeLaunch) -> SSHNode:
        return SSHNode(launch, self.base, self.grace)

    def close(self) -> None:
        """End the control masters."""
        for host in dict.fromkeys(self._hosts):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run([*self.base, "-O", "exit", host], stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=10, check=False)
        with contextlib.suppress(OSError):
            for entry in self._control.iterdir():
                entry.unlink()
            self._control.rmdir()

