"""A deployment over several nodes on vLLM's own multi-node runtime: plan each node's command, start them
through a :class:`~pytest_glm.serving.nodes.NodeRunner`, wait for one real generation, watch every node, and
stop them all.

Same surface as :class:`~pytest_glm.serving.launch.ServerProcess` (``start``, ``running``, ``died``,
``stop``, ``base_url``...), so :class:`~pytest_glm.serving.deployment.DeploymentManager` and the suites do
not care how many nodes serve. What a single server does not need:

- followers are started first and stopped explicitly (a follower keeps running after its head is gone);
- ``/health`` answers once the head's API server is up, which proves nothing about the collectives between
  the nodes, so readiness is a 1-token completion;
- a watcher thread notices the *first* node to die, records its root cause (its own log, read by
  serving/log_cause.py) and ends the others, so the run fails at once naming that node rather than with a
  head that hangs on a dead peer, or with the head's secondary error.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm.config import RUNNERS
from pytest_glm.exceptions import ConfigError, DeploymentError, ServerDied
from pytest_glm.serving.command import ServeCommand, VLLMEntry, node_args
from pytest_glm.serving.launch import free_port, last_log_line, port_is_taken, tail
from pytest_glm.serving.log_cause import describe, read_log, root_cause
from pytest_glm.serving.nodes import LOCALHOST, NodeLaunch, NodeProcess, NodeRunner

#: Seconds between SIGTERM and SIGKILL of a node.
STOP_GRACE = 30.0
#: Seconds between two looks at the nodes while tests run.
WATCH_EVERY = 0.5
#: Seconds between two progress lines while the nodes start.
PROGRESS_EVERY = 10.0
#: Lines of a node's log under its failure.
SHORT_TAIL = 12


def make_runner(name: str, hosts: Sequence[str] = (), ssh_args: Sequence[str] = (), *,
                connect_timeout: float = 10.0, owner_pid: int | None = None, gpus_per_node: int = 0) -> NodeRunner:
    """The runner ``--glm-node-runner`` names (the ssh and Ray ones imported only when asked for).

    :param gpus_per_node: what a Ray bundle reserves on each node (0: the Ray runner's default, one CPU)."""
    if name == "local":
        from pytest_glm.serving.nodes import LocalRunner

        return LocalRunner(owner_pid)
    if name == "ssh":
        from pytest_glm.serving.ssh_nodes import SSHRunner

        return SSHRunner(hosts, ssh_args, connect_timeout=connect_timeout)
    if name == "ray":
        try:
            from pytest_glm.serving.ray_nodes import RayRunner
        except ImportError as exc:
            raise ConfigError("--glm-node-runner", f"the ray runner needs Ray: {exc}",
                              "pip install 'ray[default]', and point RAY_ADDRESS at the cluster") from exc
        return RayRunner(bundle={"GPU": gpus_per_node} if gpus_per_node else None)
    raise ConfigError("--glm-node-runner", f"expected one of {', '.join(RUNNERS)}, got {name!r}")


def cpu_binds(nodes: int, ranks_per_node: int, cpus: Sequence[int] | None = None) -> list[str]:
    """``VLLM_CPU_OMP_THREADS_BIND`` of each node simulated on this machine: the cores split evenly over every
    rank of every node (ranks of one node separated by ``|``), so that no two nodes' OpenMP threads fight over
    a core. More ranks than cores: cores are shared, round robin. On this 2-core box, 2 nodes: "0" and "1"."""
    cores = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    total = nodes * ranks_per_node
    if len(cores) >= total:
        each = len(cores) // total
        slices = [cores[i * each:(i + 1) * each] for i in range(total)]
    else:
        slices = [[cores[i % len(cores)]] for i in range(total)]
    ranks = [_id_list(s) for s in slices]
    return ["|".join(ranks[n * ranks_per_node:(n + 1) * ranks_per_node]) for n in range(nodes)]


def _id_list(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (vLLM's CPU id list form)."""
    parts: list[str] = []
    start = prev = ids[0]
    for i in [*ids[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


@dataclass(frozen=True)
class NodeFailure:
    """What a dead node's log says: the error's parts, as DeploymentError takes them."""

    summary: str
    detail: str
    log_tail: str
    log_path: str

    def error(self, kind: type[DeploymentError] = ServerDied) -> DeploymentError:
        return kind(self.summary, self.detail, self.log_tail, self.log_path)


def node_failure(launch: NodeLaunch, what: str, exit_code: int | None, command: str = "") -> NodeFailure:
    """'node 1 (127.0.0.1) died (exit code -9): Worker_TP1: RuntimeError: ...': the node named first, its own
    root cause (serving/log_cause.py on its log) after."""
    code = f" (exit code {exit_code})" if exit_code is not None else ""
    lead = f"{launch.name} {what}{code}"
    cause = root_cause(read_log(launch.log_path), latest=True)
    lines = describe(cause) if cause is not None else []
    if command:
        lines.append(f"command of {launch.name}: {command}")
    summary = f"{lead}: {cause.headline}" if cause is not None else lead
    log_tail = tail(launch.log_path, SHORT_TAIL if cause is not None else 40)
    return NodeFailure(summary, "\n".join(lines), log_tail, str(launch.log_path))


class MultiNodeServer:
    """The nodes of one deployment, started through ``runner``.

    :param command: the one serving command (its parallel sizes span all the nodes).
    :param entry: how vLLM is invoked on the nodes (the same path on every node).
    :param runner: where the nodes' processes run.
    :param nodes: how many nodes.
    :param log_dir: where each node's log lands here (``vllm-node0.log``...).
    :param host: the address the head binds when it is this machine (a remote head binds 0.0.0.0).
    :param port: the head's HTTP port (0: a free one).
    :param cpu_bind: give each node its own cores (``VLLM_CPU_OMP_THREADS_BIND``): vLLM's CPU build with
        every node on this machine.
    :param death_file: where the first death is recorded for xdist workers (they cannot see the nodes).
    """

    def __init__(self, command: ServeCommand, entry: VLLMEntry, runner: NodeRunner, *, nodes: int, log_dir: Path,
                 host: str, port: int, startup_timeout: float, request_timeout: float = 120.0,
                 extra_env: dict[str, str] | None = None, cpu_bind: bool = False,
                 death_file: Path | None = None) -> None:
        self.command = command
        self.entry = entry
        self.runner = runner
        self.nodes = nodes
        self.log_dir = log_dir
        self.bind_host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.request_timeout = request_timeout
        self.extra_env = extra_env or {}
        self.cpu_bind = cpu_bind
        self.death_file = death_file
        self.launches: list[NodeLaunch] = []
        self.processes: list[NodeProcess] = []
        self.host = host  # where the head is reached from here
        self.started_in: float | None = None
        self.first_death: NodeFailure | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._stopped = False

    # -- plan ----------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def plan(self) -> list[NodeLaunch]:
        """Each node's launch: where (the runner says, head first), its argv and environment. Asks the runner
        for its hosts, so an unreachable host is refused here, before anything starts."""
        hosts = self.runner.hosts(self.nodes)
        local = self.runner.name == "local"
        address: Callable[[str], str] = getattr(self.runner, "address", _address)
        self.host = self.bind_host if local else address(hosts[0])
        bind = self.bind_host if local else "0.0.0.0"  # a remote head must be reachable from here
        if not self.port:
            self.port = free_port(self.bind_host) if local else free_port()
        master_addr = LOCALHOST if local else address(hosts[0])
        master_port = free_port()  # free here; on a remote head a guess (vLLM says if it is taken)
        defaults = {**self.command.env, **self.entry.env}
        # A variable the user exported wins, as on one node: here it is inherited; a remote node is sent it.
        env = ({k: v for k, v in defaults.items() if k not in os.environ} if local
               else {k: os.environ.get(k, v) for k, v in defaults.items()})
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        binds = self._binds()
        self.launches = []
        for rank, where in enumerate(hosts):
            args = node_args(self.command, nodes=self.nodes, rank=rank, master_addr=master_addr,
                             master_port=master_port, host=bind, port=self.port)
            node_env = dict(env)
            if binds:
                node_env["VLLM_CPU_OMP_THREADS_BIND"] = binds[rank]
            self.launches.append(NodeLaunch(rank=rank, host=where, argv=tuple(self.entry.cli_argv(self.command.model, args)),
                                            env=node_env, log_path=self.log_dir / f"vllm-node{rank}.log"))
        return self.launches

    def _binds(self) -> list[str]:
        if not self.cpu_bind or "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
            return []
        from pytest_glm.serving.command import world_size

        return cpu_binds(self.nodes, max(world_size(self.command) // self.nodes, 1))

    def display(self, launch: NodeLaunch) -> str:
        """Node ``launch``'s command as a user would type it there (no secret: the API key goes by
        environment, and only the non-secret variables are shown)."""
        shown = {k: v for k, v in launch.env.items() if k in self.command.env or k == "VLLM_CPU_OMP_THREADS_BIND"}
        args = launch.argv[launch.argv.index("serve") + 2:] if "serve" in launch.argv else launch.argv
        return ServeCommand(self.command.model, tuple(args), env=shown).display()

    def describe_nodes(self) -> list[dict[str, Any]]:
        """Each node for the report: rank, role, host, command and log."""
        pids = [getattr(p, "pid", None) for p in self.processes]
        return [{"rank": n.rank, "role": n.role, "host": n.host, "command": self.display(n),
                 "log_path": str(n.log_path), "pid": pids[i] if i < len(pids) else None}
                for i, n in enumerate(self.launches)]

    # -- start -----------------------------------------------------------------------------------------
    def start(self, progress: Callable[[float, str], None] | None = None) -> None:
        """Start the followers, then the head; return once the head answered one generation. Whatever goes
        wrong (a node dying, the timeout, Ctrl-C), every node started is stopped before this raises."""
        began = time.monotonic()
        try:
            if not self.launches:
                self.plan()
            if self.runner.name == "local" and port_is_taken(self.bind_host, self.port):
                raise DeploymentError(f"port {self.port} on {self.bind_host} is already taken",
                                      "choose another --glm-port, or leave it at 0 to pick a free one")
            for launch in [*self.launches[1:], self.launches[0]]:
                self.processes.append(self.runner.start(launch))
            self.processes.sort(key=lambda p: p.launch.rank)
            self._wait_ready(began, progress)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        self._watcher = threading.Thread(target=self._watch, name="glm-node-watcher", daemon=True)
        self._watcher.start()

    def _wait_ready(self, began: float, progress: Callable[[float, str], None] | None) -> None:
        deadline = began + self.startup_timeout
        last_progress = began
        healthy = False
        while True:
            for proc in self.processes:
                if not proc.running():
                    time.sleep(0.5)  # the last lines of its log (streamed from a remote node) land
                    raise node_failure(proc.launch, "died during start-up", proc.exit_code(),
                                       self.display(proc.launch)).error(DeploymentError)
            if not healthy:
                healthy = self._get("/health") == 200
            if healthy:
                answered = self._generate()
                if answered is None:
                    return
                if answered:
                    raise DeploymentError(f"{self.launches[0].name} answered /health but its first generation "
                                          f"failed: {answered}", "readiness is one real completion: the nodes "
                                          "are up but do not serve together", tail(self.launches[0].log_path, 20),
                                          str(self.launches[0].log_path))
            now = time.monotonic()
            if now >= deadline:
                waiting = "the first generation" if healthy else "/health"
                raise DeploymentError(f"the {self.nodes} nodes were not ready within {self.startup_timeout:.0f} s "
                                      f"(waiting for {waiting})", "raise --glm-startup-timeout if the model is "
                                      "still loading", tail(self.launches[0].log_path, 20), str(self.launches[0].log_path))
            if progress is not None and now - last_progress >= PROGRESS_EVERY:
                last_progress = now
                progress(now - began, " | ".join(f"node {n.rank}: {last_log_line(n.log_path)[:70]}"
                                                 for n in self.launches))
            time.sleep(0.5)

    def _headers(self) -> dict[str, str]:
        key = self.extra_env.get("VLLM_API_KEY")
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.base_url + path, headers=self._headers()),
                                        timeout=5.0) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except (OSError, ValueError):
            return None

    def _generate(self) -> str | None:
        """One 1-token completion: None when it came back, '' when the server is not taking requests yet, or
        why it failed."""
        body = json.dumps({"model": self.command.served_model_name or self.command.model, "prompt": "Hello",
                           "max_tokens": 1, "temperature": 0}).encode()
        req = urllib.request.Request(self.base_url + "/v1/completions", data=body, headers=self._headers(),
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as resp:
                json.loads(resp.read() or b"{}")
                return None
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")[:200]
            return "" if exc.code == 503 else f"HTTP {exc.code} {text}".strip()
        except (OSError, ValueError):
            return ""

    # -- watch ---------------------------------------------------------------------------------------
    def _watch(self) -> None:
        """Until the run stops them: the first node found dead is recorded, and the others are ended so that
        no request waits on a dead peer."""
        while not self._stopping.wait(WATCH_EVERY):
            dead = next((p for p in self.processes if not p.running()), None)
            if dead is None:
                continue
            time.sleep(0.5)  # its last lines
            failure = node_failure(dead.launch, "died", dead.exit_code())
            with self._lock:
                if self.first_death is None and not self._stopping.is_set():
                    self.first_death = failure
                    if self.death_file is not None:
                        with contextlib.suppress(OSError):
                            self.death_file.write_text(json.dumps(failure.__dict__))
            self._stop_nodes(STOP_GRACE)
            return

    def running(self) -> bool:
        return bool(self.processes) and self.first_death is None and all(p.running() for p in self.processes)

    def exit_code(self) -> int | None:
        return self.processes[0].exit_code() if self.processes else None

    def died(self) -> DeploymentError:
        """The error of the first node that died (found by the watcher, or now)."""
        if self.first_death is not None:
            return self.first_death.error()
        dead = next((p for p in self.processes if not p.running()), None)
        if dead is None:
            return ServerDied("a node of the deployment stopped serving")
        return node_failure(dead.launch, "died", dead.exit_code()).error()

    @property
    def head_pid(self) -> int | None:
        return getattr(self.processes[0], "pid", None) if self.processes else None

    def memory_gib(self) -> float | None:
        """Resident memory of the nodes on this machine (None when none is local)."""
        import psutil

        total, seen = 0, False
        for proc in self.processes:
            pid = getattr(proc, "pid", None)
            if self.runner.name != "local" or pid is None:
                continue
            try:
                root = psutil.Process(pid)
                for p in [root, *root.children(recursive=True)]:
                    total += p.memory_info().rss
                seen = True
            except psutil.Error:
                continue
        return total / 1024**3 if seen else None

    # -- stop ------------------------------------------------------------------------------------------
    def _stop_nodes(self, grace: float) -> None:
        """Stop every node, head first (no new requests), then each follower explicitly; never raises."""
        for proc in self.processes:
            with contextlib.suppress(Exception):
                proc.stop(grace)

    def stop(self) -> None:
        """Stop every node and release the runner; idempotent, never raises."""
        self._stopping.set()
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stop_nodes(STOP_GRACE)
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=STOP_GRACE + 10)
        with contextlib.suppress(Exception):
            self.runner.close()


def _address(host: str) -> str:
    """The address part of an ssh destination (``user@host`` -> ``host``)."""
    return host.rsplit("@", 1)[-1]
