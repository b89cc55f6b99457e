"""The ``ray`` node runner: node K's process started by a Ray actor on the Ray node reserved for rank K.

Ray only *places* the nodes' processes here. vLLM's own multi-node runtime (``--nnodes --node-rank
--master-addr``) connects them, as with the local and ssh runners; ``--distributed-executor-backend ray`` is
another thing, and vLLM's CPU build refuses it.

- The runner attaches to a Ray cluster that already runs (``RAY_ADDRESS``) and never starts one. The address is
  probed first (TCP, then a Ray connection in a child process), because an in-process ``ray.init`` on an
  address that does not answer hangs for minutes or ends the whole process from Ray's C++ core.
- One bundle per node in a placement group, strategy ``STRICT_SPREAD``: no two ranks on one Ray node.
  Bundle K's node IP is rank K's host (rank 0's is the followers' ``--master-addr``).
- One actor per node, in its bundle, holding the bundle's resources (with GPUs, Ray sets
  ``CUDA_VISIBLE_DEVICES`` to them). It starts the node's command in a session of its own, keeps its output
  in a file on that node, hands it back in chunks (a thread here appends them to ``NodeLaunch.log_path``),
  and ends the node's whole process group on ``stop``.
- pytest killed outright: Ray ends the actors of a driver that is gone, but kills only their direct
  children. A watchdog per node (``serving/reaper.py``'s source, run by that node's Python, started outside
  the actor's process tree so that Ray does not kill it with the actor) ends the node's group then.
- The nodes need Ray and vLLM, not pytest-glm: the actor class is sent by value and uses the standard library
  only, and only plain values cross to it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from pytest_glm.cluster import CONNECT_TIMEOUT, _one_line, _ray, cluster_address, connect, probe  # noqa: F401 (probe: re-exported)
from pytest_glm.exceptions import ConfigError, DeploymentError
from pytest_glm.serving.nodes import NodeLaunch

logger = logging.getLogger("pytest_glm")

#: Seconds for the placement group to be reserved. A cluster with too few nodes never reserves it; a busy one
#: may free resources late.
PLACEMENT_TIMEOUT = 60.0

#: Seconds for a node's actor to be placed and its process started (a Ray worker's Python starting on a
#: loaded node).
ACTOR_TIMEOUT = 60.0

#: Seconds for one call to a running actor (a log pull, a stop on top of its grace).
CALL_TIMEOUT = 10.0

#: Seconds between two log pulls of a node; its exit is seen within this too.
PULL_EVERY = 0.5

#: Bytes of log per pull (a node that writes faster is pulled again at once).
CHUNK = 256 * 1024

#: Consecutive failed pulls after which a node's actor counts as lost (its Ray node is gone or stuck).
LOST_AFTER = 3

#: Grace of the nodes :meth:`RayRunner.close` still finds running (the caller normally stopped them).
CLOSE_GRACE = 10.0

#: What each node's bundle reserves unless told otherwise. With GPUs, ask for all of a node's
#: (``{"GPU": 8}``): the actor then holds them, and Ray shows them to the node's process.
DEFAULT_BUNDLE: Mapping[str, float] = {"CPU": 1.0}


# -- on the node ---------------------------------------------------------------------------------------
class _NodeAgent:
    """The actor on a node's Ray node: starts the node's process, keeps its log, reports, stops it.

    Standard library only and plain values in and out: it is sent to the node by value, so the node needs no
    pytest-glm.
    """

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        # A file without a name: nothing is left on the node whichever way the actor and the node end.
        self.log: IO[bytes] | None = None

    def start(self, argv: list[str], env: dict[str, str], reaper_source: str) -> dict[str, Any]:
        import ray

        child_env = {**os.environ, **env}
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in cleanup(), or with the actor
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                            env=child_env, start_new_session=True)
        except OSError as exc:
            return {"error": f"{exc.strerror or exc}: {argv[0]}"}
        # The watchdog outlives this actor: started through a shell that exits at once, it is no child of ours,
        # and Ray kills only an ended actor's children.
        spawn = subprocess.run(
            ["/bin/sh", "-c", '"$0" -c "$1" "$2" "$3" </dev/null >/dev/null 2>&1 & echo $!', sys.executable,
             reaper_source, str(os.getpid()), str(self.process.pid)],
            capture_output=True, text=True, timeout=30, start_new_session=True, check=False)
        return {"ip": ray.util.get_node_ip_address(), "pid": self.process.pid,
                "reaper_pid": int(spawn.stdout.strip() or 0)}

    def where(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    def pull(self, offset: int, limit: int) -> tuple[bytes, int | None]:
        """Log bytes from ``offset`` and the exit code (None while it runs). The exit is read first, so that a
        node found ended has all its output in this read when it is shorter than ``limit``."""
        code = self.process.poll() if self.process is not None else None
        if self.log is None:
            return b"", code
        return os.pread(self.log.fileno(), limit, offset), code

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        """Whether a live process of group ``pgid`` is left (zombies waiting for init to reap them are not)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                return True
        return False

    def stop(self, grace: float) -> int | None:
        """SIGTERM the node's process group, SIGKILL what is left after ``grace`` s; the exit code."""
        if self.process is None:
            return None
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            self.process.poll()  # reap the leader, else it stays in its group as a zombie
            if not self._group_alive(pgid):
                break
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        return self.process.poll()

    def cleanup(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None


# -- here ----------------------------------------------------------------------------------------------
class RayNode:
    """A node whose process a Ray actor runs: its state and log, pulled from the actor by a thread.

    :attr pid: the node's process id on its Ray node.
    :attr node_ip: the IP of the Ray node that runs it.
    """

    def __init__(self, launch: NodeLaunch, actor: Any, info: Mapping[str, Any]) -> None:
        self.launch = launch
        self.pid: int = int(info["pid"])
        self.node_ip: str = str(info["ip"])
        self.reaper_pid: int = int(info.get("reaper_pid") or 0)
        self._actor = actor
        self._offset = 0
        self._failures = 0
        self._exit_code: int | None = None
        self._lost: str | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        launch.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] | None = open(launch.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log.write(f"# pytest-glm {launch.name}, Ray actor, pid {self.pid}: {' '.join(launch.argv)}\n".encode())
        self._log.flush()
        self._puller = threading.Thread(target=self._pull_loop, name=f"glm-ray-log-{launch.rank}", daemon=True)
        self._puller.start()

    def running(self) -> bool:
        return not self._stopped and self._exit_code is None and self._lost is None

    def exit_code(self) -> int | None:
        return self._exit_code

    def _pull_loop(self) -> None:
        while not self._done.is_set() and self._exit_code is None and self._lost is None:
            if not self._pull():
                self._done.wait(PULL_EVERY)

    def _pull(self) -> bool:
        """One chunk of the node's log into the local file; True if there may be more right now. The exit code
        is taken only once the log is complete, so that whoever sees the node dead reads all of its log."""
        ray = _ray()
        with self._lock:
            if self._log is None or self._lost is not None:
                return False
            try:
                data, code = ray.get(self._actor.pull.remote(self._offset, CHUNK), timeout=CALL_TIMEOUT)
            except ray.exceptions.RayActorError as exc:
                self._lose(f"{type(exc).__name__}: {_one_line(str(exc))}")
                return False
            except Exception as exc:  # a timeout or a transient error: try again, within limits
                self._failures += 1
                if self._failures >= LOST_AFTER:
                    self._lose(f"{LOST_AFTER} log pulls failed, the last with {type(exc).__name__}")
                return False
            self._failures = 0
            if data:
                self._log.write(data)
                self._log.flush()
                self._offset += len(data)
            if code is not None and len(data) < CHUNK:
                self._exit_code = int(code)
            return len(data) == CHUNK

    def _lose(self, why: str) -> None:
        """The actor is gone (its Ray node died, or Ray ended it): the node counts as dead, exit code unknown."""
        self._lost = why
        if self._log is not None:
            self._log.write(f"\n# pytest-glm: the Ray actor of {self.launch.name} is gone ({why}); its Ray node "
                            f"may have died\n".encode())
            self._log.flush()

    def stop(self, grace: float) -> None:
        """End the node's process group on its node, take the rest of its log, end the actor. Idempotent; never
        raises."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        ray = _ray()
        if self._lost is None:
            try:
                code = ray.get(self._actor.stop.remote(grace), timeout=grace + CALL_TIMEOUT)
                if self._exit_code is None and code is not None:
                    self._exit_code = int(code)
            except Exception as exc:
                logger.warning("stopping %s through its Ray actor failed (%s: %s)", self.launch.name,
                               type(exc).__name__, _one_line(str(exc)))
        self._done.set()
        self._puller.join(timeout=CALL_TIMEOUT + 1)
        with contextlib.suppress(Exception):
            while self._pull():
                pass
        with contextlib.suppress(Exception):
            ray.get(self._actor.cleanup.remote(), timeout=CALL_TIMEOUT)
        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)
        with self._lock:
            if self._log is not None:
                with contextlib.suppress(OSError):
                    self._log.close()
                self._log = None


class RayRunner:
    """Nodes on a Ray cluster that already runs: one placement-group bundle and one actor per node.

    :param address: the cluster (default ``RAY_ADDRESS``): ``HOST:PORT`` of its head, ``ray://HOST:PORT``, or
        ``auto``.
    :param bundle: the resources reserved on each node (default one CPU; with GPUs, all of a node's:
        ``{"GPU": 8}``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, bundle: Mapping[str, float] | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, placement_timeout: float = PLACEMENT_TIMEOUT,
                 actor_timeout: float = ACTOR_TIMEOUT) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--glm-node-runner", "the ray runner needs Ray, which is not installed here",
                              "pip install 'ray>=2.9' (the cluster's version), and point RAY_ADDRESS at the cluster")
        self.ray_address = cluster_address(address)
        self.bundle = dict(bundle or DEFAULT_BUNDLE)
        self.connect_timeout = connect_timeout
        self.placement_timeout = placement_timeout
        self.actor_timeout = actor_timeout
        self.started: list[RayNode] = []
        self._group: Any = None
        self._hosts: list[str] = []
        self._actors: list[Any] = []
        self._agent: Any = None
        self._connected_here = False

    def _connect(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            self._connected_here = connect(self.ray_address, self.connect_timeout)
        return ray

    def hosts(self, nodes: int) -> list[str]:
        """Reserve one bundle per node (``STRICT_SPREAD``) and return each bundle's node IP, rank 0 first."""
        if self._group is not None:
            if len(self._hosts) != nodes:
                raise DeploymentError(f"the Ray placement of this run holds {len(self._hosts)} nodes, not {nodes}")
            return list(self._hosts)
        ray = self._connect()
        from ray.util.placement_group import placement_group, placement_group_table

        self._group = placement_group([dict(self.bundle) for _ in range(nodes)], strategy="STRICT_SPREAD",
                                      name=f"pytest-glm-{os.getpid()}")
        if not self._group.wait(self.placement_timeout):
            alive = [n for n in ray.nodes() if n.get("Alive")]
            fitting = [n for n in alive
                       if all(n.get("Resources", {}).get(k, 0) >= v for k, v in self.bundle.items())]
            self._release_group()
            busy = " (enough in all, but not free now)" if len(fitting) >= nodes else ""
            raise DeploymentError(
                f"the Ray cluster at {self.ray_address} has {len(alive)} node(s), {len(fitting)} with "
                f"{_resources(self.bundle)} each{busy}; the deployment needs {nodes}, one per node (STRICT_SPREAD, "
                f"waited {self.placement_timeout:.0f} s)")
        by_id = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        placed = placement_group_table(self._group)["bundles_to_node_id"]
        self._hosts = [by_id[placed[index]] for index in range(nodes)]
        self._place_agents(nodes)
        return list(self._hosts)

    def _place_agents(self, nodes: int) -> None:
        """One actor per bundle, all placed at once (a Ray worker starting takes about a second), and each
        asked where it runs: a node that cannot run one fails here, before any node's command starts."""
        ray = _ray()
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = {k: v for k, v in self.bundle.items() if k not in ("CPU", "GPU", "memory")}
        self._actors = [self._agent_class().options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(self._group, placement_group_bundle_index=rank),
            num_cpus=self.bundle.get("CPU", 0), num_gpus=self.bundle.get("GPU", 0), resources=resources,
        ).remote() for rank in range(nodes)]
        pending = {actor.where.remote(): rank for rank, actor in enumerate(self._actors)}
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=self.actor_timeout)
        for ref in pending:
            rank = pending[ref]
            if ref not in ready:
                raise DeploymentError(f"node {rank} ({self._hosts[rank]}): its Ray actor was not running within "
                                      f"{self.actor_timeout:.0f} s", "the Ray node may be unable to start a worker: "
                                      "see its raylet.out and worker logs under the node's Ray temp dir")
            try:
                ray.get(ref, timeout=CALL_TIMEOUT)
            except ray.exceptions.RayError as exc:
                raise DeploymentError(f"node {rank} ({self._hosts[rank]}): its Ray actor failed: "
                                      f"{_one_line(str(exc))}") from exc

    def _agent_class(self) -> Any:
        if self._agent is None:
            ray = _ray()
            # By value, so that the nodes need no pytest-glm (everything the agent uses is standard library).
            ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
            self._agent = ray.remote(max_restarts=0)(_NodeAgent)
        return self._agent

    def start(self, launch: NodeLaunch) -> RayNode:
        """Start node ``launch.rank``'s command through the actor in its bundle (placed by :meth:`hosts`)."""
        if self._group is None or launch.rank >= len(self._actors):
            raise DeploymentError(f"{launch.name}: no Ray bundle reserved for rank {launch.rank} "
                                  "(hosts() reserves them, before any start)")
        ray = _ray()
        if any(node.launch.rank == launch.rank for node in self.started):
            raise DeploymentError(f"{launch.name}: rank {launch.rank} was started already")
        actor = self._actors[launch.rank]
        try:
            info = ray.get(actor.start.remote(list(launch.argv), dict(launch.env), _reaper_source()),
                           timeout=self.actor_timeout)
        except ray.exceptions.GetTimeoutError:
            raise DeploymentError(f"{launch.name}: its Ray actor did not start the command within "
                                  f"{self.actor_timeout:.0f} s") from None
        except ray.exceptions.RayError as exc:
            raise DeploymentError(f"{launch.name}: its Ray actor failed: {_one_line(str(exc))}") from exc
        if "error" in info:
            raise DeploymentError(f"{launch.name} could not be started there: {info['error']}",
                                  "the command must exist on every node (the same vLLM path, or `vllm` on its PATH)")
        if info["ip"] != launch.host:
            logger.warning("%s runs on %s, not where its launch said", launch.name, info["ip"])
        node = RayNode(launch, actor, info)
        self.started.append(node)
        return node

    def _release_group(self) -> None:
        if self._group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self._group)
            self._group = None
            self._hosts = []

    def close(self) -> None:
        """Stop every node still running, end the actors, free the placement group, disconnect (if this runner
        connected). Never raises."""
        for node in self.started:
            with contextlib.suppress(Exception):
                node.stop(CLOSE_GRACE)
        if importlib.util.find_spec("ray") is None or not _ray().is_initialized():
            return
        ray = _ray()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self._actors = []
        with contextlib.suppress(Exception):
            self._release_group()
        if self._connected_here:
            with contextlib.suppress(Exception):
                ray.shutdown()
            self._connected_here = False


def _resources(bundle: Mapping[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in bundle.items())


def _reaper_source() -> str:
    """The watchdog's source, run on the node by ``python -c``: the node needs no pytest-glm."""
    return importlib.resources.files("pytest_glm.serving").joinpath("reaper.py").read_text(encoding="utf-8")
