"""Where the nodes of a multi-node deployment run: one process per node, started by a runner.

A multi-node deployment is N ``vllm serve`` processes (vLLM's own multi-node runtime: ``--nnodes N
--node-rank K``; rank 0 serves HTTP, the others run ``--headless``). What differs between a simulation on
one box, a set of ssh hosts and a Ray cluster is only *how* node K's process is started and ended, so that
is all a :class:`NodeRunner` does. Watching the nodes and reading their logs is the caller's
(``serving/multinode.py``), the same for every runner.

The ``local`` runner is here; ``ssh`` is in ``serving/ssh_nodes.py``, ``ray`` in ``serving/ray_nodes.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from pytest_glm.exceptions import DeploymentError
from pytest_glm.serving.reaper import group_alive

logger = logging.getLogger("pytest_glm")

#: The host a local node binds and is reached on.
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class NodeLaunch:
    """What node ``rank`` runs, and where.

    :param rank: 0 is the head (serves HTTP); 1.. are followers (``--headless``).
    :param host: where it runs: ``127.0.0.1`` for local, the ssh host, or the Ray node's IP.
    :param argv: the full command (``vllm serve ... --nnodes N --node-rank K ...``).
    :param env: environment on top of the runner's own (``VLLM_CPU_OMP_THREADS_BIND`` per node, the API
        key...). Values may be secret: never print them.
    :param log_path: where this node's stdout and stderr land on *this* machine.
    """

    rank: int
    host: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: Path = Path("vllm-node.log")

    @property
    def role(self) -> str:
        return "head" if self.rank == 0 else "follower"

    @property
    def name(self) -> str:
        """How errors and the report name this node: ``node 1 (127.0.0.1)``."""
        return f"node {self.rank} ({self.host})"


class NodeProcess(Protocol):
    """One started node. Implementations must make :meth:`stop` end the node's whole process tree."""

    launch: NodeLaunch

    def running(self) -> bool:
        """Whether the node's process is still alive."""
        ...

    def exit_code(self) -> int | None:
        """The node's exit code once it has ended (None while it runs, or when the runner cannot tell)."""
        ...

    def stop(self, grace: float) -> None:
        """SIGTERM the node's tree, SIGKILL what is left after ``grace`` s. Idempotent; never raises."""
        ...


@runtime_checkable
class NodeRunner(Protocol):
    """Starts node processes somewhere. One runner per deployment; :meth:`close` at the end, always."""

    name: str  # 'local' | 'ssh' | 'ray'

    def hosts(self, nodes: int) -> list[str]:
        """Where each rank will run, head first. Checks reachability; raises DeploymentError (one line
        naming the host) before anything is launched."""
        ...

    def start(self, launch: NodeLaunch) -> NodeProcess:
        """Start ``launch`` and return at once (readiness is the caller's). Raises DeploymentError."""
        ...

    def close(self) -> None:
        """Release what the runner holds (ssh control masters, a placement group). Never raises."""
        ...


# -- local ---------------------------------------------------------------------------------------------
def end_group(pgid: int, grace: float, reap: Callable[[], object] = lambda: None) -> None:
    """SIGTERM a process group, wait up to ``grace`` s, then SIGKILL what is left. Never raises.

    :param reap: called while waiting: collects the leader when it is our child (a zombie leader keeps the
        group "alive" for ``killpg``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            reap()
        if not group_alive(pgid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalNode:
    """A node as a subprocess of this machine, in a process group of its own, logging to its file, with a
    reaper (``serving/reaper.py``) that ends the group if the owning pytest is killed outright."""

    def __init__(self, launch: NodeLaunch, owner_pid: int, *, reaper: bool = True) -> None:
        self.launch = launch
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[Any] | None = open(launch.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._log.write(f"# pytest-glm {launch.name}: {' '.join(launch.argv)}\n")
        self._log.flush()
        env = {**os.environ, **launch.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            # A process group, not a session: see VLLMExecutor._popen_kwargs (scheduler autogroups).
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                list(launch.argv), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                process_group=0)
        except OSError as exc:
            self._log.close()
            self._log = None
            raise DeploymentError(f"{launch.name} could not be started: {exc.strerror or exc}",
                                  f"command: {launch.argv[0]}") from exc
        self._reaper: subprocess.Popen[bytes] | None = None
        if reaper:
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "pytest_glm.serving.reaper", str(owner_pid), str(self.process.pid)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll()

    def stop(self, grace: float) -> None:
        with contextlib.suppress(Exception):
            end_group(self.process.pid, grace, self.process.poll)
            self.process.wait(timeout=5)
        if self._reaper is not None:
            with contextlib.suppress(Exception):
                self._reaper.terminate()
                self._reaper.wait(timeout=5)
            self._reaper = None
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.close()
            self._log = None


class LocalRunner:
    """Every node on this machine (``127.0.0.1``): the CPU simulation of several nodes, and CI."""

    name = "local"

    def __init__(self, owner_pid: int | None = None, *, reaper: bool = True) -> None:
        self.owner_pid = owner_pid or os.getpid()
        self.reaper = reaper

    def hosts(self, nodes: int) -> list[str]:
        return [LOCALHOST] * nodes

    def start(self, launch: NodeLaunch) -> LocalNode:
        return LocalNode(launch, self.owner_pid, reaper=self.reaper)

    def close(self) -> None:
        pass
