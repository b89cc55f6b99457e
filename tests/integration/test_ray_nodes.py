"""The ray node runner on a two-node Ray cluster started on this machine (tests/helpers/ray_cluster.py), with
the fake vLLM as each node's command: vLLM's CPU build refuses Ray, and what is tested here is the placement,
the logs and the teardown, not vLLM.

Every test checks with psutil that no process of a node is left: the node's own, its children (the fake
follower starts one, as vLLM starts workers), and the node's watchdog.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from pytest_glm.exceptions import DeploymentError
from pytest_glm.serving.nodes import NodeLaunch
from pytest_glm.serving.ray_nodes import CONNECT_TIMEOUT
from tests.conftest import FAKE_VLLM
from tests.helpers.ray_cluster import LocalRayCluster

pytestmark = pytest.mark.slow

BUNDLE = {"glm_node": 1.0}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    """Two Ray nodes on this machine, and this process connected to them once: the runners made in this process
    reuse the connection (a connection costs about 2 s: the address probe, then ``ray.init``). Connecting,
    disconnecting and the signal handlers are tested where they are the runner's own: in the driver processes
    of ``test_the_driver_ended_leaves_no_node_process``."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray): the ray node runner is not tested")
    import ray

    from pytest_glm.serving.ray_nodes import connect

    cluster = LocalRayCluster(tmp_path_factory.mktemp("ray"), nodes=2)
    if not cluster.ray.exists():
        pytest.skip(f"Ray's command line is not beside this Python ({cluster.ray}): no cluster to test against")
    cluster.start()
    try:
        connect(cluster.address)
        yield cluster
    finally:
        ray.shutdown()
        left = cluster.stop(grace=1.0)
        assert not left, f"processes of the test's Ray cluster survived its stop: {left}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launches(tmp_path: Path, hosts: list[str], port: int, env: dict[str, str] | None = None) -> list[NodeLaunch]:
    """The fake vLLM as a two-node deployment: rank 0 serves HTTP on ``port``, rank 1 is a headless follower."""
    common = ["serve", "fake-model", "--nnodes", "2", "--master-addr", hosts[0]]
    argvs = [[str(FAKE_VLLM), *common, "--node-rank", "0", "--port", str(port)],
             [str(FAKE_VLLM), *common, "--node-rank", "1", "--headless"]]
    return [NodeLaunch(rank=rank, host=hosts[rank], argv=tuple(argv), env={"FAKE_VLLM_MODE": "serve", **(env or {})},
                       log_path=tmp_path / f"vllm-node{rank}.log") for rank, argv in enumerate(argvs)]


def worker_pid(log: Path) -> int:
    """The pid of the fake follower's worker child, from the follower's log (its own line, shipped back)."""
    found = re.search(r"FAKE_WORKER pid=(\d+)", log.read_text())
    assert found, f"no worker line in {log}"
    return int(found.group(1))


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def wait_for(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def alive(pids: set[int]) -> list[int]:
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.NoSuchProcess:
            continue
    return left


def test_ranks_land_on_both_nodes_and_their_logs_come_back(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    from pytest_glm.serving.ray_nodes import RayRunner

    runner = RayRunner(ray_cluster.address, bundle=BUNDLE)
    try:
        hosts = runner.hosts(2)
        import ray

        assert sorted(hosts) == sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        port = free_port()
        head_launch, follower_launch = launches(tmp_path, hosts, port)
        follower = runner.start(follower_launch)
        head = runner.start(head_launch)
        assert (head.node_ip, follower.node_ip) == (hosts[0], hosts[1])
        for node in (head, follower):
            wait_for(lambda n=node: f"FAKE_NODE rank={n.launch.rank} pid={n.pid}" in n.launch.log_path.read_text(),
                     10, f"{node.launch.name}'s log line shipped to {node.launch.log_path}")
        wait_for(lambda: "FAKE_WORKER" in follower_launch.log_path.read_text(), 10, "the follower's worker")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            assert resp.status == 200
        assert head.running() and follower.running() and head.exit_code() is None
        started = {head.pid, follower.pid, worker_pid(follower_launch.log_path), head.reaper_pid, follower.reaper_pid}
        assert sorted(alive(started)) == sorted(started) and 0 not in started
        assert worker_pid(follower_launch.log_path) in {p.pid for p in tree(follower.pid)}
        follower.stop(5)
        head.stop(5)
        assert not head.running() and not follower.running()
        wait_for(lambda: not alive(started), 5, f"every node process ended: {alive(started)} left")
        assert head.exit_code() is not None and follower.exit_code() is not None
        head.stop(5)  # a second stop does nothing, and does not raise
    finally:
        runner.close()
    # Closed, the bundles are free again: a new placement of both nodes succeeds at once.
    again = RayRunner(ray_cluster.address, bundle=BUNDLE, placement_timeout=10)
    try:
        assert sorted(again.hosts(2)) == sorted(hosts)
    finally:
        again.close()


def test_a_node_killed_mid_run_is_reported_with_its_exit_code(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    """The follower fails by itself (exit code 1, its traceback in its log by the time it is seen dead), and the
    head is killed (SIGKILL: -9); close() still ends the follower's orphaned worker."""
    from pytest_glm.serving.ray_nodes import RayRunner

    runner = RayRunner(ray_cluster.address)  # the default bundle: one CPU per node
    try:
        hosts = runner.hosts(2)
        env = {"FAKE_VLLM_DIE_RANK": "1", "FAKE_VLLM_DIE_AFTER": "1.5"}
        head_launch, follower_launch = launches(tmp_path, hosts, free_port(), env)
        follower = runner.start(follower_launch)
        head = runner.start(head_launch)
        wait_for(lambda: "FAKE_WORKER" in follower_launch.log_path.read_text(), 10, "the follower's worker")
        started = {head.pid, follower.pid, worker_pid(follower_launch.log_path), head.reaper_pid, follower.reaper_pid}
        wait_for(lambda: not follower.running(), 10, "the follower's death seen")
        assert follower.exit_code() == 1
        assert "RuntimeError: fake node 1 failure for the test" in follower_launch.log_path.read_text()
        assert head.running()
        os.kill(head.pid, signal.SIGKILL)
        wait_for(lambda: not head.running(), 5, "the head's death seen")
        assert head.exit_code() == -signal.SIGKILL
    finally:
        runner.close()
    wait_for(lambda: not alive(started), 5, f"every node process ended: {alive(started)} left")


def test_the_gate_runs_on_nodes_the_ray_runner_placed(ray_cluster: LocalRayCluster, pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin end to end: ``--glm-node-runner ray`` with RAY_ADDRESS, the fake vLLM as both nodes' command;
    the tests pass against the head, and no node process is left once pytest is done."""
    pytester.copy_example("test_chat.py")
    logs = pytester.path / "logs"
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    result = pytester.runpytest_subprocess(f"--glm-vllm={FAKE_VLLM}", "--glm-profile=cpu-2node",
                                           "--glm-node-runner=ray", "-s", "-p", "no:cacheprovider",
                                           f"--glm-server-log={logs / 'x.log'}", timeout=120)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert "ready on 2 node(s)" in out and "(one generation answered)" in out
    result.stdout.fnmatch_lines(["nodes: 2 (ray runner)*"])
    pids = [int(p) for log in logs.glob("vllm-node*.log")
            for p in re.findall(r"FAKE_(?:NODE rank=\d+|WORKER) pid=(\d+)", log.read_text())]
    assert len(pids) == 3  # head, follower, the follower's worker
    wait_for(lambda: not alive(set(pids)), 10, f"every node process ended: {alive(set(pids))} left")


def test_a_command_missing_on_its_node_is_one_line(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    from pytest_glm.serving.ray_nodes import RayRunner

    runner = RayRunner(ray_cluster.address, bundle=BUNDLE)
    try:
        hosts = runner.hosts(2)
        with pytest.raises(DeploymentError) as info:
            runner.start(NodeLaunch(rank=1, host=hosts[1], argv=("/nonexistent/vllm", "serve", "m"),
                                    log_path=tmp_path / "node1.log"))
    finally:
        runner.close()
    assert info.value.summary == (f"node 1 ({hosts[1]}) could not be started there: No such file or directory: "
                                  "/nonexistent/vllm")


def test_a_cluster_with_too_few_nodes_says_how_many(ray_cluster: LocalRayCluster) -> None:
    from pytest_glm.serving.ray_nodes import RayRunner

    runner = RayRunner(ray_cluster.address, bundle=BUNDLE, placement_timeout=2)
    try:
        with pytest.raises(DeploymentError) as info:
            runner.hosts(3)
    finally:
        runner.close()
    message = str(info.value)
    assert "\n" not in message
    assert "has 2 node(s), 2 with 1 glm_node each; the deployment needs 3" in message


DRIVER = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from pytest_glm.serving.nodes import NodeLaunch
    from pytest_glm.serving.ray_nodes import RayRunner

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)   # as the deployment does while it owns servers
    runner = RayRunner(sys.argv[1])
    try:
        hosts = runner.hosts(2)
        nodes = [runner.start(NodeLaunch(rank=r, host=hosts[r], argv=(sys.argv[2], "serve", "m", "--headless",
                                         "--node-rank", str(r)), log_path=Path(sys.argv[3]) / f"node{r}.log"))
                 for r in (1, 0)]
        while not all("FAKE_WORKER" in n.launch.log_path.read_text() for n in nodes):
            time.sleep(0.1)
        print("PIDS", *[n.pid for n in nodes], *[n.reaper_pid for n in nodes], flush=True)
        time.sleep(600)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)   # our handler, not the sys.exit that ray.init installs
    finally:
        runner.close()
        import ray
        print("CONNECTED", ray.is_initialized(), flush=True)
""")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_driver_ended_leaves_no_node_process(ray_cluster: LocalRayCluster, tmp_path: Path, how: str) -> None:
    """SIGTERM: the driver's teardown stops the nodes. SIGKILL: nothing of ours runs any more; Ray ends the
    actors, and each node's watchdog its process group."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, ray_cluster.address, str(FAKE_VLLM), str(tmp_path)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "FAKE_VLLM_MODE": "serve"})
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line.startswith("PIDS"), f"the driver did not start its nodes: {line!r}"
        listed = [int(p) for p in line.split()[1:]]
        started = {p.pid for pid in listed[:2] for p in tree(pid)} | set(listed[2:])
        assert len(started) == 6  # two nodes, their workers, two watchdogs
        driver.send_signal(getattr(signal, how))
        rest = driver.communicate(timeout=30)[0]
        if how == "SIGTERM":
            assert "INTERRUPTED" in rest and "CONNECTED False" in rest
        wait_for(lambda: not alive(started), 30, f"every node process ended: {alive(started)} left")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


def test_an_address_that_does_not_answer_is_one_line() -> None:
    """A fresh process (as pytest is) given a RAY_ADDRESS where nothing listens, then the probe on a port that
    accepts but is no Ray cluster: one line naming the address, within the timeout, no traceback from Ray."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray): the ray node runner is not tested")
    from pytest_glm.serving.ray_nodes import probe

    closed = f"127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-c", RUNNER_ON_ENV], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RAY_ADDRESS": closed})
    message, took = done.stdout.rsplit("\n", 2)[:2]
    assert message == f"the Ray cluster at {closed} (RAY_ADDRESS) does not answer: Connection refused"
    assert float(took) < CONNECT_TIMEOUT

    with socket.socket() as listener:
        listener.bind(("", 0))
        listener.listen()
        silent = f"127.0.0.1:{listener.getsockname()[1]}"
        began = time.monotonic()
        with pytest.raises(DeploymentError) as info:
            probe(silent, timeout=2)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"the Ray cluster at {silent} (RAY_ADDRESS) does not answer")
    assert time.monotonic() - began < 2 + 5  # the timeout, and the time to end the probe's child


RUNNER_ON_ENV = """
import time
from pytest_glm.exceptions import DeploymentError
from pytest_glm.serving.ray_nodes import RayRunner
began = time.monotonic()
try:
    RayRunner().hosts(2)
except DeploymentError as exc:
    print(exc)
print(time.monotonic() - began)
"""


AGENT_WITHOUT_PYTEST_GLM = """
import sys
sys.modules["pytest_glm"] = None  # any import of pytest-glm fails, as on a Ray node that lacks it
import ray.cloudpickle
agent = ray.cloudpickle.loads(sys.stdin.buffer.read())()
info = agent.start(["sh", "-c", "echo from the node; exit 3"], {}, sys.argv[1])
agent.process.wait()
print(agent.pull(0, 1000), agent.pull(5, 3), agent.stop(1), info["pid"] > 0)
agent.cleanup()
"""


def test_the_node_agent_needs_no_pytest_glm_on_its_node() -> None:
    """What Ray sends to a node (the agent class, by value) runs where pytest-glm cannot be imported."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install ray): the ray node runner is not tested")
    import ray.cloudpickle

    from pytest_glm.serving import ray_nodes

    ray.cloudpickle.register_pickle_by_value(ray_nodes)
    try:
        sent = ray.cloudpickle.dumps(ray_nodes._NodeAgent)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(ray_nodes)
    source = Path(ray_nodes.__file__).with_name("reaper.py").read_text()
    done = subprocess.run([sys.executable, "-c", AGENT_WITHOUT_PYTEST_GLM, source], input=sent, capture_output=True,
                          timeout=60)
    assert done.stdout.decode().strip() == "(b'from the node\\n', 3) (b'the', 3) 3 True", done.stderr.decode()[-2000:]
