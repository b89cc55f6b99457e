"""A Ray cluster of several nodes on this machine, for tests: what a user's cluster is to the ray node runner.

Node 0 is the head (``--node-ip-address 127.0.0.1``, which Ray replaces with this machine's own address),
node K > 0 listens on ``127.0.0.(K+1)``: distinct node IPs, so that a placement group with ``STRICT_SPREAD``
has somewhere to spread. Each node gets one CPU and one ``glm_node`` resource, and a temp dir of its own.

``ray stop`` ends every Ray process of the machine, other clusters' too, so it is not used: each ``ray start``
runs in a session of its own, whose processes (GCS, raylet, agents, workers) are ended by session id.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

#: Ray puts Unix sockets under the temp dir (``session_<date>_<pid>/sockets/plasma_store``) and refuses paths
#: longer than 107 bytes: a temp dir beyond this length is replaced by a shorter one.
MAX_TEMP_DIR = 45

#: Bytes of object store per node: Ray's minimum (nothing large crosses it in these tests).
OBJECT_STORE = 80 * 1024 * 1024

#: Seconds each ``ray start`` may take (about 4 on a loaded 2-core box).
START_TIMEOUT = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


class LocalRayCluster:
    """``nodes`` Ray nodes on this machine. :meth:`start` returns the address to attach to; :meth:`stop` ends
    every process they started; :meth:`leftovers` lists what is still alive of them."""

    def __init__(self, temp_dir: Path, nodes: int = 2) -> None:
        self.nodes = nodes
        self._own_dir = len(str(temp_dir)) > MAX_TEMP_DIR
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-")) if self._own_dir else temp_dir
        self.port = _free_port()
        self.address = ""
        self.sessions: list[int] = []
        self.ray = Path(sys.executable).with_name("ray")

    def node_ip(self, index: int) -> str:
        return "127.0.0.1" if index == 0 else f"127.0.0.{index + 1}"

    def start(self) -> str:
        """Start the head, then the other nodes as soon as its GCS port answers (not once its whole ``ray start``
        is done: that saves about a second a node); return the head's address."""
        atexit.register(self.stop)  # a test process ending early (an error, a broken pipe) still ends the cluster
        try:
            head = self._start_node(0)
            self.address = f"{self._head_ip()}:{self.port}"
            deadline = time.monotonic() + START_TIMEOUT
            while not self._answers(self.port) and head.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            others = [self._start_node(index) for index in range(1, self.nodes)]
            for index, proc in enumerate([head, *others]):
                self._check_started(index, proc)
        except BaseException:
            self.stop()
            raise
        return self.address

    @staticmethod
    def _head_ip() -> str:
        """Where the head listens: Ray replaces 127.0.0.1 with the address this machine reaches others from."""
        import ray._private.services as services

        return str(services.get_node_ip_address())

    @staticmethod
    def _answers(port: int) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _start_node(self, index: int) -> subprocess.Popen[bytes]:
        node_dir = self.temp_dir / f"node{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        args = [str(self.ray), "start", "--node-ip-address", self.node_ip(index), "--num-cpus", "1",
                "--resources", json.dumps({"glm_node": 1}), "--temp-dir", str(node_dir), "--disable-usage-stats",
                "--dashboard-agent-listen-port", str(_free_port()), "--include-log-monitor", "false",
                "--object-store-memory", str(OBJECT_STORE)]
        if index == 0:
            args += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                     "--ray-client-server-port", str(_free_port())]
        else:
            args += ["--address", self.address]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        with open(node_dir / "ray-start.log", "wb") as log:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        self.sessions.append(proc.pid)
        return proc

    def _check_started(self, index: int, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait(timeout=START_TIMEOUT)
        if code != 0:
            text = (self.temp_dir / f"node{index}" / "ray-start.log").read_text(errors="replace")
            raise RuntimeError(f"ray start of node {index} failed (exit code {code}):\n{text[-3000:]}")

    def leftovers(self) -> list[psutil.Process]:
        """Live processes of the cluster: in one of its ``ray start`` sessions, or naming its temp dir."""
        found = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(proc.pid) in self.sessions or str(self.temp_dir) in " ".join(proc.info["cmdline"] or []):
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return [p for p in found if p.pid != os.getpid()]

    def stop(self, grace: float = 3.0) -> list[psutil.Process]:
        """SIGTERM every process of the cluster, SIGKILL what is left after ``grace`` s; what survived."""
        atexit.unregister(self.stop)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for proc in self.leftovers():
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            deadline = time.monotonic() + wait
            while self.leftovers() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.leftovers()
        if self._own_dir and not left:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        return left
